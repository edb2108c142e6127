"""Report render time: a week of usage at 200 cities and 15 apps, on chdb.

Fills a fresh chdb database with one-minute usage rows (``--cities`` x
``--apps`` x every minute of ``--days``; 30 million rows by default) inserted
into ``voip_usage_1m``, whose materialized views build the hourly and daily
rollups as in production; coordinates for every city; ``--flows`` classified
flow records spread over the week; one-minute traffic windows of
``--exporters`` exporters (one with a six-hour gap); and rules with hourly hit
reports. ClickHouse generates the rows (``INSERT ... SELECT FROM numbers()``),
so filling is not what is measured.

A database kept with ``--data`` is migrated first, so a new rollup migration
backfills from the rows already there (the time it took is printed). Then
the report for the week (``--since 7d``) is made ``--repeat`` times:
queries (every figure's panel SQL) and rendering, printed separately, median
and best. The target is under 5 s for the whole report.

    python -m benchmarks.report_bench [--days 7] [--cities 200] [--apps 15] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from voipflow.report.make import selection_for
from voipflow.report.queries import fetch
from voipflow.report.render import render
from voipflow.storage.clickhouse.embedded import EmbeddedClickHouse
from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions
from voipflow.storage.config import ClickHouseConfig

APPS = (
    "teams", "whatsapp", "sip", "zoom", "meet", "signal", "telegram", "facetime", "webex",
    "discord", "viber", "h323", "sccp", "mgcp", "iax", "rtp", "other_voip",
)  # fmt: skip


def fill(ch: EmbeddedClickHouse, now: int, args: argparse.Namespace) -> None:
    """Generate the rows inside ClickHouse, one day per insert."""
    days, cities, apps = args.days, args.cities, args.apps
    start = (now - days * 86400) // 60 * 60
    app_list = "[" + ", ".join(f"'{a}'" for a in APPS[:apps]) + "]"
    per_day = 1440 * cities * apps
    for d in range(days + 1):
        ch.execute(
            f"""
            INSERT INTO voip_usage_1m
                (window_start, window_s, city, region, country, app, flows, packets, bytes,
                 subscribers, subscribers_state, call_seconds, voip_share, produced)
            SELECT toDateTime({start} + (intDiv(n, {cities * apps}) + {d * 1440}) * 60) AS ws,
                   60, concat('City ', toString(n % {cities})) AS city,
                   concat('Region ', toString(n % {cities} % 20)), 'ZZ',
                   {app_list}[(intDiv(n, {cities}) % {apps}) + 1] AS app,
                   1 + n % 7, 100 + n % 900, 20000 + n % 90000, 1 + n % 5,
                   arrayReduce('uniqState', [cityHash64(n % {cities}, n % 997)]),
                   (n % 600) * (1 + (n % {cities}) / 50)
                       * (1.2 + sin((toHour(ws) + toMinute(ws) / 60) * pi() / 12)),
                   toFloat32((20000 + n % 90000) / 2000000), now64(3)
            FROM (SELECT number AS n FROM numbers({per_day}))
            WHERE ws <= toDateTime({now})
            """
        )
    ch.execute(
        f"""
        INSERT INTO cities (city, region, country, lat, lon, updated)
        SELECT concat('City ', toString(n)), 'R', 'ZZ', 35 + (n * 37 % 300) / 10,
               -10 + (n * 53 % 500) / 10, now64(3)
        FROM (SELECT number AS n FROM numbers({cities}))
        """
    )
    span_ms = days * 86400 * 1000
    ch.execute(
        f"""
        INSERT INTO flows_voip
            (time_received, flow_start, flow_end, exporter_addr, subscriber_addr, peer_addr,
             city, app, is_voip, confidence, evidence, classifier_version, packets, bytes,
             sampling_rate)
        SELECT fromUnixTimestamp64Milli({now * 1000} - toInt64(n * 7919 % {span_ms})) AS t,
               t, t, toIPv6('192.0.2.1'), toIPv6(IPv4NumToString(toUInt32(167772160 + n % 50000))),
               toIPv6('52.112.0.1'), concat('City ', toString(n % {cities})),
               {app_list}[n % {apps} + 1], if(n % 10 = 0, 0, 1),
               toFloat32(if(n % 10 = 0, 0.3, 0.6 + (n % 4) / 10)),
               toUInt32(64 + 128 * (n % 2) + 8 * (n % 3 = 0) + 1024 * (n % 5 = 0)), 'bench',
               100, 16000, 1
        FROM (SELECT number AS n FROM numbers({args.flows}))
        """
    )
    for e in range(args.exporters):
        gap = "AND NOT (n BETWEEN 3000 AND 3359)" if e == 1 else ""
        ch.execute(
            f"""
            INSERT INTO exporter_traffic_1m
                (window_start, window_s, exporter, observation_domain_id, flows, packets, bytes,
                 packets_est, bytes_est, placed_flows, unlocated_flows, unhomed_flows,
                 voip_flows, voip_bytes_est, produced)
            SELECT toDateTime({start} + n * 60) AS ws, 60,
                   toIPv6(IPv4NumToString(toUInt32(3221225984 + {e}))), 0,
                   1000, 10000, 1000000, 10000, 1000000, 900 - {e} * 10, 60, 40 + {e} * 10,
                   100, 90000, now64(3)
            FROM (SELECT number AS n FROM numbers({days * 1440 + 1}))
            WHERE ws <= toDateTime({now}) {gap}
            """
        )
    ch.execute(
        f"""
        INSERT INTO rules (rule_id, version, created, action, city, app, match, rate_limit_kbps,
                           expires, reason, author, body)
        SELECT concat('r-', toString(n)), 1, fromUnixTimestamp64Milli({start * 1000}), 'throttle',
               concat('City ', toString(n)), 'zoom', '{{}}', 64,
               fromUnixTimestamp64Milli({(now + 86400) * 1000}), 'bench', 'ops', '{{}}'
        FROM (SELECT number AS n FROM numbers(20))
        """
    )
    ch.execute(
        f"""
        INSERT INTO rule_events (ts, rule_id, rule_version, event, state, action, feedback,
                                 enforcement_point, hits, hit_packets, hit_bytes, detail)
        SELECT fromUnixTimestamp64Milli(({start} + intDiv(n, 20) * 3600) * 1000),
               concat('r-', toString(n % 20)), 1, 'feedback', 'applied', 'throttle', 'applied',
               'ep-1', 100 + n % 50, 1000, 100000, ''
        FROM (SELECT number AS n FROM numbers({days * 24 * 20}))
        """
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--cities", type=int, default=200)
    parser.add_argument("--apps", type=int, default=15)
    parser.add_argument("--flows", type=int, default=2_000_000)
    parser.add_argument("--exporters", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="keep the last report here")
    parser.add_argument(
        "--data",
        type=Path,
        help="keep the filled chdb database in this directory and reuse it on the next run "
        "(filling takes minutes; default: a temporary directory, removed)",
    )
    args = parser.parse_args()
    if args.apps > len(APPS):
        parser.error(f"--apps at most {len(APPS)}")
    tmp = args.data or Path(tempfile.mkdtemp(prefix="voipflow-report-bench-"))
    name = f"bench_{args.days}d_{args.cities}c_{args.apps}a"
    ch = EmbeddedClickHouse(tmp, name)
    try:
        ch.ensure_database()
        t0 = time.perf_counter()
        ran = Migrator(ch, RenderOptions.from_config(ClickHouseConfig(), ch.database)).migrate()
        if ran:  # on a kept database: new rollups backfill from the rows already there
            print(
                f"migrated in {time.perf_counter() - t0:.1f} s: " + ", ".join(m.label for m in ran)
            )
        t0 = time.perf_counter()
        filled = ch.query("SELECT toUnixTimestamp(max(window_start)) FROM voip_usage_1m")
        if args.data and filled.scalar() > 0:
            now = int(filled.scalar()) // 60 * 60 + 60
            print(f"reusing {name} in {tmp}")
        else:
            now = int(time.time()) // 60 * 60
            fill(ch, now, args)
        rows = ch.query("SELECT count() FROM voip_usage_1m").scalar()
        hourly = ch.query("SELECT count() FROM voip_usage_1h").scalar()
        print(
            f"filled in {time.perf_counter() - t0:.1f} s: {rows:,} one-minute usage rows "
            f"({hourly:,} hourly), {args.cities} cities x {args.apps} apps x {args.days} days, "
            f"{args.flows:,} flows, {args.exporters} exporters"
        )
        # The range ends with the data (a reused database may be older than today).
        sel = selection_for(f"{args.days}d", "now", now=now)
        runs = []
        for i in range(args.repeat):
            # chdb runs the queries in this process: its CPU time is the engine's too,
            # a figure that other work on the machine does not inflate as it does wall time.
            t, c = time.perf_counter(), time.process_time()
            data = fetch(ch, sel)
            q, qc = time.perf_counter() - t, time.process_time() - c
            t = time.perf_counter()
            page = render(data, source="bench")
            r = time.perf_counter() - t
            runs.append((q, r, q + r, qc))
            print(
                f"run {i + 1}: queries {q:.2f} s ({qc:.2f} s CPU), render {r:.3f} s, "
                f"total {q + r:.2f} s; load average {os.getloadavg()[0]:.1f}"
            )
        slowest = sorted(data.seconds, key=lambda k: -data.seconds[k])[:5]
        print(
            "slowest figures (last run):",
            ", ".join(f"{k} {data.seconds[k]:.2f} s" for k in slowest),
        )
        totals = [x[2] for x in runs]
        print(
            f"report of {args.days} days: median {statistics.median(totals):.2f} s, "
            f"best {min(totals):.2f} s (target < 5 s), query CPU median "
            f"{statistics.median(x[3] for x in runs):.2f} s; page {len(page) / 1e6:.2f} MB"
        )
        if args.out:
            args.out.write_text(page, encoding="utf-8")
            print(f"kept {args.out}")
    finally:
        ch.close()
        if not args.data:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
