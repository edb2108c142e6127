"""The Grafana stand-in itself: expansions as the ClickHouse data source does them.

Grafana cannot run here; :mod:`tests.dashboards.grafana_sim` replaces it in
the panel tests, so its expansions are pinned down here against what the
plugin's and Grafana's sources do, and the quoting is checked on chdb.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.dashboards.grafana_sim import (
    ALL,
    Request,
    Variable,
    conditional_all,
    expand_macros,
    interpolate,
    panel_interval_ms,
    replace_variables,
    round_interval,
)

F_MS, T_MS = 1_700_000_000_123, 1_700_003_600_999


def req(interval_ms: int = 60_000, **variables: Variable) -> Request:
    return Request(F_MS, T_MS, interval_ms, dict(variables))


def test_time_macros() -> None:
    r = req()
    assert expand_macros("$__timeFilter(ts)", r) == (
        "ts >= toDateTime(1700000000) AND ts <= toDateTime(1700003600)"
    )
    assert expand_macros("$__timeFilter_ms(ts)", r) == (
        "ts >= fromUnixTimestamp64Milli(1700000000123) AND "
        "ts <= fromUnixTimestamp64Milli(1700003600999)"
    )
    assert (
        expand_macros("$__fromTime, $__toTime", r)
        == "toDateTime(1700000000), toDateTime(1700003600)"
    )
    assert expand_macros("$__toTime_ms", r) == "fromUnixTimestamp64Milli(1700003600999)"
    assert expand_macros("$__dateFilter(d)", r) == (
        "d >= toDate('2023-11-14') AND d <= toDate('2023-11-14')"
    )


def test_interval_macros() -> None:
    assert expand_macros("$__timeInterval(ts)", req(90_000)) == (
        "toStartOfInterval(toDateTime(ts), INTERVAL 90 second)"
    )
    # Below a second the plugin still buckets by one second.
    assert expand_macros("$__timeInterval(ts) $__interval_s", req(500)) == (
        "toStartOfInterval(toDateTime(ts), INTERVAL 1 second) 1"
    )
    assert expand_macros("$__timeInterval_ms(ts)", req(250)) == (
        "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 250 millisecond)"
    )


def test_macro_arguments_keep_nested_calls() -> None:
    assert expand_macros("$__timeFilter(toDateTime(day, 'UTC'))", req()) == (
        "toDateTime(day, 'UTC') >= toDateTime(1700000000) AND "
        "toDateTime(day, 'UTC') <= toDateTime(1700003600)"
    )
    with pytest.raises(ValueError, match="expected 1"):
        expand_macros("$__timeFilter(a, b)", req())


def test_conditional_all() -> None:
    city = Variable("city", ["A", "B"])
    sql = "WHERE $__conditionalAll(city IN (${city:singlequote}), $city) AND x"
    assert conditional_all(sql, {"city": city}) == "WHERE 1=1 AND x"
    city.current = ["A"]
    assert conditional_all(sql, {"city": city}) == "WHERE city IN (${city:singlequote}) AND x"
    city.current = []
    assert conditional_all(sql, {"city": city}) == "WHERE 1=1 AND x"
    two = sql + " OR $__conditionalAll(f(a, b) = 1, ${city})"
    assert conditional_all(two, {"city": Variable("city", ["A"])}) == "WHERE 1=1 AND x OR 1=1"


def test_variable_formats() -> None:
    v = Variable("city", ["Berlin", "L'Aquila", "Paris"], current=["L'Aquila", "Paris"])
    r = req(city=v)
    assert replace_variables("${city:singlequote}", r) == "'L\\'Aquila','Paris'"
    assert replace_variables("${city:sqlstring}", r) == "'L''Aquila','Paris'"
    assert replace_variables("${city:csv}", r) == "L'Aquila,Paris"
    # The data source's own format for a bare $var: quoted list for multi-values.
    assert replace_variables("$city", r) == "'L'Aquila','Paris'"
    v.current = [ALL]
    assert replace_variables("${city:singlequote}", r) == "'Berlin','L\\'Aquila','Paris'"
    v.all_value = ".*"
    assert replace_variables("${city:singlequote}", r) == ".*"
    single = Variable("exporter", ["a"], current=["a"], multi=False)
    assert replace_variables("[[exporter]] ${exporter}", req(exporter=single)) == "a a"
    assert replace_variables("$unknown $__interval_s $__from", r) == (
        f"$unknown $__interval_s {F_MS}"
    )


def test_singlequote_is_safe_on_clickhouse(chdb: Any) -> None:
    """Grafana escapes a quote with a backslash, which ClickHouse reads back as a quote."""
    city = Variable("city", ["L'Aquila", "Paris"])
    sql = interpolate("SELECT [${city:singlequote}] AS v", req(city=city))
    assert chdb.query(sql).rows == [(["L'Aquila", "Paris"],)]


def test_grafana_interval() -> None:
    assert round_interval(432_000) == 300_000
    assert round_interval(3_024_000) == 3_600_000
    assert round_interval(157_680_000) == 86_400_000
    day = 86_400_000
    assert panel_interval_ms({"maxDataPoints": 200, "interval": "1m"}, 0, day) == 300_000
    assert panel_interval_ms({"maxDataPoints": 200, "interval": "1m"}, 0, 3_600_000) == 60_000
    assert panel_interval_ms({}, 0, 6 * 3_600_000) == 20_000
