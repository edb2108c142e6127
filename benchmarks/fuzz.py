"""Hostile input at scale: millions of mutated NetFlow v5/v9/IPFIX datagrams through the decoder.

In-process (:func:`voipflow.evaluation.fuzz.campaign`): ``--datagrams``
mutated datagrams, split over ``--procs`` processes with seeds ``seed,
seed+1, ...``, decoded in calls of ``--batch`` through
``Decoder.decode_frame``, the entry ``voipflow collect`` uses. Printed per
process and in total: crashes, hangs (a call over 5 CPU seconds), the slowest
call, datagrams decoded and rejected whole (and whether that matches the
headers' verdict and the error counters), errors by reason, templates in the
cache and held sets at their peak, peak RSS.

Over UDP (``--udp N``): N datagrams of the same generator sent to a running
``voipflow collect --output null`` on loopback (from 8 source addresses, at
``--udp-rate`` datagrams/s); its own counters then have to account for each:
sent = decoded + rejected whole + refused + dropped by the kernel.

    python -m benchmarks.fuzz [--datagrams 10000000] [--procs 2] [--seed 1]
        [--udp 200000] [--udp-rate 20000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from voipflow.children import ChildProcess, peak_rss_bytes
from voipflow.evaluation.fuzz import Mutator, Report, campaign, peak_rss_mb, rejected_whole
from voipflow.netutil import free_port


def _one(args: tuple[int, int, int]) -> Report:
    total, seed, batch = args

    def progress(r: Report, elapsed: float) -> None:
        print(
            f"  seed {seed}: {r.datagrams} datagrams in {elapsed:.0f} s, crashes {r.crashes}, "
            f"templates {r.peak_templates}, RSS {peak_rss_mb():.0f} MB",
            flush=True,
        )

    return campaign(total, seed=seed, batch=batch, progress=progress)


def show(label: str, r: Report) -> None:
    print(
        f"{label}: {r.datagrams} datagrams in {r.seconds:.0f} s "
        f"({r.datagrams / max(r.seconds, 1e-9):,.0f}/s); crashes {r.crashes}, hangs {r.hangs} "
        f"(slowest call {r.slowest_call_s * 1000:.0f} CPU ms); decoded {r.packets}, rejected whole "
        f"{r.rejected} (headers say {r.rejected_expected}); records {r.records}; errors "
        f"{sum(r.errors.values())} {dict(r.errors.most_common())}; undocumented "
        f"{dict(r.undocumented)}; accounted {r.accounted}; peak templates {r.peak_templates}, "
        f"held sets {r.peak_held_sets} ({r.peak_held_bytes / 1e6:.1f} MB); RSS "
        f"{r.rss_start_mb:.0f} -> {r.peak_rss_mb:.0f} MB",
        flush=True,
    )
    for line in r.first_crashes:
        print(f"  crash: {line}")


def in_process(total: int, procs: int, seed: int, batch: int) -> bool:
    share = [total // procs + (i < total % procs) for i in range(procs)]
    jobs = [(n, seed + i, batch) for i, n in enumerate(share)]
    if procs == 1:
        reports = [_one(jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            reports = pool.map(_one, jobs)
    made: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for i, r in enumerate(reports):
        show(f"seed {seed + i}", r)
        made.update(r.made)
        errors.update(r.errors)
    n = sum(r.datagrams for r in reports)
    crashes = sum(r.crashes for r in reports)
    hangs = sum(r.hangs for r in reports)
    print(f"kinds: {dict(made.most_common())}")
    print(
        f"total: {n} datagrams, crashes {crashes}, hangs {hangs}, rejected whole "
        f"{sum(r.rejected for r in reports)}, errors {sum(errors.values())}, accounted "
        f"{all(r.accounted for r in reports)}, undocumented reasons "
        f"{sum(sum(r.undocumented.values()) for r in reports)}, peak templates "
        f"{max(r.peak_templates for r in reports)}, peak RSS "
        f"{max(r.peak_rss_mb for r in reports):.0f} MB"
    )
    return crashes == 0 and hangs == 0 and all(r.accounted and not r.undocumented for r in reports)


def over_udp(count: int, rate: float, seed: int) -> bool:
    tmp = Path(tempfile.mkdtemp(prefix="voipflow-fuzz-"))
    port = free_port("udp", "127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        VOIPFLOW_DATA_DIR=str(tmp),
        VOIPFLOW_METRICS_LISTEN="127.0.0.1:0",
        VOIPFLOW_COLLECTOR_LISTEN=f"127.0.0.1:{port}",
        VOIPFLOW_COLLECTOR_WORKERS="1",
        VOIPFLOW_LOG_LEVEL="WARNING",
    )
    child = ChildProcess(
        "collect", ["collect", "--output", "null"], env=env, log_file=tmp / "collect.log",
        data_dir=tmp,
    )  # fmt: skip
    child.start()
    mut = Mutator(seed)
    socks = []
    for i in range(8):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((f"127.0.2.{i + 1}", 0))
        socks.append(sock)
    expected_rejected = 0
    t0 = time.monotonic()
    try:
        for i in range(count):
            _kind, _exporter, data = mut.next()
            expected_rejected += rejected_whole(data)
            socks[i % 8].sendto(data, ("127.0.0.1", port))
            ahead = t0 + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        sent_s = time.monotonic() - t0
        time.sleep(3)  # the last group's coalescing and decode
        m = child.metrics()
        assert child.pid is not None
        rss = (peak_rss_bytes(child.pid) or 0) / 1e6
        child.check()
    finally:
        for sock in socks:
            sock.close()
        child.stop()
    decoded = int(m.get("voipflow_collector_packets_total", 0))
    prefix = "voipflow_collector_decode_errors_total{reason="
    errors = {k[len(prefix) : -1]: int(v) for k, v in m.items() if k.startswith(prefix) and v}
    refused = int(m.get("voipflow_collector_refused_packets_total", 0))
    kernel = int(m.get("voipflow_collector_kernel_drops_total", 0))
    rejected = count - decoded - refused - kernel
    print(
        f"udp: sent {count} in {sent_s:.0f} s to voipflow collect; decoded {decoded}, rejected "
        f"whole {rejected} (headers say {expected_rejected}), refused {refused}, kernel drops "
        f"{kernel}; decode errors {sum(errors.values())} {errors}; templates now "
        f"{int(m.get('voipflow_collector_templates', 0))}; collector peak RSS {rss:.0f} MB; "
        "still running at the end: yes"
    )
    if kernel:
        print(
            "udp: the kernel dropped datagrams, so which ones were rejected cannot be checked; "
            "lower --udp-rate"
        )
    return rejected == expected_rejected and sum(errors.values()) >= rejected


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datagrams", type=int, default=10_000_000)
    ap.add_argument("--procs", type=int, default=2, help="processes (different seeds)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256, help="datagrams per decode call")
    ap.add_argument("--udp", type=int, default=0, help="datagrams sent to voipflow collect")
    ap.add_argument("--udp-rate", type=float, default=20_000, help="datagrams/s over UDP")
    args = ap.parse_args(argv)
    ok = True
    if args.datagrams:
        ok &= in_process(args.datagrams, args.procs, args.seed, args.batch)
    if args.udp:
        ok &= over_udp(args.udp, args.udp_rate, args.seed + 1000)
    print("result:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
