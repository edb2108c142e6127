"""The sink killed between insert and commit, and ClickHouse stopped mid-stream.

* chdb (tokens): ``voipflow sink`` is SIGKILLed right after an insert (the
  ``fault_kill_after_inserts`` setting), restarted, and the table holds each
  row once.
* clickhouse-server 18.16 (no tokens; rows carry their Kafka offsets): the
  same kill, and an outage of ``CLICKHOUSE_OUTAGE_S`` seconds (60 by default)
  in the middle of a stream: the sink pauses, retries with backoff, and after
  the restart every row is there exactly once. A column of the wrong type
  stops the sink with one message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO
from tests.storage.sinkdata import committed, flow_batch, produce, wait_until
from voipflow.evaluation.chaos_store import NATIVE_TABLE
from voipflow.schemas.topics import KafkaConfig
from voipflow.storage.clickhouse.native import NativeClickHouse
from voipflow.storage.config import ClickHouseConfig, SinkConfig
from voipflow.storage.sink import Sink

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE_S = float(os.environ.get("CLICKHOUSE_OUTAGE_S", "60"))


def _env(data_dir: Path, bootstrap: str, topic: str, group: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        VOIPFLOW_DATA_DIR=str(data_dir),
        VOIPFLOW_KAFKA_BOOTSTRAP=bootstrap,
        VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC=topic,
        VOIPFLOW_SINK_TOPICS=topic,
        VOIPFLOW_SINK_GROUP_ID=group,
        VOIPFLOW_SINK_BATCH_ROWS="500",
        VOIPFLOW_SINK_BATCH_DELAY_S="0.5",
        VOIPFLOW_METRICS_LISTEN="",
        # The killed sink's partition goes to the next one after this.
        VOIPFLOW_SINK_SESSION_TIMEOUT_S="6",
    )
    env.update(extra)
    return env


def _voipflow(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voipflow", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_killed_between_insert_and_commit_chdb(
    kafka_bootstrap, kafka_topic_factory, tmp_path
) -> None:
    topic = kafka_topic_factory(1, prefix="voip-flows")
    group = "sink-" + os.urandom(4).hex()
    env = _env(tmp_path, kafka_bootstrap, topic, group)
    assert _voipflow(env, "db", "migrate").returncode == 0
    produce(kafka_bootstrap, topic, [flow_batch(200, base=k * 200) for k in range(10)])

    killed = _voipflow({**env, "VOIPFLOW_SINK_FAULT_KILL_AFTER_INSERTS": "1"}, "sink")
    assert killed.returncode == -9, killed.stderr
    after_kill = _voipflow(env, "db", "query", "SELECT count() FROM flows_voip")
    # The first batch (offsets 0-2, 600 rows) is in ClickHouse: a replay
    # without deduplication would count it twice.
    assert after_kill.stdout.split()[-1] == "600", after_kill
    offs = committed(kafka_bootstrap, group, topic)
    assert offs[0].offset == 0 and offs[0].metadata == '{"pending": [0, 2]}'

    again = _voipflow({**env, "VOIPFLOW_SINK_EXIT_WHEN_IDLE_S": "4"}, "sink")
    assert again.returncode == 0, again.stderr
    assert "replaying a batch" in again.stderr
    res = _voipflow(
        env, "db", "query", "--format", "tsv", "SELECT count(), uniqExact(bytes) FROM flows_voip"
    )
    assert res.stdout.splitlines()[-1].split("\t") == ["2000", "2000"]
    assert committed(kafka_bootstrap, group, topic)[0].offset == 10


def test_killed_between_insert_and_commit_server(
    kafka_bootstrap, kafka_topic_factory, clickhouse_server, server_database, tmp_path
) -> None:
    ch = NativeClickHouse(clickhouse_server.url_for(server_database))
    ch.execute(NATIVE_TABLE.format(db=server_database))
    topic = kafka_topic_factory(1, prefix="voip-flows")
    group = "sink-" + os.urandom(4).hex()
    env = _env(
        tmp_path,
        kafka_bootstrap,
        topic,
        group,
        VOIPFLOW_CLICKHOUSE_URL=clickhouse_server.url_for(server_database),
        VOIPFLOW_SINK_FLOWS_TABLE="flows_simple",
    )
    produce(kafka_bootstrap, topic, [flow_batch(200, base=k * 200) for k in range(10)])
    killed = _voipflow({**env, "VOIPFLOW_SINK_FAULT_KILL_AFTER_INSERTS": "1"}, "sink")
    assert killed.returncode == -9, killed.stderr
    assert ch.query("SELECT count() FROM flows_simple").scalar() == 600
    again = _voipflow({**env, "VOIPFLOW_SINK_EXIT_WHEN_IDLE_S": "4"}, "sink")
    assert again.returncode == 0, again.stderr
    assert "already in ClickHouse left out" in again.stderr
    row = ch.query(
        "SELECT count(), uniqExact(bytes), uniqExact(kafka_offset) FROM flows_simple"
    ).rows[0]
    assert row == (2000, 2000, 10)
    ch.close()


def _server_sink(
    clickhouse_server, database: str, bootstrap: str, topic: str, **cfg: object
) -> Sink:
    config = SinkConfig(
        group_id="sink-" + os.urandom(4).hex(),
        batch_rows=1000,
        batch_delay_s=0.5,
        retry_initial_s=0.5,
        retry_max_s=4.0,
        flows_table="flows_simple",
        topics=topic,
        **cfg,  # type: ignore[arg-type]
    )
    return Sink(
        config,
        KafkaConfig(voip_flows_topic=topic),
        ClickHouseConfig(url=clickhouse_server.url_for(database), connect_timeout_s=1),
        "unused",
        bootstrap=bootstrap,
    )


def test_server_outage_mid_stream(
    kafka_bootstrap, kafka_topic_factory, clickhouse_server, server_database
) -> None:
    ch = NativeClickHouse(clickhouse_server.url_for(server_database))
    ch.execute(NATIVE_TABLE.format(db=server_database))
    ch.close()
    topic = kafka_topic_factory(2)
    rows_per_batch, batches = 250, 60
    stop_producing = threading.Event()
    produced = [0]

    def producer() -> None:
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        try:
            for k in range(batches):
                if stop_producing.is_set():
                    break
                p.send(topic, flow_batch(rows_per_batch, base=k * rows_per_batch), key=b"%d" % k)
                p.flush(timeout=30)
                produced[0] += 1
                time.sleep(max(0.2, OUTAGE_S / 40))
        finally:
            p.close(timeout=10)

    def count() -> int:
        c = NativeClickHouse(clickhouse_server.url_for(server_database), connect_timeout_s=1)
        try:
            return int(c.query("SELECT count() FROM flows_simple").scalar())
        finally:
            c.close()

    sink = _server_sink(clickhouse_server, server_database, kafka_bootstrap, topic)
    sink.start()
    feeder = threading.Thread(target=producer, daemon=True)
    feeder.start()
    try:
        wait_until(lambda: count() >= 2000, 60, "rows before the outage")
        before = count()
        clickhouse_server.stop()
        outage_started = time.monotonic()
        wait_until(lambda: sink.transient_errors >= 2, 60, "the sink to meet the outage")
        assert sink._consumer.paused(), "consumption is not paused during the outage"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
        during = produced[0]
        clickhouse_server.start()
        feeder.join(timeout=OUTAGE_S * 2 + 60)
        assert not feeder.is_alive()
        total = produced[0] * rows_per_batch
        assert produced[0] == batches and during * rows_per_batch > before
        wait_until(lambda: count() >= total, 120, "all rows after the outage")
        wait_until(
            lambda: (
                sum(
                    o.offset
                    for o in committed(kafka_bootstrap, sink.config.group_id, topic).values()
                )
                == batches
            ),
            60,
            "offsets committed",
        )
    finally:
        stop_producing.set()
        sink.stop()
    assert sink.failure is None
    ch = NativeClickHouse(clickhouse_server.url_for(server_database))
    row = ch.query(
        "SELECT count(), uniqExact(bytes), uniqExact(kafka_partition, kafka_offset) "
        "FROM flows_simple"
    ).rows[0]
    ch.close()
    assert row == (total, total, batches)
    assert sink.transient_errors >= 2


def test_server_schema_mismatch_stops(
    kafka_bootstrap, kafka_topic_factory, clickhouse_server, server_database
) -> None:
    ch = NativeClickHouse(clickhouse_server.url_for(server_database))
    ch.execute(NATIVE_TABLE.format(db=server_database).replace("city String", "city UInt32"))
    topic = kafka_topic_factory(1)
    produce(kafka_bootstrap, topic, [flow_batch(10, base=0)])
    sink = _server_sink(clickhouse_server, server_database, kafka_bootstrap, topic)
    sink.start()
    try:
        assert sink.wait(60), "the sink kept retrying a permanent error"
    finally:
        sink.stop()
    assert sink.failure is not None
    assert f"{server_database}.flows_simple" in str(sink.failure)
    assert sink.transient_errors == 0
    assert ch.query("SELECT count() FROM flows_simple").scalar() == 0
    ch.close()


def test_server_without_offset_columns_is_refused(
    kafka_bootstrap, kafka_topic_factory, clickhouse_server, server_database
) -> None:
    from voipflow.storage.sink import SinkStopped

    ch = NativeClickHouse(clickhouse_server.url_for(server_database))
    ch.execute(
        f"CREATE TABLE {server_database}.flows_simple (d Date, bytes UInt64) "
        "ENGINE = MergeTree(d, bytes, 8192)"
    )
    ch.close()
    topic = kafka_topic_factory(1)
    sink = _server_sink(clickhouse_server, server_database, kafka_bootstrap, topic)
    with pytest.raises(SinkStopped, match="kafka_offset"):
        sink.start()
    sink.stop()
