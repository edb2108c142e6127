"""The report's figures: which Grafana panel each comes from, and running them.

Each figure names a dashboard and a panel title; its SQL is that panel's
``rawSql`` as the dashboard definitions build it (:mod:`voipflow.dashboards.usage`,
:mod:`voipflow.dashboards.health`, :mod:`voipflow.dashboards.rules`, with the same usage-table
retention as ``voipflow dashboards build``), expanded for the report's range
and selection by :mod:`voipflow.report.grafana_sql`. No SQL is written here,
so a figure in the report is the panel's figure in Grafana; a test checks the
texts against the committed dashboard JSON.

This is the one module of the report that talks to ClickHouse (through the
project's backend layer, chdb or a server); the rest works on
:class:`ReportData`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voipflow.dashboards import health, rules, usage
from voipflow.dashboards.rollups import Retention
from voipflow.report import ReportQueryError
from voipflow.report.grafana_sql import PanelRequest, expand, panel_interval_ms
from voipflow.storage.clickhouse import ClickHouse, ClickHouseError, QueryResult, open_clickhouse

__all__ = [
    "FIGURES",
    "ClickHouse",
    "ClickHouseError",
    "Figure",
    "ReportData",
    "Selection",
    "fetch",
    "figure_sql",
    "open_clickhouse",
    "panel_of",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure of the report: the dashboard file and the panel it comes from."""

    dashboard: str
    panel: str
    #: Ranges at least this long (s) get one bucket per day (0: Grafana's bucket width).
    daily_from_s: int = 0


#: Figure key -> its panel. The keys are what the page and the tests use.
FIGURES: dict[str, Figure] = {
    "minutes": Figure("voip-usage.json", "VoIP minutes"),
    "subscribers": Figure("voip-usage.json", "Distinct subscribers"),
    "calls": Figure("voip-usage.json", "Calls"),
    "share": Figure("voip-usage.json", "VoIP share of traffic"),
    "cities": Figure("voip-usage.json", "Active cities"),
    "map": Figure("voip-usage.json", "VoIP minutes by city"),
    "minutes_by_app": Figure("voip-usage.json", "VoIP minutes by app"),
    # Distinct subscribers per day, not per hour, over ranges of days: the daily
    # active subscribers a report reader asks for, merged from the daily rollup's
    # states (a fraction of the hourly states' merging cost).
    "subscribers_by_app": Figure(
        "voip-usage.json", "Distinct subscribers by app", daily_from_s=3 * 86400
    ),
    "top_cities": Figure("voip-usage.json", "Top cities, week over week"),
    "app_share": Figure("voip-usage.json", "App share per city"),
    "confidence": Figure("voip-usage.json", "Classifier confidence"),
    "evidence": Figure("voip-usage.json", "Evidence mix"),
    "coverage": Figure("pipeline-health.json", "Exporter coverage"),
    "coverage_by_time": Figure("pipeline-health.json", "Exporter coverage by exporter"),
    "rules": Figure("rules.json", "Rules"),
    "rule_hits": Figure("rules.json", "Rule hits by rule"),
    "rule_events": Figure("rules.json", "Rule events"),
    "rule_effect": Figure("rules.json", "Rule effect"),
}


def _dashboards(retention: Retention) -> dict[str, dict[str, Any]]:
    return {
        "voip-usage.json": usage.build(retention),
        "pipeline-health.json": health.build(),
        "rules.json": rules.build(),
    }


def panel_of(key: str, dashboards: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The panel figure ``key`` comes from, in the built (or committed) ``dashboards``."""
    fig = FIGURES[key]
    for p in dashboards[fig.dashboard]["panels"]:
        if p.get("title") == fig.panel and p.get("type") != "row":
            return p
    raise KeyError(f"no panel {fig.panel!r} in {fig.dashboard} for report figure {key!r}")


def figure_sql(key: str, dashboards: Mapping[str, dict[str, Any]]) -> str:
    """The panel SQL of figure ``key``, unexpanded (macros and variables in place)."""
    (target,) = panel_of(key, dashboards)["targets"]
    return str(target["rawSql"])


@dataclass(frozen=True, slots=True)
class Selection:
    """The report's range (epoch seconds, ``to`` exclusive of nothing: as Grafana's) and filters."""

    from_s: int
    to_s: int
    cities: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()

    def request(self, panel: Mapping[str, Any], daily_from_s: int = 0) -> PanelRequest:
        f_ms, t_ms = self.from_s * 1000, self.to_s * 1000
        iv = panel_interval_ms(
            f_ms, t_ms, int(panel.get("maxDataPoints") or 200), panel.get("interval")
        )
        if daily_from_s and self.to_s - self.from_s >= daily_from_s:
            iv = max(iv, 86_400_000)
        chosen: dict[str, Sequence[str]] = {"city": self.cities, "app": self.apps}
        return PanelRequest(f_ms, t_ms, iv, chosen)


#: Variables of the dashboards; All never needs their value lists (every use of
#: a variable sits inside ``$__conditionalAll``), so none are queried.
_OPTIONS: dict[str, Sequence[str]] = {"city": (), "app": (), "exporter": ()}


@dataclass(slots=True)
class ReportData:
    """Every figure's rows, with the SQL that gave them and the bucket widths."""

    selection: Selection
    results: dict[str, QueryResult] = field(default_factory=dict)
    sql: dict[str, str] = field(default_factory=dict)
    interval_s: dict[str, int] = field(default_factory=dict)
    #: Seconds each figure's query took.
    seconds: dict[str, float] = field(default_factory=dict)
    query_s: float = 0.0

    def rows(self, key: str) -> list[dict[str, Any]]:
        return self.results[key].dicts()

    def value(self, key: str) -> Any:
        res = self.results[key]
        return res.rows[0][0] if res.rows and res.rows[0] else None


def fetch(
    ch: ClickHouse,
    selection: Selection,
    retention: Retention | None = None,
    keys: Sequence[str] | None = None,
) -> ReportData:
    """Run every figure's panel SQL on ``ch`` for ``selection``."""
    boards = _dashboards(retention or Retention())
    data = ReportData(selection)
    start = time.perf_counter()
    for key in keys or FIGURES:
        panel = panel_of(key, boards)
        req = selection.request(panel, FIGURES[key].daily_from_s)
        sql = expand(figure_sql(key, boards), req, _OPTIONS)
        t = time.perf_counter()
        try:
            data.results[key] = ch.query(sql)
        except ClickHouseError as exc:
            fig = FIGURES[key]
            raise ReportQueryError(
                f"figure {key!r} (panel {fig.panel!r} of {fig.dashboard}) failed: {exc}; "
                "run `voipflow db migrate` if tables are missing"
            ) from exc
        data.seconds[key] = time.perf_counter() - t
        data.sql[key] = sql
        data.interval_s[key] = req.interval_ms // 1000
    data.query_s = time.perf_counter() - start
    log.info("report queries ran", extra={"figures": len(data.results), "s": data.query_s})
    return data
