"""ClickHouse's own Python client against the served engine: every panel, every analyst query.

clickhouse-connect talks HTTP the way it talks to a ClickHouse server: it
probes the server at connect time, sends its settings as URL parameters and
reads results in the Native format, which the engine renders. Over that
connection:

* every dashboard panel, with its SQL expanded by the Grafana stand-in
  (:mod:`tests.dashboards.grafana_sim`; Grafana cannot run here) for each
  scenario of the panel tests, is checked by the same check functions as
  the panel tests, on the same data (their fixtures build it);
* every analyst query of ``schemas/clickhouse/queries`` (those of
  ``docs/sql.md``) answers what chdb in this process answers.
"""

from __future__ import annotations

import datetime as dt
import inspect
import ipaddress
import math
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tests.dashboards.test_health_panels as health_t
import tests.dashboards.test_rules_panels as rules_t
import tests.dashboards.test_usage_panels as usage_t
from tests.dashboards.panels import epoch, expand, migrated_database
from tests.storage.sinkdata import health_message, traffic_message
from voipflow.storage.clickhouse.base import QueryResult
from voipflow.storage.clickhouse.http_server import ClickHouseHTTPServer
from voipflow.storage.clickhouse.migrations import MIGRATIONS_DIR
from voipflow.storage.config import ClickHouseConfig
from voipflow.storage.sink.tables import combine, parse_health, parse_traffic

clickhouse_connect = pytest.importorskip("clickhouse_connect")

USER, PASSWORD = "grafana", "pw-for-tests"
QUERIES = sorted((MIGRATIONS_DIR / "queries").glob("*.sql"))


# The panel tests' data, built by their own fixtures (unwrapped from pytest's
# fixture objects so they can be used here under other names).
@pytest.fixture(scope="module")
def usage_db(chdb_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from inspect.unwrap(usage_t.ch)(chdb_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def rules_db(chdb_dir: Path) -> Iterator[Any]:
    yield from inspect.unwrap(rules_t.ch)(chdb_dir)


@pytest.fixture(scope="module")
def health_db(chdb_dir: Path) -> Iterator[Any]:
    yield from inspect.unwrap(health_t.ch)(chdb_dir)


@pytest.fixture(scope="module")
def traffic_db(chdb_dir: Path) -> Iterator[Any]:
    """Exporter traffic and health of the last hours (the panel tests' are older)."""
    minute = (int(time.time()) // 60 - 90) * 60_000
    messages = [
        traffic_message(minute + m * 60_000, exporter, domain, flows=7 * m + domain + 1)
        for m in range(0, 90, 3)
        for exporter in ("192.0.2.1", "2001:db8::7")
        for domain in (0, 256)
    ]
    reports = [
        health_message(minute + m * 60_000, exporter, 100 + m)
        for m in range(0, 90, 10)
        for exporter in ("192.0.2.1", "2001:db8::7")
    ]
    with migrated_database(chdb_dir) as ch:
        cols, _ = combine([parse_traffic(m) for m in messages])
        ch.insert("exporter_traffic_1m", cols)
        cols, _ = combine([parse_health(r) for r in reports])
        ch.insert("exporter_health", cols)
        yield ch


@pytest.fixture(scope="module")
def server(chdb_dir: Path) -> Iterator[ClickHouseHTTPServer]:
    cfg = ClickHouseConfig(http_listen="127.0.0.1:0", http_user=USER, http_password=PASSWORD)
    srv = ClickHouseHTTPServer(cfg, chdb_dir)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _client(server: ClickHouseHTTPServer, database: str) -> Any:
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=port, username=USER, password=PASSWORD, database=database
    )


def _value(v: Any) -> Any:
    """clickhouse-connect's Python values as the Arrow path gives them."""
    if isinstance(v, dt.datetime) and v.tzinfo is None:
        return v.replace(tzinfo=dt.UTC)  # the engine's timezone is UTC
    if isinstance(v, ipaddress.IPv6Address | ipaddress.IPv4Address):
        return str(v)
    return v


def _result(res: Any) -> QueryResult:
    rows = [tuple(_value(v) for v in r) for r in res.result_rows]
    return QueryResult(list(res.column_names), rows)


def _panel_cases(module: Any) -> list[Any]:
    return [
        pytest.param(module, title, sc, id=f"{module.DASH['uid']}-{title}-{sc.name}")
        for sc in module.SCENARIOS
        for title in module.CHECKS
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "title", "sc"),
    _panel_cases(usage_t) + _panel_cases(rules_t) + _panel_cases(health_t),
)
def test_every_panel_over_http(
    request: pytest.FixtureRequest, server: ClickHouseHTTPServer, module: Any, title: str, sc: Any
) -> None:
    db_fixture = {usage_t: "usage_db", rules_t: "rules_db", health_t: "health_db"}[module]
    db = request.getfixturevalue(db_fixture)
    panel = module.PANELS[title]
    (target,) = panel["targets"]
    sql = expand(target["rawSql"], sc.request(panel))
    client = _client(server, db.database)
    try:
        res = _result(client.query(sql))
    finally:
        client.close()
    if not res.rows:
        # The Native format carries no column names without rows (as from a
        # ClickHouse server): take them from the engine, the rows stay HTTP's.
        res = QueryResult(db.query(sql).columns, [])
    module.CHECKS[title](res, sc, panel)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | Decimal) or isinstance(b, float | Decimal):
        fa, fb = float(a), float(b)
        return (math.isnan(fa) and math.isnan(fb)) or math.isclose(fa, fb, rel_tol=1e-9)
    if isinstance(a, dt.datetime) or isinstance(b, dt.datetime):
        # chdb's Arrow output gives some DateTime results as epoch seconds.
        return epoch(a) == epoch(b)
    if isinstance(a, bytes) != isinstance(b, bytes):
        return False
    return bool(a == b)


@pytest.mark.slow
@pytest.mark.parametrize("path", QUERIES, ids=[p.stem for p in QUERIES])
def test_analyst_queries_over_http_answer_as_chdb(
    server: ClickHouseHTTPServer,
    usage_db: Any,
    rules_db: Any,
    health_db: Any,
    traffic_db: Any,
    path: Path,
) -> None:
    sql = path.read_text()
    answered = 0
    for db in (usage_db, rules_db, health_db, traffic_db):
        want = db.query(sql)
        client = _client(server, db.database)
        try:
            got = _result(client.query(sql))
        finally:
            client.close()
        assert len(got.rows) == len(want.rows), db.database
        if got.rows:  # Native carries column names only with rows
            assert got.columns == want.columns
        for g, w in zip(got.rows, want.rows, strict=True):
            differ = [(x, y) for x, y in zip(g, w, strict=True) if not _same(x, y)]
            assert not differ, (g, w)
        answered += len(got.rows)
    assert answered > 0, "no data set gives this query rows"


def test_client_sees_a_read_only_server(server: ClickHouseHTTPServer, usage_db: Any) -> None:
    client = _client(server, usage_db.database)
    try:
        assert client.command("SELECT getSetting('readonly')") == 1
        with pytest.raises(clickhouse_connect.driver.exceptions.DatabaseError, match="164"):
            client.command("TRUNCATE TABLE flows_voip")
        with pytest.raises(clickhouse_connect.driver.exceptions.DatabaseError, match="164"):
            client.insert("cities", [["X", "Y", "Z", 1.0, 2.0, 0]])
        assert client.query("SELECT count() FROM flows_voip").result_rows[0][0] > 0
    finally:
        client.close()
