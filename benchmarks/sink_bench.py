"""Sink insert throughput: rows/s into chdb and into clickhouse-server 18.16.

For each batch size, the sink's own path minus Kafka: parse voip-flows.v1
messages (one message = 1,000 flows), concatenate their columns, and insert
them in one call of the backend, repeated until ``--rows`` rows went in.
Reported per backend and batch size: rows per wall second and rows per CPU
second of this process (chdb runs the engine in-process, so its CPU is
included; the server's CPU is not), median of ``--repeat`` runs.

    python -m benchmarks.sink_bench [--rows 400000] [--repeat 3] [--sizes 1000,10000,50000,100000]

chdb writes into ``flows_voip`` of the real migrations (codecs,
LowCardinality, IPv6); 18.16 into a simple MergeTree with the columns it
supports (FixedString(16) addresses, String, DateTime).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from voipflow.evaluation.chserver import ClickHouseServer, server_binary
from voipflow.evaluation.sinkdata import flow_batch
from voipflow.storage.clickhouse import ClickHouse
from voipflow.storage.clickhouse.embedded import EmbeddedClickHouse
from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions
from voipflow.storage.clickhouse.native import NativeClickHouse
from voipflow.storage.config import ClickHouseConfig
from voipflow.storage.sink.tables import combine, parse_voip_flows, with_offsets

MESSAGE_ROWS = 1000

SIMPLE_TABLE = """
CREATE TABLE bench.flows_simple (
    d Date DEFAULT toDate(time_received),
    time_received DateTime, flow_start DateTime, flow_end DateTime,
    exporter_addr FixedString(16), subscriber_addr FixedString(16), peer_addr FixedString(16),
    subscriber_port UInt16, peer_port UInt16, protocol UInt8, direction UInt8,
    packets UInt64, bytes UInt64, sampling_rate UInt32,
    city String, region String, country String, app String,
    confidence Float32, evidence UInt32, classifier_version String,
    kafka_partition UInt32, kafka_offset UInt64
) ENGINE = MergeTree(d, (city, app, time_received), 8192)
"""


def _measure(insert: Callable[[], int], rows: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    while done < rows:
        done += insert()
    return done / (time.perf_counter() - t0), done / max(time.process_time() - c0, 1e-9)


def bench(ch: ClickHouse, table: str, size: int, rows: int, offsets: bool) -> tuple[float, float]:
    messages = [
        flow_batch(MESSAGE_ROWS, base=k * MESSAGE_ROWS) for k in range(size // MESSAGE_ROWS)
    ]
    types = dict(
        ch.query(
            f"SELECT name, type FROM system.columns WHERE database = currentDatabase() "
            f"AND table = '{table}'"
        ).rows
    )
    offset = [0]

    def one() -> int:
        parts = []
        for m in messages:
            part = parse_voip_flows(m)
            if offsets:
                part = with_offsets(part, 0, offset[0])
            offset[0] += 1
            parts.append(part)
        cols, n = combine(parts)
        cols = {k: v for k, v in cols.items() if k in types}
        for k, v in cols.items():
            if (
                isinstance(v, np.ndarray)
                and v.dtype.kind == "M"
                and types[k].startswith("DateTime")
                and "64" not in types[k]
            ):
                cols[k] = v.astype("datetime64[s]")
        ch.insert(table, cols, dedup_token=f"bench/{offset[0]}")
        return n

    return _measure(one, rows)


def _report(kind: str, size: int, runs: list[tuple[float, float]]) -> None:
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(
        f"  {kind:<6} batch {size:>7}: {wall:>12,.0f} rows/s {cpu:>12,.0f} rows/CPU-s", flush=True
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="1000,10000,50000,100000")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="voipflow-sinkbench-"))
    try:
        chdb = EmbeddedClickHouse(work / "chdb", "bench")
        Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), "bench")).migrate()
        print(f"chdb {'.'.join(map(str, chdb.version))} (Arrow stream insert)", flush=True)
        for size in sizes:
            _report(
                "chdb",
                size,
                [bench(chdb, "flows_voip", size, args.rows, False) for _ in range(args.repeat)],
            )
        chdb.close()

        binary = server_binary()
        if binary is None:
            print("clickhouse-server not installed: server figures skipped")
            return 0
        (work / "server").mkdir()
        server = ClickHouseServer(binary, work / "server")
        server.start()
        try:
            ch = NativeClickHouse(server.url_for("bench"))
            ch.ensure_database()
            ch.execute(SIMPLE_TABLE)
            version = ".".join(map(str, ch.version))
            print(f"clickhouse-server {version} (native protocol, numpy columnar)", flush=True)
            for size in sizes:
                _report(
                    "server",
                    size,
                    [bench(ch, "flows_simple", size, args.rows, True) for _ in range(args.repeat)],
                )
            ch.close()
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
