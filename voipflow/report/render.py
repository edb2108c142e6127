"""The report page: one HTML file with its styles and charts inline.

Sections follow the questions a reader brings: how much (the headline
figures), where (the map), when and on which apps (stacked areas), which
cities grew (week over week), who carries each city (app shares), how sure
the figures are (classifier confidence and evidence), whether every exporter
was heard (coverage and gaps), and, when rules exist, what they did. Each
section says plainly when it has nothing to show. Every figure's source
panel is listed at the end.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from voipflow.report import charts, effect
from voipflow.report.queries import FIGURES, ReportData
from voipflow.report.svg import attr, num, pct, text

#: Cities drawn in the app-share bars and listed week over week.
TOP_CITIES = 15
#: Rules drawn on the timeline (most hits first).
TOP_RULES = 12


def _css() -> str:
    return resources.files("voipflow.report").joinpath("report.css").read_text(encoding="utf-8")


def _when(t: int) -> str:
    return f"{datetime.fromtimestamp(t, UTC):%d %b %Y %H:%M} UTC"


def _empty(message: str) -> str:
    return f'<p class="empty">{text(message)}</p>'


def _section(sid: str, title: str, lead: str, body: str, *, figures: Sequence[str] = ()) -> str:
    figs = " ".join(figures)
    return (
        f'<section id="{sid}" data-figures={attr(figs)}><h2>{text(title)}</h2>'
        f'<p class="lead">{text(lead)}</p>{body}</section>'
    )


def _kpis(d: ReportData) -> str:
    items = [
        ("minutes", "call minutes", lambda v: num(v)),
        ("subscribers", "distinct subscribers", lambda v: num(v)),
        ("calls", "calls", lambda v: num(v)),
        ("share", "VoIP share of traffic", lambda v: pct(v, 2)),
        ("cities", "cities with VoIP", lambda v: num(v)),
    ]
    out = ['<div class="kpis">']
    for key, label, fmt in items:
        v = d.value(key)
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out.append(
            f'<div class="kpi" data-figure="{key}" data-value={attr(repr(v))}>'
            f'<span class="v">{text(fmt(v))}</span><span class="k">{text(label)}</span></div>'
        )
    out.append("</div>")
    return "".join(out)


def _table(head: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]], cls: str) -> str:
    th = "".join(f'<th class="n">{text(h)}</th>' if n else f"<th>{text(h)}</th>" for h, n in head)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="n">{c}</td>' if head[i][1] else f"<td>{c}</td>" for i, c in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _app_order(d: ReportData) -> list[str]:
    totals: dict[str, float] = defaultdict(float)
    for r in d.rows("minutes_by_app"):
        totals[r["app"]] += float(r["voip_minutes"] or 0.0)
    for r in d.rows("app_share"):
        totals.setdefault(r["app"], 0.0)
    return sorted(totals, key=lambda a: (-totals[a], a))


def _usage_sections(d: ReportData) -> list[str]:
    sel = d.selection
    none = "No VoIP seen in this range."
    has_usage = bool(d.rows("top_cities"))
    colours = charts.app_colours(_app_order(d))
    out = []

    map_rows = [r for r in d.rows("map") if r["lat"] is not None]
    if map_rows:
        body = charts.city_map(map_rows)
    elif has_usage:
        body = _empty(
            "VoIP was seen, but no city has coordinates: load them with "
            "`voipflow dashboards cities --file PREFIXES.csv`."
        )
    else:
        body = _empty(none)
    out.append(
        _section(
            "map",
            "Where: VoIP by city",
            "Circle area: call minutes in the range. Colour: VoIP share of the city's traffic, "
            "from the lowest (dark) to the highest (yellow) drawn. Cities without coordinates "
            "are in the tables only.",
            body,
            figures=["map"],
        )
    )

    if has_usage:
        t_body = (
            f"<h3>Call minutes per {_per(d.interval_s['minutes_by_app'])}</h3>"
            + charts.stacked_time(
                d.rows("minutes_by_app"),
                "voip_minutes",
                t0=sel.from_s,
                t1=sel.to_s,
                interval_s=d.interval_s["minutes_by_app"],
                colours=colours,
                label="Call minutes over time per app",
            )
            + f"<h3>Distinct subscribers per {_per(d.interval_s['subscribers_by_app'])}</h3>"
            + charts.stacked_time(
                d.rows("subscribers_by_app"),
                "subscribers",
                t0=sel.from_s,
                t1=sel.to_s,
                interval_s=d.interval_s["subscribers_by_app"],
                colours=colours,
                label="Distinct subscribers over time per app",
            )
            + '<p class="note">Stacked, so a subscriber of two apps counts twice. A bucket '
            "cut by the range's start is left out (rollup rows count when they start inside "
            "the range); the last one is so far.</p>"
        )
    else:
        t_body = _empty(none)
    out.append(
        _section(
            "trends",
            "When: apps over time",
            "Seven apps with the most call minutes in colour, the others in the grey band.",
            t_body,
            figures=["minutes_by_app", "subscribers_by_app"],
        )
    )

    top = d.rows("top_cities")
    if top:
        rows = [
            [
                text(r["city"]),
                num(r["voip_minutes"]),
                num(r["voip_minutes_week_before"]) if r["voip_minutes_week_before"] else "–",
                _change(r["change"]),
            ]
            for r in top
        ]
        body = charts.top_cities(top) + _table(
            [("City", False), ("Call minutes", True), ("Week before", True), ("Change", True)],
            rows,
            "top-cities",
        )
    else:
        body = _empty(none)
    out.append(
        _section(
            "top-cities",
            "Top cities, week over week",
            "The cities with the most call minutes, against the same range one week earlier "
            "(black tick).",
            body,
            figures=["top_cities"],
        )
    )

    cities = [r["city"] for r in top][:TOP_CITIES]
    share_rows = d.rows("app_share")
    body = charts.app_share(share_rows, cities, colours) if share_rows and cities else _empty(none)
    out.append(
        _section(
            "apps",
            "Apps per city",
            "Each app's part of the city's call minutes, for the top cities.",
            body,
            figures=["app_share"],
        )
    )
    return out


def _per(s: int) -> str:
    """A bucket width after "per": day, hour, 6 hours, 5 minutes."""
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if s and s % unit == 0:
            n = s // unit
            return name if n == 1 else f"{n} {name}s"
    return f"{s} seconds"


def _change(c: Any) -> str:
    if c is None or (isinstance(c, float) and not math.isfinite(c)):
        return '<span class="flat">new</span>'
    cls = "up" if c > 0 else "down" if c < 0 else "flat"
    if c >= 9.995:
        return f'<span class="up">×{c + 1:,.0f}</span>'
    sign = "+" if c > 0 else "−" if c < 0 else ""
    return f'<span class="{cls}">{sign}{pct(abs(c))}</span>'


def _classifier(d: ReportData) -> str:
    conf, ev = d.rows("confidence"), d.rows("evidence")
    if not conf:
        body = _empty("No classified flow records in this range.")
    else:
        body = "<h3>Flow records by confidence</h3>" + charts.confidence(conf)
        if ev:
            body += "<h3>Evidence behind the VoIP verdicts</h3>" + charts.share_bars(
                ev, "evidence_kind"
            )
    return _section(
        "classifier",
        "How sure: the classifier",
        "Confidence is the strongest rule that matched (0.5 and up is VoIP); evidence is what "
        "the flows showed. Mostly 0.9 and up, on protocol evidence, means firm figures.",
        body,
        figures=["confidence", "evidence"],
    )


def _coverage(d: ReportData) -> str:
    rows = d.rows("coverage")
    if not rows:
        body = _empty("No traffic windows from any exporter in this range.")
    else:
        exporters = [r["exporter_ip"] for r in rows]
        body = (
            "<h3>Flow records per exporter</h3>"
            + charts.coverage_bars(rows)
            + "<h3>Time covered (a gap: no windows from the exporter)</h3>"
            + charts.coverage_strip(
                d.rows("coverage_by_time"),
                exporters,
                t0=d.selection.from_s,
                t1=d.selection.to_s,
                interval_s=d.interval_s["coverage_by_time"],
            )
            + _table(
                [
                    ("Exporter", False),
                    ("Flow records", True),
                    ("Placed", True),
                    ("Home, no city", True),
                    ("No side home", True),
                    ("Time covered", True),
                ],
                [
                    [
                        f'<span class="mono">{text(r["exporter_ip"])}</span>',
                        num(r["flow_records"]),
                        pct(r["placed_share"]),
                        num(r["unlocated"]),
                        num(r["unhomed"]),
                        pct(r["time_covered"]),
                    ]
                    for r in rows
                ],
                "coverage",
            )
        )
    return _section(
        "coverage",
        "Coverage: were all exporters heard?",
        "Flows placed in a city against flows the workers could not place, and the parts of "
        "the range each exporter's traffic windows cover.",
        body,
        figures=["coverage", "coverage_by_time"],
    )


def _rules(d: ReportData) -> str:
    rules = d.rows("rules")
    if not rules:
        return ""
    ranked = sorted(rules, key=lambda r: (-(r["hits"] or 0), r["rule_id"]))[:TOP_RULES]
    ids = [r["rule_id"] for r in ranked]
    body = charts.rules_timeline(
        d.rows("rule_hits"),
        d.rows("rule_events"),
        ids,
        t0=d.selection.from_s,
        t1=d.selection.to_s,
        interval_s=d.interval_s["rule_hits"],
    ) + _table(
        [
            ("Rule", False),
            ("Action", False),
            ("City", False),
            ("App", False),
            ("State", False),
            ("Hits", True),
            ("Failures", True),
        ],
        [
            [
                f'<span class="mono">{text(r["rule_id"])}</span>',
                text(r["action"]),
                text(r["city"] or "all"),
                text(r["app"] or "all"),
                text(r["state"] or "–"),
                num(r["hits"]),
                num(r["failures"]),
            ]
            for r in ranked
        ],
        "rules",
    )
    body += _rule_effect(d)
    return (
        f'<section id="rules" class="marked long" '
        f'data-figures="rules rule_hits rule_events rule_effect">'
        f'<h2>Rules and enforcement<span class="badge">rules</span></h2>'
        f'<p class="lead">Operator rules on a timeline: hits per second the enforcement points '
        f"reported, each rule's events, and its effect on the VoIP it matched. Shown because "
        f"rules exist in this database."
        f"</p>{body}</section>"
    )


def _short(t: Any) -> str:
    return f"{datetime.fromtimestamp(charts.epoch(t), UTC):%d %b %H:%M}"


def _rule_effect(d: ReportData) -> str:
    """Each applied rule's city and app: call minutes and bytes before and while applied."""
    rows = d.rows("rule_effect")
    if not rows:
        return "<h3>Effect</h3>" + _empty("No rule was applied in this range.")
    lead = (
        '<h3>Effect</h3><p class="note">The VoIP of each rule\'s city and app while it was '
        "applied (first "
        "applied feedback until expiry or the end of the range) against the same length of "
        "time just before. Leakage: call minutes while a block applied / before; for other "
        "actions, what remained. A rule for all cities or all apps has no single city and "
        "app to measure (0).</p>"
    )
    table = _table(
        [
            ("Rule", False),
            ("Action", False),
            ("City / app", False),
            ("Applied (UTC)", False),
            ("Call min before", True),
            ("Call min while", True),
            ("Bytes before", True),
            ("Bytes while", True),
            ("Leakage / rest", True),
        ],
        [
            [
                f'<span class="mono">{text(r["rule_id"])}</span>',
                text(r["action"]),
                text(f"{r['city'] or 'all'} / {r['app'] or 'all'}"),
                text(f"{_short(r['applied_at'])} – {_short(r['applied_until'])}"),
                num(float(r["call_seconds_before"] or 0) / 60),
                num(float(r["call_seconds_after"] or 0) / 60),
                num(r["bytes_before"]),
                num(r["bytes_after"]),
                pct(r["leakage"]),
            ]
            for r in rows
        ],
        "rule-effect",
    )
    return lead + effect.rule_effect(rows) + table


def _sources(d: ReportData) -> str:
    rows = [
        f"<tr><td>{text(k)}</td><td>{text(FIGURES[k].dashboard)}</td>"
        f"<td>{text(FIGURES[k].panel)}</td><td class='n'>{len(d.results[k].rows)}</td></tr>"
        for k in d.results
    ]
    return (
        '<section id="sources" class="sources long"><h2>Sources</h2>'
        '<p class="lead">Every figure is the result of a Grafana panel\'s own SQL for this '
        "range and selection, so the dashboards show the same numbers.</p>"
        "<table><thead><tr><th>Figure</th><th>Dashboard</th><th>Panel</th>"
        f"<th class='n'>Rows</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def render(d: ReportData, *, source: str, generated_at: int | None = None) -> str:
    """The whole page for ``d``; ``source`` says which database it read."""
    sel = d.selection
    made = generated_at if generated_at is not None else int(datetime.now(UTC).timestamp())
    filters = []
    if sel.cities:
        filters.append("cities: " + ", ".join(sel.cities))
    if sel.apps:
        filters.append("apps: " + ", ".join(sel.apps))
    scope = "; ".join(filters) if filters else "all cities and apps"
    head = (
        "<header><h1>VoIP report</h1>"
        f'<p class="meta"><b>{text(_when(sel.from_s))} – {text(_when(sel.to_s))}</b> · '
        f"{text(scope)}</p>"
        f'<p class="meta">Generated {text(_when(made))} from {text(source)} by voipflow.</p>'
        "</header>"
    )
    summary = _section(
        "summary",
        "How much",
        "Call minutes are estimated call time (media flows of one call count once); "
        "subscribers are distinct over the whole range.",
        _kpis(d),
        figures=["minutes", "subscribers", "calls", "share", "cities"],
    )
    parts = [summary, *_usage_sections(d), _classifier(d), _coverage(d), _rules(d), _sources(d)]
    title = f"VoIP report {datetime.fromtimestamp(sel.from_s, UTC):%d %b} – " + (
        f"{datetime.fromtimestamp(sel.to_s, UTC):%d %b %Y}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)}</title><style>{_css()}</style></head>"
        f"<body><main>{head}{''.join(parts)}"
        f"<footer>voipflow report · queries took {d.query_s:.2f} s</footer></main></body></html>\n"
    )
