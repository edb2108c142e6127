"""The dashboards' JSON: generated, committed, well formed, wired to provisioning.

Grafana cannot run here, so what Grafana would refuse or draw wrongly is
checked on the JSON itself: committed files equal the generator's output,
panel ids are unique, every panel sits inside the 24-column grid without
overlapping another, every panel queries the ClickHouse data source through
the ``${datasource}`` variable, every variable a query names exists and every
``$__`` macro is one the ClickHouse data source expands.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.paths import REPO
from voipflow.dashboards import StaleDashboards
from voipflow.dashboards.build import DASHBOARD_DIR, DASHBOARDS, check, load, render, stale
from voipflow.dashboards.grafana import (
    DATASOURCE_TYPE,
    DEFAULT_DATASOURCE_UID,
    GRID_COLUMNS,
    layout,
    row,
    stat,
)

DASHBOARDS_JSON = load()
#: Macros the ClickHouse data source expands (frontend and backend).
PLUGIN_MACROS = {
    "conditionalAll",
    "fromTime",
    "toTime",
    "fromTime_ms",
    "toTime_ms",
    "timeFilter",
    "timeFilter_ms",
    "dateFilter",
    "dateTimeFilter",
    "dt",
    "timeInterval",
    "timeInterval_ms",
    "interval_s",
}


def _queries(d: dict[str, Any]) -> list[str]:
    out = [t["rawSql"] for p in d["panels"] for t in p.get("targets", [])]
    out += [v["query"]["rawSql"] for v in d["templating"]["list"] if v["type"] == "query"]
    return out


def test_committed_json_is_the_generators_output() -> None:
    assert stale() == []
    check()
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted(DASHBOARDS)


def test_check_notices_an_edited_file(tmp_path: Path) -> None:
    for name in DASHBOARDS:
        shutil.copy(DASHBOARD_DIR / name, tmp_path / name)
    check(tmp_path)
    edited = tmp_path / "rules.json"
    edited.write_text(edited.read_text().replace('"Rules"', '"Rulez"'))
    assert stale(tmp_path) == ["rules.json"]
    with pytest.raises(StaleDashboards, match=r"rules\.json"):
        check(tmp_path)
    cmd = [sys.executable, "dashboards/build.py", "--check", "--out", str(tmp_path)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "rules.json" in res.stderr
    res = subprocess.run(
        [*cmd[:2], "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert stale(tmp_path) == []


def test_render_is_deterministic() -> None:
    assert render() == render()


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_are_well_formed(name: str) -> None:
    d = DASHBOARDS_JSON[name]
    assert d["schemaVersion"] >= 39  # Grafana 11 and later
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= GRID_COLUMNS, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["title"] and p["description"]
        assert p["datasource"] == {"type": DATASOURCE_TYPE, "uid": "${datasource}"}
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            # A query (WITH names subqueries of one), never a statement that writes.
            assert t["rawSql"].lstrip().upper().startswith(("SELECT", "WITH ")), p["title"]
            assert t["format"] in (0, 1)
            assert (t["format"] == 0) == (p["type"] == "timeseries"), p["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_variables_resolve(name: str) -> None:
    d = DASHBOARDS_JSON[name]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == DATASOURCE_TYPE
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${datasource}"
            assert v["includeAll"] and v["multi"]
    used: set[str] = set()
    for sql in _queries(d):
        for m in re.finditer(r"\$__(\w+)", sql):
            assert m.group(1) in PLUGIN_MACROS, f"unknown macro $__{m.group(1)}"
        for m in re.finditer(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)", sql):
            used.add(m.group(1) or m.group(3))
    assert used <= set(variables), used - set(variables)
    declared = set(variables) - {"datasource"}
    assert declared <= used, f"declared but never used: {declared - used}"


def test_uids_titles_unique() -> None:
    uids = [d["uid"] for d in DASHBOARDS_JSON.values()]
    titles = [d["title"] for d in DASHBOARDS_JSON.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


def test_provisioning_loads_these_files_with_this_data_source() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    provider = yaml.safe_load(
        (REPO / "dashboards/provisioning/dashboards/voipflow.yaml").read_text()
    )["providers"][0]
    assert f"./dashboards:{provider['options']['path']}:ro" in mounts
    datasource = yaml.safe_load(
        (REPO / "dashboards/provisioning/datasources/clickhouse.yaml").read_text()
    )["datasources"][0]
    assert datasource["type"] == DATASOURCE_TYPE
    assert datasource["uid"] == DEFAULT_DATASOURCE_UID


def test_layout_wraps_and_refuses_wide_panels() -> None:
    a, b, c = (stat(t, "SELECT 1", description="d", w=10) for t in "abc")
    placed = layout([row("r"), a, b, c])
    assert [p["gridPos"] for p in placed] == [
        {"x": 0, "y": 0, "w": 24, "h": 1},
        {"x": 0, "y": 1, "w": 10, "h": 4},
        {"x": 10, "y": 1, "w": 10, "h": 4},
        {"x": 0, "y": 5, "w": 10, "h": 4},
    ]
    with pytest.raises(ValueError, match="width 25"):
        layout([stat("x", "SELECT 1", description="d", w=25)])
