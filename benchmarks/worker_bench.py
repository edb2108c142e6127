"""Worker throughput: flows per CPU-second, pure path and through Kafka.

1. Pure path: ``FlowPipeline.process`` (decode the flows.v1 message, enrich,
   classify, pre-aggregate per city, encode voip-flows.v1) over synthetic
   batches, timed with ``time.process_time``, with the stages (enrich,
   classify, aggregate) timed apart in the same run.
2. Through Kafka: a ``voipflow worker`` subprocess on a local broker (started
   here on free ports unless ``VOIPFLOW_KAFKA_BOOTSTRAP`` is set); the
   worker's CPU time from /proc between "joined" and "every batch committed".

Usage: ``python -m benchmarks.worker_bench [--batches N] [--flows N] [--runs R]
[--no-kafka]``. Prints medians of the runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from voipflow.schemas import flowbatch as fb
from voipflow.streams.config import WorkerConfig
from voipflow.streams.pipeline import FlowPipeline

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "data" / "cities" / "demo-cities.csv"
HOME = "10.0.0.0/8,2001:db8::/32"


def make_messages(batches: int, flows: int, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    t0 = int(time.time() * 1000) // 60_000 * 60_000
    out = []
    for i in range(batches):
        n = flows
        home = (0x0A000000 + rng.integers(1, 13, n) * 65536 + rng.integers(0, 5000, n)).astype(
            np.uint32
        )
        other = rng.integers(0x01000000, 0xDF000000, n).astype(np.uint32)
        up = rng.random(n) < 0.5
        start = t0 + i * 200 + rng.integers(0, 60_000, n)
        out.append(
            fb.encode(
                fb.make_batch(
                    {
                        "src_addr": fb.ipv4_to_addr16(np.where(up, home, other)),
                        "dst_addr": fb.ipv4_to_addr16(np.where(up, other, home)),
                        "src_port": rng.integers(1024, 65535, n),
                        "dst_port": rng.choice([443, 443, 443, 80, 53, 3478, 5060, 8801, 40000], n),
                        "protocol": rng.choice([6, 17], n),
                        "packets": rng.integers(1, 3000, n),
                        "bytes": rng.integers(40, 3_000_000, n),
                        "flow_start_ms": start,
                        "flow_end_ms": start + rng.integers(0, 60_000, n),
                        "sampling_rate": rng.choice([1, 100], n),
                        "exporter_addr": np.full(
                            n, fb.text_to_addr16(f"192.0.2.{i % 8}"), dtype="S16"
                        ),
                    }
                )
            )
        )
    return out


def pure(messages: list[bytes], flows: int) -> dict[str, float]:
    """Flows per CPU-second of the whole per-batch step and of each stage."""
    from voipflow.streams.aggregate import batch_partials

    # As the worker runs it by default: voip-flows.v1 compressed in Arrow (lz4).
    pipe = FlowPipeline(WorkerConfig(prefix_table=TABLE, home_networks=HOME), None, "lz4")
    pipe.start()
    assert pipe.classifier is not None
    batches = [fb.decode(m) for m in messages]
    cities = [(c.name, c.region, c.country) for c in pipe.enricher.registry.cities]
    stage = {"enrich": 0.0, "classify": 0.0, "aggregate": 0.0}
    for b in batches:
        t = time.process_time()
        enr = pipe.enricher.enrich(b)
        t2 = time.process_time()
        res = pipe.classifier.classify(b)
        t3 = time.process_time()
        batch_partials(b, enr, res, cities, 60)
        t4 = time.process_time()
        stage["enrich"] += t2 - t
        stage["classify"] += t3 - t2
        stage["aggregate"] += t4 - t3
    t = time.process_time()
    for off, m in enumerate(messages):
        pipe.process(m, "bench:0", off)
    full_s = time.process_time() - t
    total = flows * len(messages)
    out = {"whole step": total / full_s}
    out.update({k: total / v for k, v in stage.items()})
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kafka_run(
    bootstrap: str,
    messages: list[bytes],
    flows: int,
    workdir: Path,
    profile: Path | None = None,
) -> float:
    from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

    from voipflow.topics import ensure_topics

    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-flows-{tag}", f"bench-{tag}"
    ensure_topics(bootstrap, {topic: 4})
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        {
            "VOIPFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "VOIPFLOW_KAFKA_FLOWS_TOPIC": topic,
            "VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC": f"bench-voip-{tag}",
            "VOIPFLOW_KAFKA_USAGE_TOPIC": f"bench-usage-{tag}",
            "VOIPFLOW_WORKER_APP_ID": group,
            "VOIPFLOW_WORKER_PREFIX_TABLE": str(TABLE),
            "VOIPFLOW_WORKER_HOME_NETWORKS": HOME,
            "VOIPFLOW_METRICS_LISTEN": "",
            "VOIPFLOW_DATA_DIR": str(workdir / tag),
        }
    )
    with (workdir / f"worker-{tag}.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voipflow", "worker"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(15)  # joined the group and idle
        cpu0 = _cpu_s(proc.pid)
        spy = None
        if profile is not None:
            spy_cmd = ["py-spy", "record", "--pid", str(proc.pid), "--rate", "250"]
            spy_cmd += ["--nonblocking", "--format", "raw", "--output", str(profile)]
            spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL)
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, compression_type="lz4")
        ends: dict[int, int] = {}
        for i, m in enumerate(messages):
            md = producer.send(topic, key=f"192.0.2.{i % 8}".encode(), value=m).get(timeout=30)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
        producer.close()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            got = admin.list_group_offsets(group).get(group, {})
            if all(
                (om := got.get(TopicPartition(topic, p))) is not None and om.offset >= end
                for p, end in ends.items()
            ):
                break
            time.sleep(0.5)
        admin.close()
        cpu = _cpu_s(proc.pid) - cpu0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        return flows * len(messages) / cpu
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--flows", type=int, default=5_000, help="flows per batch (one message < 1 MB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-kafka", action="store_true")
    args = ap.parse_args()
    messages = make_messages(args.batches, args.flows)
    results = [pure(messages, args.flows) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(
        f"pure path ({args.runs} runs x {args.batches} batches x {args.flows} flows), "
        "flows per CPU-second: " + ", ".join(f"{k} {v:,.0f}" for k, v in med.items())
    )
    print("  (whole step = decode + enrich + classify + per-city partials + voip-flows encode)")
    if args.no_kafka:
        return 0
    with tempfile.TemporaryDirectory(prefix="worker-bench-") as tmp:
        workdir = Path(tmp)
        bootstrap = os.environ.get("VOIPFLOW_KAFKA_BOOTSTRAP", "")
        broker = None
        if not bootstrap:
            from voipflow.broker import LocalBroker, LocalBrokerConfig, fetch_jars

            broker = LocalBroker(
                LocalBrokerConfig(
                    jar_dir=fetch_jars(), state_dir=workdir / "kafka", port=0, controller_port=0
                )
            )
            broker.start()
            bootstrap = broker.bootstrap
        try:
            rates = [kafka_run(bootstrap, messages, args.flows, workdir) for _ in range(args.runs)]
        finally:
            if broker is not None:
                broker.stop()
    print(
        f"through Kafka: {statistics.median(rates):,.0f} flows per worker CPU-second "
        f"(median of {args.runs}: {', '.join(f'{r:,.0f}' for r in rates)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
