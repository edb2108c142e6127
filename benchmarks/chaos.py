"""Failures as figures: the whole pipeline on a three-node Kafka cluster while its parts die.

Starts :class:`voipflow.cluster.LocalCluster` (three KRaft nodes, replication
factor 3, ``min.insync.replicas=2``) once, then for each fault of
``--faults`` (and, with ``--all``, all of them in one run) a fresh pipeline
on fresh topics: ``voipflow collect``, ``worker`` (two with the worker
fault), ``sink`` on chdb (and a second sink group on Debian's
clickhouse-server with the ClickHouse outage), fed over UDP by IPFIX
exporters at ``--rate`` flows/s for ``--seconds``
(:mod:`voipflow.evaluation.chaos` says how the faults are injected and how
lost and duplicated are counted against the sender's record).

One line per run, and a Markdown table at the end::

    python -m benchmarks.chaos [--faults broker,controller,...] [--all]
        [--rate 1000] [--seconds 60] [--all-seconds 120]
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from voipflow.broker import fetch_jars
from voipflow.cluster import LocalCluster
from voipflow.evaluation.chaos import FAULTS, ChaosOptions, ChaosRun, Row
from voipflow.evaluation.chserver import ClickHouseServer, server_binary

HEADER = (
    "| fault | flows sent | UDP lost while closed | counted in traffic.v1 | flows_voip rows "
    "(distinct) | usage rows (flows) | lost | duplicated | recovery | peak lag (msgs) |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def table_line(row: Row) -> str:
    native = f"; server {row.native_rows} ({row.native_distinct})" if row.native_rows >= 0 else ""
    rec = f"{row.recovery_s:.1f} s" if row.recovery_s is not None else "-"
    return (
        f"| {row.fault} | {row.sent} | {row.udp_lost} | {row.traffic_flows} | "
        f"{row.flows_voip_rows} ({row.flows_voip_distinct}){native} | "
        f"{row.usage_rows} ({row.usage_flows}) | {row.lost} | {row.duplicated} | {rec} | "
        f"{row.peak_lag} |" + ("" if row.drained else " NOT DRAINED")
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", default=",".join(FAULTS), help="faults run one by one")
    ap.add_argument("--all", action="store_true", help="then all of them in one run")
    ap.add_argument("--rate", type=int, default=1000, help="flows per second")
    ap.add_argument("--seconds", type=int, default=60, help="load per single-fault run")
    ap.add_argument("--all-seconds", type=int, default=120, help="load of the combined run")
    ap.add_argument("--heap-mb", type=int, default=384, help="JVM heap per Kafka node")
    args = ap.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: where is it now
    # SIGTERM ends the run like Ctrl-C: the finally blocks stop the cluster,
    # the ClickHouse server and the run's processes instead of leaving them.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    faults = [f for f in args.faults.split(",") if f]
    runs = [[f] for f in faults] + ([list(FAULTS)] if args.all else [])

    tmp = Path(tempfile.mkdtemp(prefix="voipflow-chaos-"))
    cluster = LocalCluster(fetch_jars(), tmp / "kafka", 3, heap_mb=args.heap_mb)
    server = None
    if any("clickhouse" in r for r in runs):
        binary = server_binary()
        if binary is None:
            raise SystemExit("clickhouse-server is not installed (scripts/setup.sh installs it)")
        (tmp / "chserver").mkdir()
        server = ClickHouseServer(binary, tmp / "chserver")
        server.start()
    load0 = os.getloadavg()
    t0 = time.monotonic()
    cluster.start()
    print(f"cluster: 3 nodes ready in {time.monotonic() - t0:.1f} s at {cluster.bootstrap}")
    rows: list[Row] = []
    try:
        for i, faults_of_run in enumerate(runs):
            seconds = args.all_seconds if len(faults_of_run) > 1 else args.seconds
            options = ChaosOptions(rate=args.rate, seconds=seconds)
            print(
                f"--- run {i + 1}/{len(runs)}: {'+'.join(faults_of_run)}, {seconds} s", flush=True
            )
            started = time.monotonic()
            run = ChaosRun(cluster, tmp / f"run-{i + 1}", faults_of_run, options, server)
            try:
                row = run.run()
            except Exception as exc:  # the next fault still runs; this one is reported
                print(f"{'+'.join(faults_of_run)}: the run failed: {exc!r}", flush=True)
                traceback.print_exc()
                row = Row("+".join(faults_of_run), events=[*run.row.events, f"failed: {exc!r}"])
            rows.append(row)
            print(
                f"{row.fault}: sent {row.sent}, UDP lost while closed {row.udp_lost}, "
                f"traffic.v1 {row.traffic_flows} (VoIP {row.traffic_voip}), flows_voip "
                f"{row.flows_voip_rows} rows / {row.flows_voip_distinct} distinct, usage "
                f"{row.usage_rows} rows / {row.usage_flows} flows, server "
                f"{row.native_rows}/{row.native_distinct}, lost {row.lost}, duplicated "
                f"{row.duplicated}, recovery {row.recovery_s}, peak lag {row.peak_lag}, "
                f"{'drained' if row.drained else 'NOT drained'} "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    finally:
        cluster.stop()
        if server is not None:
            server.stop()
    load1 = os.getloadavg()
    print(
        f"\nload {args.rate} flows/s, {os.cpu_count()} cores, load average "
        f"{load0[0]:.1f} before, {load1[0]:.1f} after\n"
    )
    print(HEADER)
    for row in rows:
        print(table_line(row))
    for row in rows:
        print(f"\n{row.fault}:")
        for line in row.events:
            print(f"  {line}")
    print(f"\nlogs: {tmp}")
    if all(r.drained for r in rows):
        shutil.rmtree(tmp / "kafka", ignore_errors=True)
    return 0 if all(r.lost == 0 and r.duplicated == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
