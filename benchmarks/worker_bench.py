"""Worker throughput: flows per CPU-second, pure path and through Kafka.

1. Pure path: ``FlowPipeline.process`` (decode the flows.v1 message, enrich,
   classify, pre-aggregate per city, encode voip-flows.v1) over synthetic
   batches, timed with ``time.process_time``, with the stages (enrich,
   classify, aggregate) timed apart in the same run.
2. Through Kafka (:mod:`benchmarks.worker_kafka`): ``voipflow worker``
   processes in one consumer group on a local broker (started here on free
   ports unless ``VOIPFLOW_KAFKA_BOOTSTRAP`` is set); each worker's CPU time
   from /proc from the first batch sent until every batch and every partial
   is committed, and the wall time. ``--workers 1,2`` runs one worker, then
   two, to show how the stage scales; ``--profile FILE`` records where the
   first worker's time goes (py-spy).

Usage: ``python -m benchmarks.worker_bench [--batches N] [--flows N] [--runs R]
[--compression lz4] [--no-kafka] [--workers 1,2] [--partitions P] [--profile FILE]``. Prints each
run and medians of the runs. The machine may be shared: the lines give the
load average before and after each run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import profile_summary, worker_kafka
from benchmarks.kafka_broker import bench_bootstrap
from voipflow.schemas import flowbatch as fb
from voipflow.streams.config import WorkerConfig
from voipflow.streams.pipeline import FlowPipeline

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "data" / "cities" / "demo-cities.csv"
HOME = "10.0.0.0/8,2001:db8::/32"


def make_messages(
    batches: int,
    flows: int,
    seed: int = 1,
    compression: str | None = None,
    hosts: int = 5000,
    exporters: int = 8,
) -> list[bytes]:
    """Synthetic flows.v1 messages; ``compression`` ("lz4", "zstd") compresses them
    inside Arrow as the collector does by default (``VOIPFLOW_COLLECTOR_COMPRESSION_LAYER``).

    Subscribers are ``hosts`` addresses in each of 12 city networks, behind
    ``exporters`` exporters in turn (each exporter has its own classifier
    memories: one broadband gateway with 65,535 hosts per city fills them far
    more than eight with 5,000)."""
    rng = np.random.default_rng(seed)
    t0 = int(time.time() * 1000) // 60_000 * 60_000
    out = []
    for i in range(batches):
        n = flows
        home = (0x0A000000 + rng.integers(1, 13, n) * 65536 + rng.integers(0, hosts, n)).astype(
            np.uint32
        )
        other = rng.integers(0x01000000, 0xDF000000, n).astype(np.uint32)
        up = rng.random(n) < 0.5
        start = t0 + i * 200 + rng.integers(0, 60_000, n)
        out.append(
            _encode(
                compression,
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
                            n, fb.text_to_addr16(f"192.0.2.{i % exporters}"), dtype="S16"
                        ),
                    }
                ),
            )
        )
    return out


def _encode(compression: str | None, batch: fb.FlowBatch) -> bytes:
    if compression is None:
        return fb.encode(batch)
    return bytes(fb.encode_view(batch, compression))


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--flows", type=int, default=5_000, help="flows per batch (one message < 1 MB)")
    ap.add_argument(
        "--compression",
        choices=("none", "lz4", "zstd"),
        default="none",
        help="compress the flows.v1 messages inside Arrow, as the collector does by default "
        "(lz4); with lz4 a message of 20,000 synthetic flows is about 680 KB, the collector's "
        "default batch (VOIPFLOW_COLLECTOR_BATCH_MAX_RECORDS)",
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--hosts", type=int, default=5000, help="subscriber hosts per city network (of 65,535)"
    )
    ap.add_argument("--exporters", type=int, default=8, help="exporters the batches come from")
    ap.add_argument("--no-kafka", action="store_true")
    ap.add_argument(
        "--workers",
        default="1",
        help="worker processes in the group, comma separated runs (1,2: how the stage scales)",
    )
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the flows topic")
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record a py-spy profile (raw collapsed stacks) of the first worker's first run "
        "into this file; py-spy from the interpreter's bin directory or PATH",
    )
    ap.add_argument(
        "--perf",
        type=Path,
        default=None,
        help="record the first worker's first run with perf (on-CPU samples) into this file",
    )
    args = ap.parse_args()
    codec = None if args.compression == "none" else args.compression
    messages = make_messages(
        args.batches, args.flows, compression=codec, hosts=args.hosts, exporters=args.exporters
    )
    results = [pure(messages, args.flows) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(
        f"pure path ({args.runs} runs x {args.batches} batches x {args.flows} flows, "
        f"flows.v1 compression {args.compression}, {args.hosts:,} hosts per city, "
        f"{args.exporters} exporter(s)), "
        "flows per CPU-second: " + ", ".join(f"{k} {v:,.0f}" for k, v in med.items())
    )
    print("  (whole step = decode + enrich + classify + per-city partials + voip-flows encode)")
    if args.no_kafka:
        return 0
    env = {"VOIPFLOW_WORKER_PREFIX_TABLE": str(TABLE), "VOIPFLOW_WORKER_HOME_NETWORKS": HOME}
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="worker-bench-") as tmp:
        workdir = Path(tmp)
        with bench_bootstrap(workdir) as bootstrap:
            for n in counts:
                runs = []
                for r in range(args.runs):
                    first = n == counts[0] and r == 0
                    one = worker_kafka.run(
                        bootstrap,
                        messages,
                        args.flows,
                        workdir,
                        env,
                        workers=n,
                        partitions=max(args.partitions, n),
                        profile=args.profile if first else None,
                        perf=args.perf if first else None,
                    )
                    print("  " + one.line(), flush=True)
                    print("    " + one.parts_line(), flush=True)
                    runs.append(one)
                per_cpu = statistics.median(x.flows_per_cpu_s for x in runs)
                wall = statistics.median(x.flows_per_s for x in runs)
                print(
                    f"through Kafka, {n} worker(s): {per_cpu:,.0f} flows per worker CPU-second "
                    f"({per_cpu / med['whole step']:.0%} of the pure step's), "
                    f"{wall:,.0f} flows/s wall (medians of {args.runs})",
                    flush=True,
                )
    if args.profile:
        print(f"py-spy profile of the first worker: {args.profile} (raw collapsed stacks)")
        for part, share in profile_summary.summarise(args.profile):
            print(f"  {share:6.1%}  {part}")
    if args.perf:
        print(f"perf record of the first worker: {args.perf} (perf report -i FILE --sort dso)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
