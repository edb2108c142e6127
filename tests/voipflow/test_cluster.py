"""A three-node KRaft cluster from the project's jars: replication factor 3,
min.insync.replicas=2, one broker SIGKILLed and restarted while acks=all writes go on;
`voipflow kafka status|stop` see and stop the whole cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from voipflow.broker import fetch_jars
from voipflow.cluster import LocalCluster, read_cluster
from voipflow.topics import ensure_topics

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3


def _voipflow(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env["VOIPFLOW_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "voipflow", "kafka", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _produce(bootstrap: str, topic: str, first: int, n: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", retries=20, request_timeout_ms=60_000
    )
    try:
        futures = [
            producer.send(topic, key=str(i).encode(), value=str(i).encode())
            for i in range(first, first + n)
        ]
        for f in futures:
            f.get(timeout=180)  # acknowledged by at least min.insync.replicas
    finally:
        producer.close(timeout=10)


def _read_all(bootstrap: str, topic: str, expect: int) -> list[int]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5_000,
    )
    got: list[int] = []
    deadline = time.monotonic() + 240
    try:
        while len(got) < expect and time.monotonic() < deadline:
            for m in consumer:
                got.append(int(m.value))
    finally:
        consumer.close()
    return got


def _isr(bootstrap: str, topic: str) -> list[int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (desc,) = admin.describe_topics([topic])
        return sorted(len(p["isr_nodes"]) for p in desc["partitions"])
    finally:
        admin.close()


def test_three_nodes_survive_one_broker_killed_and_restarted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cluster = LocalCluster(fetch_jars(), data_dir / "kafka", 3, heap_mb=384)
    cluster.start()
    try:
        bootstrap = cluster.bootstrap
        assert len(bootstrap.split(",")) == 3
        recorded = read_cluster(data_dir / "kafka")
        assert recorded is not None and recorded.bootstrap == bootstrap

        topic = f"cluster-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, {topic: PARTITIONS}, 3, min_insync_replicas=2)
        _produce(bootstrap, topic, 0, 300)

        cluster.kill(1)  # SIGKILL one broker (and controller)
        status = json.loads(_voipflow(data_dir, "status", "--json").stdout)
        assert [n["up"] for n in status["cluster"]["nodes"]] == [True, False, True], status
        _produce(bootstrap, topic, 300, 300)  # acks=all still met by two replicas
        got = _read_all(bootstrap, topic, 600)
        assert sorted(got) == list(range(600)), f"{len(got)} read, {len(set(got))} distinct"

        cluster.restart(1)
        _produce(bootstrap, topic, 600, 300)
        deadline = time.monotonic() + 300
        while _isr(bootstrap, topic) != [3] * PARTITIONS:
            assert time.monotonic() < deadline, f"ISR never back to 3: {_isr(bootstrap, topic)}"
            time.sleep(1)
        got = _read_all(bootstrap, topic, 900)
        assert sorted(got) == list(range(900)), f"{len(got)} read, {len(set(got))} distinct"

        stopped = _voipflow(data_dir, "stop")
        assert stopped.returncode == 0 and "stopped the local cluster" in stopped.stdout, stopped
        assert read_cluster(data_dir / "kafka") is None
        assert all(b._proc is None or b._proc.poll() is not None for b in cluster.brokers)
    finally:
        cluster.stop()
