"""``voipflow dashboards``: build the Grafana JSON, load city coordinates, push.

``dashboards build [--check] [--out DIR]`` writes ``dashboards/*.json`` from
the definitions in the ``dashboards`` package (``--check`` only compares);
the usage panels' table choice follows ``VOIPFLOW_CLICKHOUSE_USAGE_1M_TTL_DAYS``
and ``..._1H_TTL_DAYS``, so rebuild after changing them.
``dashboards cities --file PREFIXES.csv`` loads one row per city of the
operator prefix table into ``cities`` for the usage map.
``dashboards push --url URL --token TOKEN`` uploads the dashboards to a
running Grafana through its HTTP API (grafana-client), into one folder,
overwriting earlier versions; docker-compose does not need it (provisioning
reads the files), other Grafanas do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from voipflow.dashboards import CityTableError, DashboardError
from voipflow.dashboards.build import DASHBOARD_DIR, check, render, write
from voipflow.dashboards.rollups import Retention
from voipflow.settings import Settings

FOLDER_UID = "voipflow"
FOLDER_TITLE = "VoIP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="write dashboards/*.json from the definitions")
    b.add_argument("--check", action="store_true", help="only compare; exit 1 if out of date")
    b.add_argument("--out", type=Path, default=DASHBOARD_DIR, metavar="DIR")
    c = sub.add_parser("cities", help="load city coordinates from a prefix table (CSV)")
    c.add_argument("--file", type=Path, required=True, metavar="CSV")
    p = sub.add_parser("push", help="upload the dashboards to a running Grafana")
    p.add_argument("--url", required=True, help="Grafana base URL, e.g. http://grafana:3000")
    p.add_argument("--token", required=True, help="service account token (Editor or Admin)")
    p.add_argument("--folder-uid", default=FOLDER_UID)
    p.add_argument("--folder-title", default=FOLDER_TITLE)
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")


def _retention(settings: Settings) -> Retention:
    ch = settings.clickhouse
    return Retention(
        usage_1m_days=ch.usage_1m_ttl_days,
        usage_1h_days=ch.usage_1h_ttl_days,
        usage_1d_days=ch.usage_1d_ttl_days,
    )


def push(
    url: str,
    token: str,
    dashboards: dict[str, dict[str, Any]],
    *,
    folder_uid: str = FOLDER_UID,
    folder_title: str = FOLDER_TITLE,
    timeout: float = 10.0,
) -> list[str]:
    """Create the folder if needed and upload every dashboard; their URLs."""
    from grafana_client import GrafanaApi, TokenAuth
    from grafana_client.client import GrafanaClientError

    api = GrafanaApi.from_url(url, credential=TokenAuth(token), timeout=timeout)
    try:
        api.folder.get_folder(folder_uid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.folder.create_folder(folder_title, uid=folder_uid)
    urls = []
    for d in dashboards.values():
        # No numeric id: Grafana matches by uid, so a push updates in place.
        body = {k: v for k, v in d.items() if k != "id"}
        res = api.dashboard.update_dashboard(
            {
                "dashboard": body,
                "folderUid": folder_uid,
                "overwrite": True,
                "message": "voipflow dashboards push",
            }
        )
        urls.append(str(res.get("url", "")))
    return urls


def run(args: argparse.Namespace, settings: Settings) -> int:
    retention = _retention(settings)
    if args.dashboards_command == "build":
        try:
            if args.check:
                check(args.out, retention)
                print(f"dashboards up to date in {args.out}")
            else:
                for path in write(args.out, retention):
                    print(path)
        except DashboardError as exc:
            print(f"voipflow dashboards: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.dashboards_command == "cities":
        return _cities(args.file, settings)
    from grafana_client.client import GrafanaException

    dashboards = {name: json.loads(text) for name, text in render(retention).items()}
    try:
        urls = push(
            args.url,
            args.token,
            dashboards,
            folder_uid=args.folder_uid,
            folder_title=args.folder_title,
            timeout=args.timeout,
        )
    except (GrafanaException, OSError) as exc:
        print(f"voipflow dashboards push: {args.url}: {exc}", file=sys.stderr)
        return 1
    for u in urls:
        print(args.url.rstrip("/") + u)
    return 0


def _cities(path: Path, settings: Settings) -> int:
    from voipflow.dashboards.cities import city_columns, read_cities
    from voipflow.storage.clickhouse import ClickHouseError, SchemaError, connect

    try:
        cities = read_cities(path)
    except CityTableError as exc:
        print(f"voipflow dashboards cities: {exc}", file=sys.stderr)
        return 1
    try:
        ch = connect(settings.clickhouse, settings.data_dir)
        try:
            ch.insert("cities", city_columns(cities))
        finally:
            ch.close()
    except SchemaError as exc:
        print(
            f"voipflow dashboards cities: {exc} (run `voipflow db migrate` first)",
            file=sys.stderr,
        )
        return 1
    except ClickHouseError as exc:
        print(f"voipflow dashboards cities: {exc}", file=sys.stderr)
        return 1
    print(f"{len(cities)} cities loaded from {path}")
    return 0
