"""The report's SQL is the dashboards' SQL, expanded as Grafana would expand it."""

from __future__ import annotations

import re

import pytest

from tests.dashboards.grafana_sim import Request, Variable, interpolate
from voipflow.dashboards.build import DASHBOARD_DIR, load
from voipflow.dashboards.rollups import Retention
from voipflow.report.grafana_sql import PanelRequest, expand, panel_interval_ms
from voipflow.report.make import parse_when, selection_for
from voipflow.report.queries import FIGURES, Selection, _dashboards, figure_sql, panel_of

COMMITTED = load(DASHBOARD_DIR)


@pytest.mark.parametrize("key", sorted(FIGURES))
def test_every_figure_is_a_committed_panels_sql(key: str) -> None:
    """The text the report runs is the rawSql of the panel in dashboards/*.json."""
    built = _dashboards(Retention())
    assert figure_sql(key, built) == figure_sql(key, COMMITTED)
    assert panel_of(key, COMMITTED)["title"] == FIGURES[key].panel


def test_a_changed_panel_would_be_noticed() -> None:
    boards = _dashboards(Retention())
    panel = panel_of("minutes", boards)
    panel["targets"][0]["rawSql"] = panel["targets"][0]["rawSql"].replace("/ 60", "/ 61")
    assert figure_sql("minutes", boards) != figure_sql("minutes", COMMITTED)
    panel["title"] = "renamed"
    with pytest.raises(KeyError, match="VoIP minutes"):
        panel_of("minutes", boards)


SELECTIONS = [
    ((), ()),
    (("Berlin",), ()),
    (("L'Aquila", "Paris"), ("sip", "teams")),
    ((), ("whatsapp",)),
]


@pytest.mark.parametrize("cities,apps", SELECTIONS)
@pytest.mark.parametrize("key", sorted(FIGURES))
def test_expansion_is_the_grafana_stand_ins(
    key: str, cities: tuple[str, ...], apps: tuple[str, ...]
) -> None:
    """Same range, bucket and selection: the report sends ClickHouse what Grafana sends."""
    sel = Selection(1_700_000_000, 1_700_000_000 + 7 * 86400, cities, apps)
    panel = panel_of(key, COMMITTED)
    req = sel.request(panel)
    mine = expand(figure_sql(key, COMMITTED), req, {"city": (), "app": (), "exporter": ()})

    def var(name: str, chosen: tuple[str, ...]) -> Variable:
        return Variable(name, ["x"], current=list(chosen) if chosen else ["$__all"])

    theirs = interpolate(
        figure_sql(key, COMMITTED),
        Request(
            req.from_ms,
            req.to_ms,
            req.interval_ms,
            {"city": var("city", cities), "app": var("app", apps), "exporter": var("exporter", ())},
        ),
    )
    assert mine == theirs
    assert "$" not in mine


def test_buckets_follow_grafanas_steps() -> None:
    week = 7 * 86400 * 1000
    assert panel_interval_ms(0, week, 200, "1m") == 3_600_000
    assert panel_interval_ms(0, 3 * 3600 * 1000, 200, "1m") == 60_000
    assert panel_interval_ms(0, 3 * 3600 * 1000, 200, "10s") == 60_000
    assert panel_interval_ms(0, 600 * 1000, 200, "10s") == 10_000
    with pytest.raises(ValueError, match="bad panel interval"):
        panel_interval_ms(0, week, 200, "soon")


def test_unknown_macros_are_refused() -> None:
    req = PanelRequest(0, 1000)
    with pytest.raises(ValueError, match=r"\$__unixEpochFilter"):
        expand("SELECT 1 WHERE $__unixEpochFilter(t)", req, {})
    with pytest.raises(ValueError, match="two arguments"):
        expand("SELECT $__conditionalAll(a = 1)", req, {})
    quoted = expand(
        "SELECT 1 WHERE $__conditionalAll(city IN (${city:singlequote}), $city)",
        PanelRequest(0, 1000, selected={"city": ["L'Aquila"]}),
        {"city": ()},
    )
    assert quoted == "SELECT 1 WHERE city IN ('L\\'Aquila')"


def test_when() -> None:
    now = 1_800_000_000
    assert parse_when("7d", now) == now - 7 * 86400
    assert parse_when("36h", now) == now - 36 * 3600
    assert parse_when("90m", now) == now - 90 * 60
    assert parse_when("2w", now) == now - 14 * 86400
    assert parse_when("now", now) == now
    assert parse_when("2027-01-01", now) == 1_798_761_600
    assert parse_when("2027-01-01T01:00+01:00", now) == 1_798_761_600
    with pytest.raises(ValueError, match=re.escape("7d, 36h")):
        parse_when("last week", now)
    sel = selection_for("7d", "now", ("Berlin",), now=now + 59)
    assert (sel.from_s, sel.to_s, sel.cities) == (now - 7 * 86400, now, ("Berlin",))
    with pytest.raises(ValueError, match="before"):
        selection_for("1d", "2d", now=now)
