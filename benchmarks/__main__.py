"""Run the benchmarks: a quick form of each by default, the full form with ``--full``.

    python -m benchmarks                 # every benchmark, quick form (what ``make bench`` runs)
    python -m benchmarks --full          # every benchmark with its own defaults (long)
    python -m benchmarks --list          # names, what each measures, both forms
    python -m benchmarks decode_bench sink_bench   # only these

Each benchmark runs as ``python -m benchmarks.<name>`` in its own process
(a crash or a leaked socket of one does not touch the next) and prints its
own figures. The quick forms measure the same paths on less data and without
a Kafka broker, so that they finish in a few minutes on a loaded machine;
their figures are noisier than the full runs' and are for checking that
every benchmark still runs and for rough comparison, not for the docs.
The exit status is 1 when any benchmark failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    measures: str
    quick: tuple[str, ...]


BENCHMARKS = (
    Benchmark(
        "decode_bench",
        "records decoded per CPU-second, compiled core and numpy (big and small sets)",
        ("--messages", "500", "--repeat", "1"),
    ),
    Benchmark(
        "recv_bench",
        "CPU per UDP datagram of each way to read a socket in Python",
        ("--count", "5000", "--rounds", "3"),
    ),
    Benchmark(
        "simulate_bench",
        "simulator: records modelled, encoded and sent per second",
        ("--seconds", "2", "--rate", "20000", "--paced-rate", "10000"),
    ),
    Benchmark(
        "sim_classify",
        "the simulator's traffic through the classifier: per-app recall, precision",
        ("--seconds", "30"),
    ),
    Benchmark(
        "worker_bench",
        "worker flows per CPU-second (pure path; with Kafka in the full form)",
        ("--batches", "5", "--flows", "2000", "--runs", "1", "--no-kafka"),
    ),
    Benchmark(
        "sink_bench",
        "sink rows/s into chdb and clickhouse-server 18.16",
        ("--rows", "20000", "--repeat", "1", "--sizes", "1000,10000"),
    ),
    Benchmark(
        "http_bench",
        "heaviest panel through the embedded engine's HTTP interface vs in-process; "
        "sink inserts under query load",
        ("--flows", "100000", "--repeat", "2", "--insert-rows", "20000"),
    ),
    Benchmark(
        "e2e_bench",
        "the whole pipeline on this box: highest sustained flows/s, delays to ClickHouse",
        (
            "--rates",
            "5000,20000",
            "--step-s",
            "8",
            "--window-s",
            "5",
            "--lateness-s",
            "3",
            "--grace-s",
            "3",
        ),
    ),
    Benchmark(
        "enforce_bench",
        "nftables elements/s batched vs per element, FlowSpec rules/s (root: netns)",
        (
            "--elements",
            "5000",
            "--rules",
            "10",
            "--single",
            "50",
            "--repeat",
            "1",
            "--latency",
            "0",
            "--flowspec-rules",
            "20",
        ),
    ),
    Benchmark(
        "collector_bench",
        "collector against GoFlow2 and nfcapd on one packet stream (Kafka in the full form)",
        (
            "--records",
            "50000",
            "--rate",
            "50000",
            "--rounds",
            "1",
            "--streams",
            "ipfix4,ipfix4-small",
            "--receivers",
            "voipflow-null,nfcapd",
        ),
    ),
    Benchmark(
        "report_bench",
        "the HTML report of a week at 200 cities x 15 apps: query and render time",
        ("--days", "1", "--cities", "20", "--flows", "20000", "--exporters", "3", "--repeat", "1"),
    ),
)


def run(bench: Benchmark, full: bool) -> tuple[int, float]:
    """Run one benchmark in its own process; its figures go to our stdout."""
    cmd = [sys.executable, "-m", f"benchmarks.{bench.name}", *([] if full else bench.quick)]
    print(f"\n== {bench.name}: {bench.measures}\n   $ {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    rc = subprocess.run(cmd, cwd=REPO, check=False).returncode
    took = time.monotonic() - started
    print(f"== {bench.name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {took:.0f} s")
    return rc, took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").split("\n", 1)[0]
    )
    ap.add_argument("names", nargs="*", metavar="NAME", help="only these benchmarks")
    ap.add_argument("--full", action="store_true", help="each benchmark's own defaults (long)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    known = {b.name: b for b in BENCHMARKS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:<16} {b.measures}\n{'':<16} quick: {' '.join(b.quick)}")
        return 0
    chosen = [known[n] for n in args.names] if args.names else list(BENCHMARKS)
    results = {b.name: run(b, args.full) for b in chosen}
    print("\n== summary")
    for name, (rc, took) in results.items():
        print(f"   {name:<16} {'ok' if rc == 0 else 'FAILED':<7} {took:>6.0f} s")
    return 1 if any(rc for rc, _ in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
