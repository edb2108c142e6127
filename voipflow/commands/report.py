"""``voipflow report``: one self-contained HTML page of VoIP usage, for people without Grafana.

``report --since 7d [--until now] [--city C ...] [--app A ...] --out report.html
[--pdf report.pdf]`` reads ClickHouse (the server of ``VOIPFLOW_CLICKHOUSE_URL``;
else the SQL endpoint of the running voipflow process that owns
``<data_dir>/clickhouse``; else chdb there) with the Grafana panels' own SQL
and writes the page; ``--pdf`` prints it through headless Chromium. Exit
status: 0 written, 1 a query or the printing failed, 2 bad arguments, 3
ClickHouse unreachable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voipflow.dashboards.rollups import Retention
from voipflow.report import PdfError, ReportQueryError
from voipflow.report.make import selection_for, write_report
from voipflow.report.queries import ClickHouseError, open_clickhouse
from voipflow.settings import Settings


def _names(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return tuple(dict.fromkeys(out))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        default="7d",
        help="start: a duration back from now (7d, 36h, 90m, 2w) or an ISO time (default 7d)",
    )
    parser.add_argument("--until", default="now", help="end, like --since (default now)")
    parser.add_argument(
        "--city", action="append", metavar="CITY", help="only these cities (repeat or comma list)"
    )
    parser.add_argument(
        "--app", action="append", metavar="APP", help="only these apps (repeat or comma list)"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="HTML", help="page to write")
    parser.add_argument("--pdf", type=Path, metavar="PDF", help="also print the page to this PDF")
    parser.add_argument(
        "--chromium", metavar="PATH", help="Chromium binary for --pdf (default: found on PATH)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        sel = selection_for(args.since, args.until, _names(args.city), _names(args.app))
    except ValueError as exc:
        print(f"voipflow report: {exc}", file=sys.stderr)
        return 2
    ch_config = settings.clickhouse
    retention = Retention(
        usage_1m_days=ch_config.usage_1m_ttl_days,
        usage_1h_days=ch_config.usage_1h_ttl_days,
        usage_1d_days=ch_config.usage_1d_ttl_days,
    )
    try:
        ch = open_clickhouse(ch_config, settings.data_dir)
    except ClickHouseError as exc:
        print(f"voipflow report: ClickHouse unavailable: {exc}", file=sys.stderr)
        return 3
    try:
        written = write_report(ch, sel, args.out, retention=retention)
    except ReportQueryError as exc:
        print(f"voipflow report: {exc}", file=sys.stderr)
        return 1
    finally:
        ch.close()
    print(f"report: {written.path} ({written.total_s:.2f} s)")
    if args.pdf:
        from voipflow.report.chromium import print_pdf

        try:
            print(f"pdf: {print_pdf(written.path, args.pdf, binary=args.chromium)}")
        except PdfError as exc:
            print(f"voipflow report: {exc}", file=sys.stderr)
            return 1
    return 0
