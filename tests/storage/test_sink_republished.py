"""Republished voip-flows messages (a worker processed the same input again) are stored
once, across sink kills and restarts.

``voipflow sink`` subprocesses on the session's broker, each on the test's own
chdb directory. Messages carry source positions as the worker writes them;
after a first run (killed right after an insert, then restarted) the test
publishes what a surviving worker would: the last inputs' messages again, same
positions and values at new offsets, then new ones. A sink killed again in the
middle and restarted must end with every row once, and count the rows it left
out on its metrics endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.paths import REPO
from tests.storage.sinkdata import committed, flow_batch
from voipflow.endpoints import endpoint_url
from voipflow.schemas import voipflows

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROWS = 50  # rows per message
SOURCES = (0, 1)  # flows.v1 partitions the inputs came from
SOURCE_TOPIC = "flows.v1"


def _env(data_dir: Path, bootstrap: str, topic: str, group: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        VOIPFLOW_DATA_DIR=str(data_dir),
        VOIPFLOW_KAFKA_BOOTSTRAP=bootstrap,
        VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC=topic,
        VOIPFLOW_SINK_TOPICS=topic,
        VOIPFLOW_SINK_GROUP_ID=group,
        VOIPFLOW_SINK_BATCH_ROWS="500",
        VOIPFLOW_SINK_BATCH_DELAY_S="2",
        VOIPFLOW_METRICS_LISTEN="",
        VOIPFLOW_SINK_SESSION_TIMEOUT_S="6",
    )
    return env


def _voipflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voipflow", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


class Worker:
    """Publishes voip-flows messages as a worker does: per input (source partition,
    offset), one message per city, ordinals 0, 1, ...; a message's value depends
    only on its position, so a republished copy is the same bytes."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.values: dict[tuple[int, int, int], bytes] = {}
        #: (voip-flows partition, offset, source position or None, rows) of every message.
        self.sent: list[tuple[int, int, tuple[int, int, int] | None, int]] = []

    def publish(self, offsets: range) -> None:
        for offset in offsets:
            for partition in SOURCES:
                # Odd inputs have two cities, both on one voip-flows partition
                # when the input came from partition 0.
                for ordinal in range(1 + offset % 2):
                    pos = (partition, offset, ordinal)
                    if pos not in self.values:
                        self.values[pos] = flow_batch(ROWS, base=len(self.values) * ROWS)
                    q = (offset + (ordinal if partition else 0)) % 2
                    headers = {
                        "schema": voipflows.SCHEMA_NAME.encode(),
                        **voipflows.position_headers(SOURCE_TOPIC, partition, offset, ordinal),
                    }
                    self.send(q, self.values[pos], list(headers.items()), pos)

    def send(
        self,
        q: int,
        value: bytes,
        headers: list[tuple[str, bytes]],
        pos: tuple[int, int, int] | None,
    ) -> None:
        md = self.producer.send(self.topic, value=value, partition=q, headers=headers).get(30)
        self.sent.append((q, md.offset, pos, ROWS))

    def close(self) -> None:
        self.producer.close(timeout=10)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _run_until_committed(
    env: dict[str, str], data_dir: Path, topic: str, ends: dict[int, int], log: Path
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Run the sink with a metrics endpoint until every partition's lag is 0; its metrics."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voipflow", "sink"],
            cwd=REPO,
            env={**env, "VOIPFLOW_METRICS_LISTEN": "127.0.0.1:0"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            url = endpoint_url(data_dir, "sink", proc.pid)
            if url:
                metrics = _scrape(url)
                lags = [
                    metrics.get(("voipflow_sink_lag", (("partition", str(q)), ("topic", topic))))
                    for q in ends
                ]
                if lags == [0.0] * len(ends):
                    return metrics
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_republished_messages_are_stored_once_across_sink_kills(
    kafka_bootstrap, kafka_topic_factory, tmp_path
) -> None:
    topic = kafka_topic_factory(2, prefix="voip-flows")
    group = "sink-" + os.urandom(4).hex()
    env = _env(tmp_path, kafka_bootstrap, topic, group)
    kill = {**env, "VOIPFLOW_SINK_FAULT_KILL_AFTER_INSERTS": "1"}
    idle = {**env, "VOIPFLOW_SINK_EXIT_WHEN_IDLE_S": "4"}
    assert _voipflow(env, "db", "migrate").returncode == 0
    worker = Worker(kafka_bootstrap, topic)
    try:
        # First run: inputs 0..11 of both sources; the sink dies after its
        # first insert and a second one finishes.
        worker.publish(range(12))
        assert _voipflow(kill, "sink").returncode == -9
        again = _voipflow(idle, "sink")
        assert again.returncode == 0, again.stderr[-3000:]
        # A worker takes over the sources at input 8: inputs 8..11 again (same
        # positions, new offsets), then new inputs; and a message of another
        # producer, without positions.
        republished_from = len(worker.sent)
        worker.publish(range(8, 12))
        republished = worker.sent[republished_from:]
        worker.publish(range(12, 20))
        worker.send(0, flow_batch(ROWS, base=10**7), [], None)
        # A position that cannot be read: a bad message, not stored.
        bad = [("src", b"flows.v1:x"), ("src_pos", b"1:0")]
        worker.send(1, flow_batch(ROWS, base=2 * 10**7), bad, None)
        bad_offset = worker.sent[-1][1]
    finally:
        worker.close()
    assert republished and all(pos is not None and pos[1] < 12 for _, _, pos, _ in republished)

    # Killed after one insert of the mixed batch, before its commit: the next
    # sink replays that batch from the marks its intent carries.
    assert _voipflow(kill, "sink").returncode == -9
    start = committed(kafka_bootstrap, group, topic)
    pending = [json.loads(om.metadata) for om in start.values() if om and om.metadata]
    assert any("pending" in m and "src" in m for m in pending), start
    ends = {q: 1 + max(off for p, off, _, _ in worker.sent if p == q) for q in (0, 1)}
    metrics = _run_until_committed(env, tmp_path, topic, ends, tmp_path / "sink.log")

    # Every position once, the message without positions too.
    positions = {pos for _, _, pos, _ in worker.sent if pos is not None}
    expected_rows = (len(positions) + 1) * ROWS
    res = _voipflow(
        env, "db", "query", "--format", "tsv", "SELECT count(), uniqExact(bytes) FROM flows_voip"
    )
    assert res.stdout.splitlines()[-1].split("\t") == [str(expected_rows)] * 2, res
    # The last sink dropped the copies at or after the offsets it started from.
    dropped = sum(
        rows for q, off, _, rows in republished if start[q] is None or off >= start[q].offset
    )
    assert dropped > 0
    key = ("voipflow_sink_republished_dropped_total", (("table", "flows_voip"),))
    assert metrics.get(key) == dropped
    assert start[1] is None or start[1].offset <= bad_offset
    bad_key = (
        "voipflow_sink_bad_messages_total",
        (("reason", "source_position"), ("topic", topic)),
    )
    assert metrics.get(bad_key) == 1
    # The marks committed with the last offsets: the highest position per source.
    final = committed(kafka_bootstrap, group, topic)
    for q in (0, 1):
        assert final[q].offset == ends[q]
        highest: dict[str, list[int]] = {}
        for qq, _, pos, _ in worker.sent:
            if pos is not None and qq == q:
                src = f"{SOURCE_TOPIC}:{pos[0]}"
                highest[src] = max(highest.get(src, [-1, -1]), [pos[1], pos[2]])
        assert json.loads(final[q].metadata)["src"] == highest
