"""Running dashboard panels' SQL on chdb the way Grafana would send it.

A migrated database per test module (its own random name in the session's
chdb directory), the panels of a dashboard, and :func:`run` which expands a
panel's query with :mod:`tests.dashboards.grafana_sim` (the stand-in for
Grafana, which cannot run here) and executes it on the real engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.dashboards.grafana_sim import Request, Variable, interpolate, leftover
from voipflow.storage.clickhouse.base import QueryResult
from voipflow.storage.clickhouse.embedded import EmbeddedClickHouse
from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions
from voipflow.storage.config import ClickHouseConfig


@contextmanager
def migrated_database(chdb_dir: Path) -> Iterator[EmbeddedClickHouse]:
    ch = EmbeddedClickHouse(chdb_dir, "dash_" + os.urandom(5).hex())
    ch.ensure_database()
    try:
        Migrator(ch, RenderOptions.from_config(ClickHouseConfig(), ch.database)).migrate()
        yield ch
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {ch.database} SYNC")
        ch.close()


def panels(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Title -> panel, rows left out."""
    return {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in dashboard["templating"]["list"] if v["name"] == name)


def expand(sql: str, request: Request) -> str:
    out = interpolate(sql, request)
    assert leftover(out) == [], f"not expanded: {leftover(out)} in\n{out}"
    return out


def run(ch: EmbeddedClickHouse, panel: dict[str, Any], request: Request) -> QueryResult:
    (target,) = panel["targets"]
    return ch.query(expand(target["rawSql"], request))


def variable_values(
    ch: EmbeddedClickHouse, dashboard: dict[str, Any], name: str, request: Request
) -> list[str]:
    """What the variable's query lists (its first column), as Grafana would show it."""
    res = ch.query(expand(variable(dashboard, name)["query"]["rawSql"], request))
    return [str(r[0]) for r in res.rows]


def epoch(value: datetime | Any) -> int:
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


def selection(name: str, options: list[str], chosen: list[str] | None) -> Variable:
    """A multi-value variable with ``options``; ``chosen`` None means All."""
    return Variable(name, list(options), current=list(chosen) if chosen else ["$__all"])
