"""The report drawn by headless Chromium from known rows in chdb.

Rows go into a real chdb database (:mod:`tests.report.rows`); the report is
rendered and opened in Debian's ``chromium`` (``--dump-dom`` for the drawn
DOM with the console log on stderr, ``--screenshot`` for a PNG kept in
``var/test-artifacts/report/``, ``--print-to-pdf`` for the PDF). The numbers
the page shows are compared with the panels' SQL run separately, expanded by
the test suite's Grafana stand-in (:mod:`tests.dashboards.grafana_sim`;
Grafana cannot run here), and the headline minutes with a model computed
here from the inserted windows.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboards.grafana_sim import Request, panel_interval_ms
from tests.dashboards.panels import expand, migrated_database, selection
from tests.fixtures.paths import REPO
from tests.report import dom
from tests.report.rows import APPS, CITY_INFO, EXPORTERS, GAP_EXPORTER, insert_all
from voipflow.dashboards.build import load
from voipflow.report import chromium
from voipflow.report.charts import epoch
from voipflow.report.queries import FIGURES, ReportData, Selection, fetch, panel_of
from voipflow.report.render import render
from voipflow.report.svg import num, pct

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed"),
]

ARTIFACTS = REPO / "var" / "test-artifacts" / "report"
NOW = int(time.time()) // 60 * 60
SEL = Selection(NOW - 7 * 86400, NOW)
#: <svg> elements each section must hold when it has data.
SVGS = {
    "map": 1,
    "trends": 2,
    "top-cities": 1,
    "apps": 1,
    "classifier": 2,
    "coverage": 2,
    "rules": 2,
}


@pytest.fixture(scope="module")
def db(chdb_dir: Path) -> Iterator[tuple[Any, list[Any]]]:
    with migrated_database(chdb_dir) as ch:
        windows = insert_all(ch, NOW)
        yield ch, windows


@pytest.fixture(scope="module")
def data(db: tuple[Any, list[Any]]) -> ReportData:
    return fetch(db[0], SEL)


@pytest.fixture(scope="module")
def page(data: ReportData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render(data, source="test database"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def drawn(page: Path) -> tuple[list[dom.Element], str]:
    res = chromium.dump_dom(page)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "</svg>" in res.stdout
    return dom.parse(res.stdout), res.stderr


def _panel_sql(ch: Any, key: str, interval_s: int = 60) -> Any:
    """The figure's panel SQL run as Grafana would send it (the stand-in's expansion).

    Time series take the report's bucket width (Grafana's depends on the
    panel's width in pixels where the panel sets no maximum of data points).
    """
    panel = panel_of(key, load())
    f_ms, t_ms = SEL.from_s * 1000, SEL.to_s * 1000
    req = Request(
        f_ms,
        t_ms,
        interval_s * 1000,
        {
            "city": selection("city", sorted(CITY_INFO), None),
            "app": selection("app", list(APPS), None),
            "exporter": selection("exporter", list(EXPORTERS), None),
        },
    )
    (target,) = panel["targets"]
    return ch.query(expand(target["rawSql"], req)).dicts()


def _data(elements: list[dom.Element], cls: str, section: str) -> list[dict[str, str]]:
    return [
        e.attrs
        for e in elements
        if e.section == section and cls in e.attrs.get("class", "").split()
    ]


def test_every_chart_drew_without_console_errors(drawn: tuple[list[dom.Element], str]) -> None:
    elements, log = drawn
    assert dom.by_section(elements, "svg") == SVGS
    for e in elements:
        if e.tag == "svg":
            assert len(e.children) > 3, e.attrs  # marks, not an empty frame
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert console == []
    sections = [e.attrs["id"] for e in elements if e.tag == "section"]
    assert sections == ["summary", *SVGS, "sources"]


def test_page_needs_no_network(page: Path, drawn: tuple[list[dom.Element], str]) -> None:
    elements, _ = drawn
    assert [e for e in elements if e.tag in ("script", "link", "img", "iframe")] == []
    for e in elements:
        for name, value in e.attrs.items():
            if name in ("src", "href") or name.endswith(":href"):
                raise AssertionError(f"{e.tag} refers to {value}")
    assert not re.search(r"url\(|@import|https?://(?!www\.w3\.org/2000/svg)", page.read_text())


def test_headline_numbers_are_the_panels(db: Any, drawn: Any) -> None:
    ch, windows = db
    elements, _ = drawn
    kpis = {e.attrs["data-figure"]: e for e in elements if e.attrs.get("class") == "kpi"}
    assert set(kpis) == {"minutes", "subscribers", "calls", "share", "cities"}
    for key, fmt in (
        ("minutes", num),
        ("subscribers", num),
        ("calls", num),
        ("cities", num),
        ("share", lambda v: pct(v, 2)),
    ):
        (row,) = _panel_sql(ch, key)
        (want,) = row.values()
        assert kpis[key].find("span")[0].text() == fmt(want)
        assert float(kpis[key].attrs["data-value"]) == pytest.approx(want, rel=1e-12)
    # And the figure itself, from the windows inserted: a 7-day range reads hourly rows,
    # each counted when its hour starts inside the range.
    model = sum(w.call_seconds for w in windows if SEL.from_s <= w.ws // 3600 * 3600 <= SEL.to_s)
    assert float(kpis["minutes"].attrs["data-value"]) == pytest.approx(model / 60, rel=1e-9)


def test_map_circles_are_the_map_panel(db: Any, drawn: Any) -> None:
    ch, _ = db
    elements, _ = drawn
    circles = {a["data-city"]: a for a in _data(elements, "city", "map")}
    want = {r["city"]: r for r in _panel_sql(ch, "map")}
    assert set(circles) == set(want) == {c for c, v in CITY_INFO.items() if v[2] is not None}
    for city, r in want.items():
        assert float(circles[city]["data-minutes"]) == pytest.approx(r["voip_minutes"])
        assert float(circles[city]["data-share"]) == pytest.approx(r["voip_share"])
        assert 0 < r["voip_share"] < 1
    radius = {c: float(a["r"]) for c, a in circles.items()}
    biggest = max(want, key=lambda c: want[c]["voip_minutes"])
    assert radius[biggest] == max(radius.values())


def test_app_series_sum_to_the_panels(db: Any, drawn: Any, data: ReportData) -> None:
    ch, _ = db
    elements, _ = drawn
    charts = [e for e in elements if e.tag == "svg" and e.section == "trends"]
    keys = (("minutes_by_app", "voip_minutes"), ("subscribers_by_app", "subscribers"))
    for svg, (key, value) in zip(charts, keys, strict=True):
        panel = panel_of(key, load())
        # The panels set their maximum of data points: minutes are bucketed as Grafana
        # does, subscribers per day over ranges of days.
        iv_ms = panel_interval_ms(panel, SEL.from_s * 1000, SEL.to_s * 1000)
        assert iv_ms == 3_600_000
        want_s = 86400 if key == "subscribers_by_app" else 3600
        assert data.interval_s[key] == want_s
        rows = _panel_sql(ch, key, data.interval_s[key])
        assert rows
        totals: dict[str, float] = defaultdict(float)
        for r in rows:
            totals[r["app"]] += r[value]
        drawn_totals = {
            a.attrs["data-app"]: float(a.attrs["data-total"])
            for a in svg.find("polygon") + svg.find("g")
            if "area" in a.attrs.get("class", "")
        }
        top = sorted(totals, key=lambda a: -totals[a])
        # Seven apps in colour (ranked by minutes), the rest together in grey.
        assert len(drawn_totals) == 8 and "other apps" in drawn_totals
        if key == "minutes_by_app":
            for app in top[:7]:
                assert drawn_totals[app] == pytest.approx(totals[app])
        assert sum(drawn_totals.values()) == pytest.approx(sum(totals.values()))


def test_top_cities_table_and_bars(db: Any, drawn: Any) -> None:
    ch, _ = db
    elements, _ = drawn
    want = _panel_sql(ch, "top_cities")
    assert [r["city"] for r in want] == [r[0] for r in dom.table_rows(elements, "top-cities")]
    for r, cells in zip(want, dom.table_rows(elements, "top-cities"), strict=True):
        assert cells[1] == num(r["voip_minutes"])
        assert cells[2] == num(r["voip_minutes_week_before"])
        assert r["voip_minutes_week_before"] > 0  # two weeks of rows: every city had a week before
        sign = "+" if r["change"] > 0 else "−"
        assert cells[3] == sign + pct(abs(r["change"]))
    bars = {a["data-city"]: float(a["data-minutes"]) for a in _data(elements, "bar", "top-cities")}
    assert bars == pytest.approx({r["city"]: r["voip_minutes"] for r in want})


def test_app_shares_add_up_per_city(db: Any, drawn: Any) -> None:
    elements, _ = drawn
    per_city: dict[str, float] = defaultdict(float)
    for a in _data(elements, "seg", "apps"):
        per_city[a["data-city"]] += float(a["data-share"])
    assert set(per_city) == set(CITY_INFO)
    for total in per_city.values():
        assert total == pytest.approx(1.0)


def test_classifier_section(db: Any, drawn: Any) -> None:
    ch, _ = db
    elements, _ = drawn
    bins = {a["data-bucket"]: a for a in _data(elements, "bin", "classifier")}
    for r in _panel_sql(ch, "confidence"):
        b = bins[f"{float(r['confidence_from']):.1f}"]
        assert (int(b["data-voip"]), int(b["data-other"])) == (r["voip_flows"], r["other_flows"])
    shares = {a["data-name"]: float(a["data-share"]) for a in _data(elements, "bar", "classifier")}
    want = {r["evidence_kind"]: r["share"] for r in _panel_sql(ch, "evidence")}
    assert shares == pytest.approx(want)
    assert shares["udp"] == pytest.approx(1.0)  # every VoIP flow of the rows is UDP


def test_coverage_shows_placed_flows_and_the_gap(db: Any, drawn: Any) -> None:
    ch, _ = db
    elements, _ = drawn
    segs = _data(elements, "seg", "coverage")
    for r in _panel_sql(ch, "coverage"):
        mine = {
            a["data-part"]: int(a["data-flows"])
            for a in segs
            if a["data-exporter"] == r["exporter_ip"]
        }
        assert mine == {"placed": r["placed"], "unlocated": r["unlocated"], "unhomed": r["unhomed"]}
    gaps = {
        a["data-exporter"]: int(a["data-gaps"]) for a in _data(elements, "exporter", "coverage")
    }
    assert set(gaps) == set(EXPORTERS)
    assert gaps[GAP_EXPORTER] >= 4  # 300 silent minutes: at least four whole hours
    assert all(gaps[e] == 0 for e in EXPORTERS if e != GAP_EXPORTER)


def test_rules_section_is_marked_and_counts_hits(db: Any, drawn: Any, data: ReportData) -> None:
    ch, _ = db
    elements, _ = drawn
    (section,) = [e for e in elements if e.tag == "section" and e.attrs.get("id") == "rules"]
    assert "marked" in section.attrs["class"]
    hits: dict[str, float] = defaultdict(float)
    for r in _panel_sql(ch, "rule_hits", data.interval_s["rule_hits"]):
        hits[r["rule_id"]] += r["hits_per_s"] * data.interval_s["rule_hits"]
    drawn_hits = {a["data-rule"]: float(a["data-hits"]) for a in _data(elements, "rule", "rules")}
    assert drawn_hits == pytest.approx(dict(hits))
    table = {r[0]: r for r in dom.table_rows(elements, "rules")}
    for r in _panel_sql(ch, "rules"):
        assert table[r["rule_id"]][5] == num(r["hits"])
    kinds = {a["data-kind"] for a in _data(elements, "event", "rules")}
    assert {"published", "applied", "failed"} <= kinds


def test_rule_effect_is_the_panels_and_the_windows(db: Any, drawn: Any) -> None:
    """Before / while-applied call minutes drawn = the Rule effect panel's SQL = the windows."""
    ch, windows = db
    elements, _ = drawn
    sql = {r["rule_id"]: r for r in _panel_sql(ch, "rule_effect")}
    marks = {a["data-rule"]: a for a in _data(elements, "effect-mark", "rules")}
    assert set(marks) == set(sql) == {"r-block-sip-berlin", "r-throttle-zoom"}
    for rid, r in sql.items():
        m = marks[rid]
        assert float(m["data-before"]) == pytest.approx(r["call_seconds_before"] / 60)
        assert float(m["data-after"]) == pytest.approx(r["call_seconds_after"] / 60)
        if r["leakage"] is None:
            assert m["data-leakage"] == ""
        else:
            assert float(m["data-leakage"]) == pytest.approx(r["leakage"])
    table = {r[0]: r for r in dom.table_rows(elements, "rule-effect")}
    for rid, r in sql.items():
        assert table[rid][4:] == [
            num(r["call_seconds_before"] / 60),
            num(r["call_seconds_after"] / 60),
            num(r["bytes_before"]),
            num(r["bytes_after"]),
            pct(r["leakage"]),
        ]
    # The block of Berlin's sip from its first applied feedback (rows.py: 3 days ago,
    # minute 2) to the end of the range, against as long before, from the windows.
    berlin = sql["r-block-sip-berlin"]
    t_on = NOW - 3 * 86400 + 120
    assert epoch(berlin["applied_at"]) == t_on
    t_before = t_on - (SEL.to_s - t_on)
    mine = [w for w in windows if (w.city, w.app) == ("Berlin", "sip")]
    before = sum(w.call_seconds for w in mine if t_before <= w.ws < t_on)
    after = sum(w.call_seconds for w in mine if t_on <= w.ws < SEL.to_s)
    assert before > 0 and after > 0
    assert (berlin["call_seconds_before"], berlin["call_seconds_after"]) == pytest.approx(
        (before, after)
    )
    assert berlin["leakage"] == pytest.approx(after / before)
    # A rule for every city has no one city to measure: zeros, no leakage.
    assert sql["r-throttle-zoom"]["call_seconds_after"] == 0
    assert sql["r-throttle-zoom"]["leakage"] is None


def test_screenshot_is_kept(page: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    res = chromium.screenshot(page, shot, width=900, height=4200)
    assert res.returncode == 0, res.stderr[-2000:]
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (900, 4200)
    shutil.copy(page, ARTIFACTS / "report.html")


def test_pdf_is_a4(page: Path, tmp_path: Path) -> None:
    pdf = chromium.print_pdf(page, tmp_path / "report.pdf")
    body = pdf.read_bytes()
    assert body.startswith(b"%PDF-")
    boxes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", body)
    assert boxes, "no page boxes in the PDF"
    # A4 is 595.28 x 841.89 points; Chromium rounds to whole device pixels.
    for w, h in boxes:
        assert abs(float(w) - 595.3) < 1.5 and abs(float(h) - 841.9) < 1.5, (w, h)
    assert len(boxes) >= 2  # the whole report does not fit one page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(pdf, ARTIFACTS / "report.pdf")


def test_console_errors_would_be_seen(tmp_path: Path) -> None:
    """The console check above can fail: a page that logs an error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>console.error('drawing failed')</script>")
    res = chromium.dump_dom(bad)
    assert any("CONSOLE" in line and "drawing failed" in line for line in res.stderr.splitlines())


def test_figures_all_used(data: ReportData) -> None:
    assert set(data.results) == set(FIGURES)
