"""The page's empty states and its optional rules section, on real chdb databases."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.dashboards.panels import migrated_database
from tests.report import dom
from tests.report.rows import insert_all
from voipflow.report.queries import Selection, fetch
from voipflow.report.render import render

NOW = int(time.time()) // 60 * 60
SEL = Selection(NOW - 7 * 86400, NOW)


def _empty_states(html: str) -> dict[str, str]:
    return {
        e.section: e.text()
        for e in dom.parse(html)
        if e.tag == "p" and e.attrs.get("class") == "empty"
    }


def test_an_empty_database_says_so_in_every_section(chdb_dir: Path) -> None:
    with migrated_database(chdb_dir) as ch:
        html = render(fetch(ch, SEL), source="test")
    empty = _empty_states(html)
    for section in ("map", "trends", "top-cities", "apps"):
        assert empty[section] == "No VoIP seen in this range."
    assert empty["classifier"] == "No classified flow records in this range."
    assert empty["coverage"] == "No traffic windows from any exporter in this range."
    elements = dom.parse(html)
    assert [e for e in elements if e.tag == "svg"] == []
    assert 'id="rules"' not in html
    kpis = {e.attrs["data-figure"]: e.text() for e in elements if e.attrs.get("class") == "kpi"}
    assert kpis["minutes"].startswith("0") and kpis["share"].startswith("–")


@pytest.mark.slow
def test_rules_section_only_when_rules_exist(chdb_dir: Path) -> None:
    with migrated_database(chdb_dir) as ch:
        insert_all(ch, NOW, rules=False)
        without = render(fetch(ch, SEL), source="test")
        ch.execute(
            "INSERT INTO rules (rule_id, version, created, action, city, app, match, "
            "rate_limit_kbps, expires, reason, author, body) VALUES "
            "('r-1', 1, now64(3), 'block', 'Berlin', 'sip', '{}', 0, now64(3), 'x', 'ops', '')"
        )
        with_rule = render(fetch(ch, SEL), source="test")
    assert 'id="rules"' not in without
    assert _empty_states(without) == {}  # every other section has data
    (section,) = [e for e in dom.parse(with_rule) if e.attrs.get("id") == "rules"]
    assert "marked" in section.attrs["class"].split()
    assert "r-1" in section.text()


@pytest.mark.slow
def test_cities_without_coordinates_are_explained(chdb_dir: Path) -> None:
    with migrated_database(chdb_dir) as ch:
        insert_all(ch, NOW, rules=False)
        ch.execute("TRUNCATE TABLE cities")
        html = render(fetch(ch, SEL), source="test")
    assert "voipflow dashboards cities --file" in _empty_states(html)["map"]
    assert "map" not in {e.section for e in dom.parse(html) if e.tag == "svg"}


@pytest.mark.slow
def test_city_and_app_filters_narrow_every_usage_figure(chdb_dir: Path) -> None:
    sel = Selection(SEL.from_s, SEL.to_s, ("Berlin", "L'Aquila"), ("sip", "zoom"))
    with migrated_database(chdb_dir) as ch:
        windows = insert_all(ch, NOW, rules=False)
        data = fetch(ch, sel)
        html = render(data, source="test")
    assert {r["city"] for r in data.rows("map")} == {"Berlin", "L'Aquila"}
    assert {r["city"] for r in data.rows("top_cities")} == {"Berlin", "L'Aquila"}
    assert {r["app"] for r in data.rows("app_share")} == {"sip", "zoom"}
    assert {r["app"] for r in data.rows("minutes_by_app")} == {"sip", "zoom"}
    want = sum(
        w.call_seconds
        for w in windows
        if w.city in sel.cities and w.app in sel.apps and sel.from_s <= w.ws // 3600 * 3600
    )
    assert data.value("minutes") == pytest.approx(want / 60, rel=1e-9)
    assert "cities: Berlin, L'Aquila; apps: sip, zoom" in html
