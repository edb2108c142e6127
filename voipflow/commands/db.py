"""``voipflow db``: ClickHouse schema migrations, their status, and ad-hoc SQL.

``db migrate [--cluster NAME] [--print]`` applies pending migrations (or, with
``--print``, only prints the rendered DDL: useful to review ON CLUSTER DDL
before running it on a cluster); ``db status`` lists migrations and their
state; ``db query SQL`` runs one statement and prints the rows. ``query`` and
``status`` read through the SQL endpoint of a running voipflow process that
owns the embedded engine (the sink with ``VOIPFLOW_CLICKHOUSE_HTTP_LISTEN``),
so they work while the pipeline runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from voipflow.settings import Settings
from voipflow.storage.clickhouse import ClickHouseError, PermanentError, connect
from voipflow.storage.clickhouse.http_client import open_clickhouse
from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions, load_migrations, render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    mig = sub.add_parser("migrate", help="apply pending migrations")
    mig.add_argument(
        "--cluster",
        metavar="NAME",
        help="render ON CLUSTER DDL with Replicated/Distributed tables "
        "(default: VOIPFLOW_CLICKHOUSE_CLUSTER)",
    )
    mig.add_argument(
        "--print", action="store_true", help="print the rendered statements, run nothing"
    )
    mig.add_argument("--to", type=int, metavar="N", help="stop after migration N")
    sub.add_parser("status", help="list migrations and whether they ran")
    q = sub.add_parser("query", help="run one SQL statement and print the result")
    q.add_argument("sql", help="the statement (SELECT, SHOW, DESCRIBE, ...)")
    q.add_argument("--format", choices=("table", "tsv", "json"), default="table")


def _database(url: str, embedded: str) -> str:
    """The database the statements will address, without connecting."""
    if not url:
        return embedded
    from clickhouse_driver.util.helpers import parse_url

    return str(parse_url(url)[1].get("database") or "default")


def _print_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> None:
    if fmt == "json":
        for r in rows:
            print(json.dumps(dict(zip(columns, r, strict=True)), default=str))
        return
    text: list[list[str]] = [[str(v) for v in r] for r in rows]
    if fmt == "tsv":
        print("\t".join(columns))
        for line in text:
            print("\t".join(line))
        return
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for line in text:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))


def run(args: argparse.Namespace, settings: Settings) -> int:
    config = settings.clickhouse
    if args.db_command == "migrate" and args.cluster is not None:
        config = config.model_copy(update={"cluster": args.cluster})
    if args.db_command == "migrate" and args.print:
        opts = RenderOptions.from_config(config, _database(config.url, config.database))
        for m in load_migrations():
            if args.to is not None and m.version > args.to:
                break
            print(f"-- {m.label}")
            for stmt in render(m, opts):
                print(stmt + ";\n")
        return 0
    try:
        if args.db_command == "migrate":
            ch = connect(config, settings.data_dir)
        else:
            # Reads go through the HTTP endpoint of a process that owns chdb, if one does.
            ch = open_clickhouse(config, settings.data_dir)
    except ClickHouseError as exc:
        print(f"voipflow db: {exc}", file=sys.stderr)
        return 2
    try:
        if args.db_command == "query":
            res = ch.query(args.sql)
            _print_rows(res.columns, res.rows, args.format)
            return 0
        migrator = Migrator(ch, RenderOptions.from_config(config, ch.database))
        if args.db_command == "status":
            for s in migrator.status():
                when = f"  {s.applied_at}" if s.applied_at is not None else ""
                print(f"{s.version:03d}_{s.name:<24} {s.state}{when}")
            return 0
        ran = migrator.migrate(target=args.to)
        where = f"{ch.kind} database {ch.database}"
        if ran:
            for m in ran:
                print(f"applied {m.label}")
        else:
            print(f"nothing to do: {where} is up to date")
        return 0
    except PermanentError as exc:
        print(f"voipflow db {args.db_command}: {exc}", file=sys.stderr)
        return 1
    except ClickHouseError as exc:
        print(f"voipflow db {args.db_command}: ClickHouse unavailable: {exc}", file=sys.stderr)
        return 3
    finally:
        ch.close()
