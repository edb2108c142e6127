"""The local Kafka broker, topic administration, and the three clients against it.

Everything here talks to a real Apache Kafka 4.x broker started from jars
(the session's ``kafka_bootstrap``, or one started through the command line).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from tests.fixtures.kafka import TopicFactory
from tests.fixtures.paths import REPO
from voipflow.broker import (
    BrokerNotRunning,
    BrokerStartError,
    LocalBroker,
    LocalBrokerConfig,
    fetch_jars,
    jars_ready,
    read_state,
    resolve_bootstrap,
    running_state,
)
from voipflow.schemas.topics import KafkaConfig
from voipflow.topics import (
    BrokerUnreachable,
    TopicError,
    ensure_topics,
    raise_message_limits,
    wait_for_broker,
)

pytestmark = pytest.mark.kafka


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _consume(bootstrap: str, topic: str, n: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        out = []
        for msg in consumer:
            out.append(msg)
            if len(out) >= n:
                break
        return out
    finally:
        consumer.close()


# --------------------------------------------------------------------- clients


def test_kafka_python_produces_and_consumes(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory
) -> None:
    topic = kafka_topic_factory(partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", compression_type="lz4")
    sent = [(f"exporter-{i % 2}".encode(), f"batch-{i}".encode()) for i in range(6)]
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=30)
    producer.close()

    got = _consume(kafka_bootstrap, topic, len(sent))
    assert sorted((m.key, m.value) for m in got) == sorted(sent)
    # Same key, same partition: an exporter's batches stay in order.
    by_key: dict[bytes, set[int]] = {}
    for m in got:
        by_key.setdefault(m.key, set()).add(m.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


def test_aiokafka_produces_and_consumes(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory
) -> None:
    topic = kafka_topic_factory()
    values = [f"window-{i}".encode() for i in range(5)]

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for v in values:
                await producer.send_and_wait(topic, v, key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"g-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            while len(got) < len(values):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                got += [m.value for msgs in batch.values() for m in msgs if m.value is not None]
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == values


def test_faust_table_with_changelog_on_kafka_4(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, tmp_path: Path
) -> None:
    """Faust creates its internal (changelog, assignor) topics on Kafka 4.x and counts."""
    import faust

    source = kafka_topic_factory(prefix="faust-in")
    app_id = f"vf-faust-{uuid.uuid4().hex[:6]}"
    words = ["sip", "teams", "sip", "zoom", "sip", "teams"]

    async def run_app() -> dict[str, int]:
        app = faust.App(
            app_id,
            broker=f"kafka://{kafka_bootstrap}",
            store="memory://",
            datadir=str(tmp_path / "faust"),
            web_enabled=False,
            topic_partitions=1,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
        )
        topic = app.topic(source, key_type=str, value_type=str)
        counts = app.Table("counts", default=int, partitions=1)
        done = asyncio.Event()
        processed = [0]

        @app.agent(topic)
        async def count(stream: Any) -> None:
            async for word in stream:
                counts[word] += 1
                processed[0] += 1
                if processed[0] == len(words):
                    done.set()

        await app.start()
        try:
            for w in words:
                await topic.send(key=w, value=w)
            await asyncio.wait_for(done.wait(), 60)
            return {k: int(v) for k, v in counts.items()}
        finally:
            await app.stop()

    assert asyncio.run(run_app()) == {"sip": 3, "teams": 2, "zoom": 1}

    changelog = f"{app_id}-counts-changelog"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert changelog in admin.list_topics()
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog)])
    finally:
        admin.close()
    assert described["topic"][changelog]["cleanup.policy"]["value"] == "compact"
    # The table's last state per key is in the changelog, as Faust's JSON.
    latest = {
        json.loads(m.key): json.loads(m.value)
        for m in _consume(kafka_bootstrap, changelog, len(words))
    }
    assert latest == {"sip": 3, "teams": 2, "zoom": 1}


# ---------------------------------------------------------------------- topics


def test_ensure_topics_is_idempotent_and_applies_configs(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"ensure-{uuid.uuid4().hex[:8]}"
    configs = {name: {"cleanup.policy": "compact", "retention.ms": "3600000"}}
    assert ensure_topics(kafka_bootstrap, {name: 3}, 1, configs) == {name: 3}
    assert ensure_topics(kafka_bootstrap, {name: 3}, 1, configs) == {name: 3}

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        admin.close()
    applied = {k: v["value"] for k, v in described["topic"][name].items()}
    assert applied == configs[name]

    # Asking for more partitions than exist: left alone, with a warning. (An
    # earlier test of the session may have set voipflow's loggers to INFO, so
    # the records of the calls above are cleared and only warnings are read.)
    caplog.clear()
    with caplog.at_level("WARNING", logger="voipflow.topics"):
        assert ensure_topics(kafka_bootstrap, {name: 8}) == {name: 3}
    warned = [
        r for r in caplog.records if r.name == "voipflow.topics" and r.levelno >= logging.WARNING
    ]
    assert warned and getattr(warned[0], "wanted", None) == 8


def test_raise_message_limits_raises_only_what_is_below(kafka_bootstrap: str) -> None:
    """Topics made before the worker set its limit get it; a higher limit and a
    missing topic are left alone; a second call changes nothing."""
    tag = uuid.uuid4().hex[:8]
    plain, high, low, missing = (f"limit-{n}-{tag}" for n in ("plain", "high", "low", "missing"))
    configs = {high: {"max.message.bytes": str(64 << 20)}, low: {"max.message.bytes": "2000000"}}
    ensure_topics(kafka_bootstrap, {plain: 1, high: 1, low: 1}, 1, configs)
    want = dict.fromkeys((plain, high, low, missing), 32 << 20)

    assert sorted(raise_message_limits(kafka_bootstrap, want)) == sorted([plain, low])
    assert raise_message_limits(kafka_bootstrap, want) == []

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in (plain, high, low)]
        )["topic"]
        assert missing not in admin.list_topics()
    finally:
        admin.close()
    limits = {n: int(described[n]["max.message.bytes"]["value"]) for n in (plain, high, low)}
    assert limits == {plain: 32 << 20, high: 64 << 20, low: 32 << 20}


def test_ensure_topics_refuses_impossible_replication(kafka_bootstrap: str) -> None:
    name = f"rf-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TopicError, match="VOIPFLOW_KAFKA_REPLICATION_FACTOR=3"):
        ensure_topics(kafka_bootstrap, {name: 1}, replication_factor=3)


def test_wait_for_broker_accepts_the_running_broker(kafka_bootstrap: str) -> None:
    wait_for_broker(kafka_bootstrap, 10.0)


@pytest.mark.timeout(60)
def test_unreachable_bootstrap_fails_with_the_variable_named() -> None:
    port = _closed_port()
    with pytest.raises(BrokerUnreachable) as info:
        wait_for_broker(f"127.0.0.1:{port}", 2.0)
    message = str(info.value)
    assert message.startswith(f"VOIPFLOW_KAFKA_BOOTSTRAP=127.0.0.1:{port}:")
    assert "refused" in message and "\n" not in message

    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env["VOIPFLOW_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
    proc = subprocess.run(
        [sys.executable, "-m", "voipflow", "kafka", "status", "--timeout", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 1
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1, proc.stderr
    assert f"VOIPFLOW_KAFKA_BOOTSTRAP=127.0.0.1:{port}" in errors[0]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("command", ["sink", "worker"])
def test_a_process_started_without_a_broker_says_which_setting(
    command: str, tmp_path: Path
) -> None:
    """Exit status 2 and one line naming the variable, after the time a broker may take."""
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env["VOIPFLOW_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
    env["VOIPFLOW_KAFKA_CONNECT_TIMEOUT_S"] = "4"
    env["VOIPFLOW_DATA_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "voipflow", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"voipflow {command}: VOIPFLOW_KAFKA_BOOTSTRAP=127.0.0.1:{port}:")
    assert "refused" in errors[0]
    assert "within 4 s" in errors[0]


# -------------------------------------------------------------- local broker


def test_resolve_bootstrap_prefers_the_setting(tmp_path: Path) -> None:
    assert (
        resolve_bootstrap(KafkaConfig(bootstrap="k1:9092,k2:9092"), tmp_path) == "k1:9092,k2:9092"
    )
    with pytest.raises(BrokerNotRunning, match=r"VOIPFLOW_KAFKA_BOOTSTRAP.*voipflow kafka start"):
        resolve_bootstrap(KafkaConfig(), tmp_path)


def test_start_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        broker = LocalBroker(
            LocalBrokerConfig(
                jar_dir=fetch_jars(), state_dir=tmp_path, port=port, controller_port=0
            )
        )
        with pytest.raises(BrokerStartError, match=f"127.0.0.1:{port} is already in use.*--port"):
            broker.start()
    assert read_state(tmp_path) is None


def test_start_without_jars_says_to_fetch(tmp_path: Path) -> None:
    assert not jars_ready(tmp_path)
    broker = LocalBroker(LocalBrokerConfig(jar_dir=tmp_path, state_dir=tmp_path / "s"))
    with pytest.raises(BrokerStartError, match="voipflow kafka fetch"):
        broker.start()


def test_start_gives_up_after_its_budget_with_the_log_tail(tmp_path: Path) -> None:
    broker = LocalBroker(
        LocalBrokerConfig(
            jar_dir=fetch_jars(),
            state_dir=tmp_path,
            port=0,
            controller_port=0,
            heap_mb=256,
            ready_timeout_s=0.3,
        )
    )
    with pytest.raises(BrokerStartError, match=r"not ready on 127\.0\.0\.1:\d+ within"):
        broker.start()
    # The half-started JVM was stopped and its state file removed.
    assert broker.pid is None
    assert read_state(tmp_path) is None


def _voipflow(
    env: dict[str, str], *args: str, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voipflow", "kafka", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_command_line_start_status_stop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env["VOIPFLOW_DATA_DIR"] = str(tmp_path)
    state_dir = tmp_path / "kafka"

    started = _voipflow(env, "start", "--port", "0", "--controller-port", "0", "--heap-mb", "512")
    try:
        assert started.returncode == 0, started.stderr
        assert "ready at 127.0.0.1:" in started.stdout
        state = running_state(state_dir)
        assert state is not None

        status = _voipflow(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["reachable"] is True
        assert report["bootstrap"] == state.bootstrap == report["local"]["bootstrap"]
        # Other commands find the local broker through the data directory.
        assert resolve_bootstrap(KafkaConfig(), tmp_path) == state.bootstrap

        producer = KafkaProducer(bootstrap_servers=state.bootstrap)
        producer.send("cli-check", b"hello").get(timeout=30)
        producer.close()
        assert [m.value for m in _consume(state.bootstrap, "cli-check", 1)] == [b"hello"]

        again = _voipflow(env, "start", "--port", "0", "--controller-port", "0")
        assert again.returncode == 1
        assert "already runs" in again.stderr
    finally:
        stopped = _voipflow(env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"pid {state.pid}" in stopped.stdout
    assert not _alive(state.pid)
    assert running_state(state_dir) is None

    after = _voipflow(env, "status")
    assert after.returncode == 1
    assert "not running" in after.stdout
    assert "voipflow kafka start" in after.stderr


def test_a_cluster_id_starting_with_a_dash_formats_and_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """About one random id in 64 starts with '-'; the format step must not take it
    for an option."""
    import voipflow.broker as broker_mod

    monkeypatch.setattr(broker_mod, "cluster_id", lambda: "-" + "A" * 21)
    broker = LocalBroker(
        LocalBrokerConfig(jar_dir=fetch_jars(), state_dir=tmp_path, port=0, controller_port=0)
    )
    broker.start()
    try:
        assert broker.bootstrap
        wait_for_broker(broker.bootstrap, 30.0)
    finally:
        broker.stop()


def test_cluster_ids_never_look_like_options() -> None:
    """One random id in 64 starts with '-', which kafka-storage reads as an option."""
    import base64

    from voipflow.broker import cluster_id

    ids = [cluster_id() for _ in range(3000)]
    assert not [c for c in ids if c.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(c + "==")) == 16 for c in ids)
    assert len(set(ids)) == len(ids)
