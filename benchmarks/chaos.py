"""Failures as figures: the worker under steady load on a three-node Kafka cluster while
a broker is SIGKILLed and restarted.

A first, reduced form of the reliability run (issue 12, point 3): it starts
``LocalCluster`` (three KRaft nodes, replication factor 3,
``min.insync.replicas=2``), one ``voipflow worker`` subprocess, and a producer
that sends flows.v1 batches with acks=all at a steady rate (the simulator's
truth is what the broker acknowledged). Part way through, one broker is
SIGKILLed; later it is restarted. When the load ends, one far-future batch
per exporter closes every window; the traffic.v1 windows (first copy per
exporter, window and observation domain, as the sink keeps them) are then
summed and compared with what was sent.

Printed: flows sent, flows counted in traffic.v1, lost, duplicated, peak lag
of the worker's group on flows.v1, and the recovery time (from the kill until
the group's lag is back to zero). The sink, ClickHouse and the other faults of
the issue are not part of this form yet.

Usage: ``python -m benchmarks.chaos [--seconds 60] [--rate 20] [--flows 200]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from voipflow.broker import fetch_jars
from voipflow.cluster import LocalCluster
from voipflow.schemas import flowbatch as fb
from voipflow.topics import ensure_topics

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "data" / "cities" / "demo-cities.csv"
HOME = "10.0.0.0/8,2001:db8::/32"
EXPORTERS = [f"192.0.2.{i}" for i in range(1, 9)]
WINDOW_S = 5
FLUSH_AHEAD_MS = 10_000_000


def flow_batch(rng: np.random.Generator, exporter: str, n: int, t_ms: int) -> bytes:
    home = (0x0A000000 + rng.integers(1, 13, n) * 65536 + rng.integers(0, 60, n)).astype(np.uint32)
    other = rng.integers(0x01000000, 0x09000000, n).astype(np.uint32)
    start = t_ms + rng.integers(0, 500, n)
    return fb.encode(
        fb.make_batch(
            {
                "src_addr": fb.ipv4_to_addr16(home),
                "dst_addr": fb.ipv4_to_addr16(other),
                "src_port": rng.integers(1024, 65535, n),
                "dst_port": rng.choice([3478, 5060, 8801, 443, 53], n),
                "protocol": np.full(n, 17),
                "packets": rng.integers(1, 200, n),
                "bytes": rng.integers(300, 40_000, n),
                "flow_start_ms": start,
                "flow_end_ms": start + rng.integers(0, 400, n),
                "sampling_rate": np.ones(n, dtype=np.int64),
                "exporter_addr": np.full(n, fb.text_to_addr16(exporter), dtype="S16"),
            }
        )
    )


class Lag:
    """Samples the worker group's lag on flows.v1 every half second."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.samples: list[tuple[float, int]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        # Never subscribes: it only reads the group's committed offsets.
        reader = KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False
        )
        try:
            tps = [TopicPartition(self.topic, p) for p in reader.partitions_for_topic(self.topic)]
            while not self._stop.wait(0.5):
                try:
                    end = reader.end_offsets(tps)
                    done = {tp: reader.committed(tp) for tp in tps}
                    if all(v is None for v in done.values()):
                        continue  # the worker has not committed yet
                    lag = sum(max(0, end[tp] - (done[tp] or 0)) for tp in tps)
                    self.samples.append((time.monotonic(), lag))
                except (KafkaError, KeyError) as exc:  # a broker is down: sample again
                    self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            reader.close(autocommit=False)


def traffic_flows(bootstrap: str, topic: str, before_ms: int) -> tuple[int, int]:
    """(flows in first copies, copies seen) of traffic.v1 windows before ``before_ms``."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    seen: dict[tuple[str, int, int], dict[str, Any]] = {}
    copies = 0
    for m in consumer:
        msg = json.loads(m.value)
        if msg["window_start_ms"] >= before_ms:
            continue
        copies += 1
        seen.setdefault(
            (msg["exporter"], msg["window_start_ms"], msg["observation_domain_id"]), msg
        )
    consumer.close()
    return sum(int(m["flows"]) for m in seen.values()), copies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="load duration")
    ap.add_argument("--rate", type=float, default=20.0, help="batches per second")
    ap.add_argument("--flows", type=int, default=200, help="flows per batch")
    ap.add_argument("--heap-mb", type=int, default=384, help="JVM heap per broker")
    args = ap.parse_args(argv)

    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    tmp = Path(tempfile.mkdtemp(prefix="voipflow-chaos-"))
    cluster = LocalCluster(fetch_jars(), tmp / "kafka", 3, heap_mb=args.heap_mb)
    t0 = time.monotonic()
    cluster.start()
    print(f"cluster: 3 nodes ready in {time.monotonic() - t0:.1f} s at {cluster.bootstrap}")
    tag = uuid.uuid4().hex[:8]
    topics = {n: f"chaos-{n}-{tag}" for n in ("flows", "voip-flows", "usage", "traffic")}
    bootstrap = cluster.bootstrap
    ensure_topics(bootstrap, {t: 4 for t in topics.values()}, 3, min_insync_replicas=2)
    group = f"vf-chaos-{tag}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        {
            "VOIPFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "VOIPFLOW_KAFKA_PARTITIONS": "4",
            "VOIPFLOW_KAFKA_REPLICATION_FACTOR": "3",
            "VOIPFLOW_KAFKA_MIN_INSYNC_REPLICAS": "2",
            "VOIPFLOW_KAFKA_FLOWS_TOPIC": topics["flows"],
            "VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC": topics["voip-flows"],
            "VOIPFLOW_KAFKA_USAGE_TOPIC": topics["usage"],
            "VOIPFLOW_KAFKA_TRAFFIC_TOPIC": topics["traffic"],
            "VOIPFLOW_WORKER_APP_ID": group,
            "VOIPFLOW_WORKER_PREFIX_TABLE": str(TABLE),
            "VOIPFLOW_WORKER_HOME_NETWORKS": HOME,
            "VOIPFLOW_WORKER_WINDOW_S": str(WINDOW_S),
            "VOIPFLOW_WORKER_LATENESS_S": "3000",
            "VOIPFLOW_WORKER_IDLE_CLOSE_S": "1000000",
            "VOIPFLOW_METRICS_LISTEN": "",
            "VOIPFLOW_DATA_DIR": str(tmp / "data"),
        }
    )
    log = (tmp / "worker.log").open("ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "voipflow", "worker"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    lag = Lag(bootstrap, group, topics["flows"])
    rng = np.random.default_rng(1)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", retries=50, linger_ms=5, request_timeout_ms=30_000
    )
    sent = 0
    failed = 0
    killed_at: float | None = None
    restarted_at: float | None = None
    restarting: threading.Thread | None = None
    base_ms = int(time.time() * 1000) // (WINDOW_S * 1000) * (WINDOW_S * 1000)
    try:
        lag.start()
        start = time.monotonic()
        i = 0
        pending: list[tuple[Any, int]] = []
        while (now := time.monotonic()) - start < args.seconds:
            if killed_at is None and now - start > args.seconds / 3:
                cluster.kill(1)
                killed_at = now
                print(f"t={now - start:.1f} s: SIGKILL broker 2")
            if killed_at and restarted_at is None and now - start > 2 * args.seconds / 3:
                restarted_at = time.monotonic()
                print(f"t={restarted_at - start:.1f} s: restarting broker 2")
                restarting = threading.Thread(target=cluster.restart, args=(1,), daemon=True)
                restarting.start()  # the load goes on meanwhile
            exporter = EXPORTERS[i % len(EXPORTERS)]
            value = flow_batch(rng, exporter, args.flows, base_ms + int((now - start) * 1000))
            pending.append(
                (producer.send(topics["flows"], key=exporter.encode(), value=value), args.flows)
            )
            i += 1
            time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
        if restarting is not None:
            restarting.join(timeout=300)
            assert restarted_at is not None
            ready = cluster.brokers[1].ready_after_s or 0.0
            print(f"  broker 2 was ready {ready:.1f} s after its restart")
        for fut, n in pending:
            try:
                fut.get(timeout=120)
                sent += n
            except KafkaError:  # counted: the broker never acknowledged it
                failed += n
        flush_ms = base_ms + FLUSH_AHEAD_MS
        for exporter in EXPORTERS:
            producer.send(
                topics["flows"],
                key=exporter.encode(),
                value=flow_batch(rng, exporter, 10, flush_ms),
            ).get(timeout=60)
        deadline = time.monotonic() + 180
        counted = copies = 0
        while time.monotonic() < deadline:
            time.sleep(3)
            counted, copies = traffic_flows(bootstrap, topics["traffic"], flush_ms - 1_000_000)
            if counted >= sent:
                break
    finally:
        producer.close(timeout=10)
        lag.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        cluster.stop()
    peak = max((v for _, v in lag.samples), default=0)
    recovery = None
    if killed_at is not None:
        after = [(t, v) for t, v in lag.samples if t >= killed_at]
        for j, (t, v) in enumerate(after):
            if v == 0 and any(w > 0 for _, w in after[:j]):
                recovery = t - killed_at
                break
    rec = f"{recovery:.1f} s" if recovery is not None else "lag never rose"
    print(
        f"broker kill+restart | flows sent {sent} (unacked {failed}) | counted in traffic.v1 "
        f"{counted} | lost {max(0, sent - counted)} | duplicated {max(0, counted - sent)} | "
        f"window copies {copies} | peak lag {peak} batches | recovery {rec}"
    )
    print(f"lag: {len(lag.samples)} samples, {len(lag.errors)} failed ({lag.errors[-1:]})")
    print(f"logs: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
