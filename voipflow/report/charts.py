"""The report's charts as SVG strings, each from one figure's rows.

Every drawn mark carries the figure's numbers in ``data-*`` attributes
(raw, unrounded) and a ``<title>`` tooltip, so a reader can hover and a test
can read the page back and compare it with the SQL results. Why SVG drawn
here: see :mod:`voipflow.report.svg`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from voipflow.report.svg import (
    BAD,
    CATEGORICAL,
    GOOD,
    GRID,
    MUTED,
    OTHER,
    attr,
    compact,
    legend,
    legend_height,
    nice_ticks,
    num,
    pct,
    svg_open,
    text,
    time_ticks,
    viridis,
    y_axis,
)

Row = Mapping[str, Any]
OTHER_APPS = "other apps"
W = 720  # viewBox width: the A4 text column at ~96 dpi


def epoch(v: Any) -> int:
    """Seconds since 1970 of a ClickHouse DateTime (naive values are UTC)."""
    if isinstance(v, datetime):
        return int((v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp())
    return int(v)


def app_colours(apps_by_size: Sequence[str]) -> dict[str, str]:
    """The largest apps get the palette in order; the rest share grey as "other apps"."""
    out = {a: c for a, c in zip(apps_by_size, CATEGORICAL, strict=False)}
    for a in apps_by_size[len(CATEGORICAL) :]:
        out[a] = OTHER
    return out


def _group_name(app: str, colours: Mapping[str, str]) -> str:
    return app if colours.get(app, OTHER) != OTHER else OTHER_APPS


# -- map ------------------------------------------------------------------------


def city_map(rows: Sequence[Row], *, height: int = 400, labels: int = 12) -> str:
    """Circles at the cities' coordinates: area by call minutes, colour by VoIP share.

    Equirectangular projection fitted to the cities' bounds (longitude
    scaled by the cosine of the middle latitude so shapes keep their
    proportions), with a graticule for orientation; no tiles, no network.
    """
    pts = [r for r in rows if r["lat"] is not None and r["lon"] is not None]
    pad, legend_w = 40, 150
    mw, mh = W - legend_w - 2 * pad, height - 2 * pad
    lat0, lat1 = min(r["lat"] for r in pts), max(r["lat"] for r in pts)
    lon0, lon1 = min(r["lon"] for r in pts), max(r["lon"] for r in pts)
    k = math.cos(math.radians((lat0 + lat1) / 2))
    span_x = max((lon1 - lon0) * k, 1.0)
    span_y = max(lat1 - lat0, 1.0)
    scale = min(mw / span_x, mh / span_y)
    ox = pad + (mw - (lon1 - lon0) * k * scale) / 2
    oy = pad + (mh - (lat1 - lat0) * scale) / 2

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return ox + (lon - lon0) * k * scale, oy + (lat1 - lat) * scale

    top = max((r["voip_minutes"] or 0.0) for r in pts) or 1.0
    shares = [r["voip_share"] or 0.0 for r in pts]
    # The ramp spans the shares drawn, so cities that differ a little still look different;
    # the legend names both ends.
    share_lo, share_hi = min(shares), max(shares)
    share_span = share_hi - share_lo

    def tone(share: float) -> str:
        return viridis((share - share_lo) / share_span if share_span > 1e-9 else 0.5)

    out = [svg_open(W, height, "Map of cities: call minutes and VoIP share", "map")]
    out.append(f'<rect x="0" y="0" width="{W - legend_w}" height="{height}" class="sea"/>')
    step = next(s for s in (1, 2, 5, 10, 20, 30) if max(span_x / k, span_y) / s <= 8)
    for lat in range(
        math.floor(lat0 / step - 1) * step, math.ceil(lat1 / step + 1) * step + 1, step
    ):
        _, y = xy(lat, lon0)
        if 0 <= y <= height:
            out.append(
                f'<line x1="0" x2="{W - legend_w}" y1="{y:.1f}" y2="{y:.1f}" class="grat"/>'
                f'<text x="4" y="{y - 3:.1f}" class="ax">{lat}°</text>'
            )
    for lon in range(
        math.floor(lon0 / step - 1) * step, math.ceil(lon1 / step + 1) * step + 1, step
    ):
        x, _ = xy(lat0, lon)
        if 0 <= x <= W - legend_w:
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" class="grat"/>'
                f'<text x="{x + 3:.1f}" y="{height - 4}" class="ax">{lon}°</text>'
            )
    # Fewer, larger circles for a handful of cities; smaller ones when hundreds share the map.
    r_max = min(26.0, max(8.0, 160 / math.sqrt(len(pts))))
    ordered = sorted(pts, key=lambda r: -(r["voip_minutes"] or 0.0))
    for r in ordered:  # largest first, so small circles stay on top and clickable
        x, y = xy(r["lat"], r["lon"])
        m = r["voip_minutes"] or 0.0
        rad = max(r_max * math.sqrt(m / top), 2.0)
        share = r["voip_share"] or 0.0
        tip = (
            f"{r['city']}: {num(m)} call minutes, {num(r['subscribers'])} subscribers, "
            f"{pct(share)} VoIP share"
        )
        out.append(
            f'<circle class="city" cx="{x:.1f}" cy="{y:.1f}" r="{rad:.1f}" '
            f"fill={attr(tone(share))} data-city={attr(r['city'])} "
            f"data-minutes={attr(repr(float(m)))} data-share={attr(repr(float(share)))} "
            f"data-subscribers={attr(r['subscribers'])}><title>{text(tip)}</title></circle>"
        )
    for r in ordered[:labels]:
        x, y = xy(r["lat"], r["lon"])
        rad = max(r_max * math.sqrt((r["voip_minutes"] or 0.0) / top), 2.0)
        out.append(
            f'<text x="{x:.1f}" y="{y - rad - 3:.1f}" class="lbl halo" text-anchor="middle">'
            f"{text(r['city'])}</text>"
        )
    # Legend: circle sizes and the share ramp.
    lx = W - legend_w + 16
    out.append(f'<text x="{lx}" y="24" class="lgt">Call minutes</text>')
    cy = 40.0
    for frac in (1.0, 0.25, 0.04):
        rad = r_max * math.sqrt(frac)
        out.append(
            f'<circle cx="{lx + r_max:.1f}" cy="{cy + rad:.1f}" r="{rad:.1f}" class="sizekey"/>'
            f'<text x="{lx + 2 * r_max + 8:.1f}" y="{cy + rad + 4:.1f}" class="ax">'
            f"{compact(top * frac)}</text>"
        )
        cy += 2 * rad + 6
    cy += 14
    out.append(f'<text x="{lx}" y="{cy:.1f}" class="lgt">VoIP share</text>')
    cy += 8
    for i in range(20):
        out.append(
            f'<rect x="{lx + i * 5:.1f}" y="{cy:.1f}" width="5.5" height="10" '
            f"fill={attr(viridis(i / 19))}/>"
        )
    out.append(
        f'<text x="{lx}" y="{cy + 24:.1f}" class="ax">{pct(share_lo)}</text>'
        f'<text x="{lx + 100}" y="{cy + 24:.1f}" class="ax" text-anchor="end">'
        f"{pct(share_hi)}</text>"
    )
    out.append("</svg>")
    return "".join(out)


# -- stacked areas over time ---------------------------------------------------------


def stacked_time(
    rows: Sequence[Row],
    value: str,
    *,
    t0: int,
    t1: int,
    interval_s: int,
    colours: Mapping[str, str],
    label: str,
    height: int = 240,
) -> str:
    """Stacked areas per app over buckets; missing buckets are zero."""
    per: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        per[_group_name(r["app"], colours)][epoch(r["time"])] += float(r[value] or 0.0)
    order = [a for a in dict.fromkeys(_group_name(a, colours) for a in colours) if a in per]
    order += [a for a in per if a not in order]
    buckets = list(range(t0 // interval_s * interval_s, t1 + 1, interval_s))
    if len(buckets) > 2 and buckets[0] < t0 and not any(buckets[0] in per[a] for a in order):
        buckets = buckets[1:]  # a bucket cut by the range start, and empty: rollup rows count
        # only when their period starts inside the range
    totals = [sum(per[a].get(b, 0.0) for a in order) for b in buckets]
    ticks = nice_ticks(max(totals, default=0.0))
    leg_h = legend_height(order, W - 60)
    left, right, top, bottom = 52, 12, 10, 24 + leg_h + 8
    pw, ph = W - left - right, height - top - bottom
    # Few buckets (days of a week) read better as bars than as a polyline.
    bars = len(buckets) <= 40
    x_end = buckets[-1] + (interval_s if bars else 0)

    def x_of(t: float) -> float:
        return left + (t - buckets[0]) / max(x_end - buckets[0], 1) * pw

    def y_of(v: float) -> float:
        return top + ph - v / ticks[-1] * ph

    out = [svg_open(W, height, label, "stack")]
    out.append(y_axis(ticks, left, W - right, y_of))
    for t, lab in time_ticks(buckets[0], x_end):
        x = x_of(t + (interval_s / 2 if bars and interval_s >= 86400 else 0))
        if x > W - right + 1:
            continue
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" class="tick"/>'
            f'<text x="{x:.1f}" y="{top + ph + 16}" class="ax" text-anchor="middle">'
            f"{text(lab)}</text>"
        )
    base = [0.0] * len(buckets)
    for app in order:
        vals = [per[app].get(b, 0.0) for b in buckets]
        upper = [b + v for b, v in zip(base, vals, strict=True)]
        colour = colours.get(app, OTHER)
        total = sum(vals)
        head = (
            f"fill={attr(colour)} data-app={attr(app)} data-total={attr(repr(total))}>"
            f"<title>{text(app)}: {num(total)} in the range</title>"
        )
        if bars:
            bw = pw * interval_s / max(x_end - buckets[0], 1)
            rects = "".join(
                f'<rect x="{x_of(t) + bw * 0.12:.1f}" y="{y_of(u):.1f}" width="{bw * 0.76:.1f}" '
                f'height="{y_of(b) - y_of(u):.1f}"/>'
                for t, u, b in zip(buckets, upper, base, strict=True)
                if u > b
            )
            out.append(f'<g class="area" {head}{rects}</g>')
        else:
            pts = [f"{x_of(t):.1f},{y_of(u):.1f}" for t, u in zip(buckets, upper, strict=True)]
            pts += [
                f"{x_of(t):.1f},{y_of(b):.1f}"
                for t, b in zip(reversed(buckets), reversed(base), strict=True)
            ]
            out.append(f'<polygon class="area" points="{" ".join(pts)}" {head}</polygon>')
        base = upper
    out.append(f'<line x1="{left}" x2="{W - right}" y1="{top + ph}" y2="{top + ph}" class="axis"/>')
    out.append(
        legend([(a, colours.get(a, OTHER)) for a in order], left, height - leg_h + 4, W - 60)
    )
    out.append("</svg>")
    return "".join(out)


# -- bars ---------------------------------------------------------------------------


def top_cities(rows: Sequence[Row], *, bar_h: int = 20) -> str:
    """Bars of call minutes per city, a tick for the week before, the change in words."""
    name_w, change_w = 130, 90
    height = 16 + len(rows) * bar_h + 24
    pw = W - name_w - change_w - 8
    top_v = max(max(r["voip_minutes"] or 0, r["voip_minutes_week_before"] or 0) for r in rows)
    ticks = nice_ticks(top_v, 5)

    def x_of(v: float) -> float:
        return name_w + v / ticks[-1] * pw

    out = [svg_open(W, height, "Top cities by call minutes, week over week", "bars")]
    for v in ticks:
        x = x_of(v)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="10" y2="{height - 20}" class="grid"/>'
            f'<text x="{x:.1f}" y="{height - 6}" class="ax" text-anchor="middle">'
            f"{compact(v)}</text>"
        )
    for i, r in enumerate(rows):
        y = 14 + i * bar_h
        cur, prev, change = r["voip_minutes"] or 0.0, r["voip_minutes_week_before"], r["change"]
        out.append(
            f'<text x="{name_w - 8}" y="{y + bar_h * 0.6:.1f}" class="lbl" text-anchor="end">'
            f"{text(r['city'])}</text>"
            f'<rect class="bar" x="{name_w}" y="{y + 3}" width="{x_of(cur) - name_w:.1f}" '
            f'height="{bar_h - 6}" fill="{GOOD}" data-city={attr(r["city"])} '
            f"data-minutes={attr(repr(float(cur)))}><title>{text(r['city'])}: "
            f"{num(cur)} call minutes</title></rect>"
        )
        if prev:
            x = x_of(prev)
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y + 1}" y2="{y + bar_h - 1}" '
                f'class="prev"><title>week before: {num(prev)}</title></line>'
            )
        if change is None or not math.isfinite(change):
            word, cls = "new", "flat"
        elif change >= 9.995:
            word, cls = f"▲ ×{change + 1:,.0f}", "up"
        else:
            word = ("▲ " if change > 0 else "▼ " if change < 0 else "") + pct(abs(change))
            cls = "up" if change > 0 else "down" if change < 0 else "flat"
        out.append(
            f'<text x="{W - 4}" y="{y + bar_h * 0.6:.1f}" class="chg {cls}" text-anchor="end" '
            f"data-city={attr(r['city'])} data-change={attr(repr(change))}>{text(word)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def app_share(
    rows: Sequence[Row], cities: Sequence[str], colours: Mapping[str, str], *, bar_h: int = 18
) -> str:
    """One 100 % bar per city, split by each app's share of the city's call minutes."""
    by_city: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        if r["city"] in cities:
            by_city[r["city"]][_group_name(r["app"], colours)] += float(r["share"] or 0.0)
    cities = [c for c in cities if c in by_city]
    order = list(dict.fromkeys(_group_name(a, colours) for a in colours))
    leg_h = legend_height(order, W - 140)
    name_w = 130
    height = 8 + len(cities) * bar_h + 22 + leg_h
    pw = W - name_w - 12
    out = [svg_open(W, height, "Share of each app in the cities' call minutes", "share")]
    for i, city in enumerate(cities):
        y = 8 + i * bar_h
        out.append(
            f'<text x="{name_w - 8}" y="{y + bar_h * 0.65:.1f}" class="lbl" text-anchor="end">'
            f"{text(city)}</text>"
        )
        x = float(name_w)
        for app in order:
            s = by_city[city].get(app, 0.0)
            if s <= 0:
                continue
            w = s * pw
            out.append(
                f'<rect class="seg" x="{x:.2f}" y="{y + 2}" width="{w:.2f}" height="{bar_h - 4}" '
                f"fill={attr(colours.get(app, OTHER))} data-city={attr(city)} data-app={attr(app)} "
                f"data-share={attr(repr(s))}><title>{text(city)}, {text(app)}: {pct(s)}"
                "</title></rect>"
            )
            x += w
    y_leg = 8 + len(cities) * bar_h + 18
    for v in (0.0, 0.5, 1.0):
        out.append(
            f'<text x="{name_w + v * pw:.1f}" y="{y_leg - 4}" class="ax" text-anchor="middle">'
            f"{pct(v, 0)}</text>"
        )
    out.append(legend([(a, colours.get(a, OTHER)) for a in order], name_w, y_leg + 12, W - 140))
    out.append("</svg>")
    return "".join(out)


def confidence(rows: Sequence[Row], *, height: int = 200) -> str:
    """Flow records per confidence tenth, VoIP verdicts and those below the threshold."""
    by = {float(r["confidence_from"]): r for r in rows}
    buckets = [i / 10 for i in range(10)]
    tops = [(by[b]["voip_flows"] + by[b]["other_flows"]) if b in by else 0 for b in buckets]
    ticks = nice_ticks(max(tops, default=0))
    left, top, bottom = 52, 10, 44
    pw, ph = W - left - 12, height - top - bottom
    bw = pw / 10

    def y_of(v: float) -> float:
        return top + ph - v / ticks[-1] * ph

    out = [svg_open(W, height, "Flow records by classifier confidence", "conf")]
    out.append(y_axis(ticks, left, W - 12, y_of))
    for i, b in enumerate(buckets):
        r = by.get(b)
        voip, other = (r["voip_flows"], r["other_flows"]) if r else (0, 0)
        x = left + i * bw + 4
        out.append(
            f'<rect class="bin" x="{x:.1f}" y="{y_of(voip):.1f}" width="{bw - 8:.1f}" '
            f'height="{y_of(0) - y_of(voip):.1f}" fill="{GOOD}" data-bucket="{b:.1f}" '
            f'data-voip="{voip}" data-other="{other}"><title>{b:.1f}–{b + 0.1:.1f}: '
            f"{num(voip)} VoIP, {num(other)} below threshold</title></rect>"
            f'<rect x="{x:.1f}" y="{y_of(voip + other):.1f}" width="{bw - 8:.1f}" '
            f'height="{y_of(voip) - y_of(voip + other):.1f}" fill="{OTHER}"/>'
            f'<text x="{x + (bw - 8) / 2:.1f}" y="{top + ph + 14}" class="ax" '
            f'text-anchor="middle">{b:.1f}</text>'
        )
    out.append(legend([("VoIP verdict", GOOD), ("below threshold", OTHER)], left, height - 8, 400))
    out.append("</svg>")
    return "".join(out)


def share_bars(rows: Sequence[Row], name: str, *, colour: str = GOOD, bar_h: int = 18) -> str:
    """Horizontal bars of ``share`` (0..1) per ``name`` with the share written out."""
    name_w = 170
    height = 6 + len(rows) * bar_h + 6
    pw = W - name_w - 70
    out = [svg_open(W, height, f"Share per {name}", "hbars")]
    for i, r in enumerate(rows):
        y = 6 + i * bar_h
        s = float(r["share"] or 0.0)
        out.append(
            f'<text x="{name_w - 8}" y="{y + bar_h * 0.65:.1f}" class="lbl" text-anchor="end">'
            f"{text(r[name])}</text>"
            f'<rect x="{name_w}" y="{y + 2}" width="{pw}" height="{bar_h - 4}" class="track"/>'
            f'<rect class="bar" x="{name_w}" y="{y + 2}" width="{s * pw:.1f}" '
            f'height="{bar_h - 4}" fill="{colour}" data-name={attr(r[name])} '
            f"data-share={attr(repr(s))}><title>{text(r[name])}: {pct(s)}</title></rect>"
            f'<text x="{name_w + pw + 6}" y="{y + bar_h * 0.65:.1f}" class="ax">{pct(s)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def coverage_bars(rows: Sequence[Row], *, bar_h: int = 20) -> str:
    """Per exporter: its flow records split into placed, at home without city, unhomed."""
    parts = (
        ("placed", "placed in a city", GOOD),
        ("unlocated", "home, no city", "#E69F00"),
        ("unhomed", "no side at home", BAD),
    )
    name_w = 150
    height = 8 + len(rows) * bar_h + 30
    pw = W - name_w - 12
    out = [svg_open(W, height, "Flow records per exporter: placed against unplaced", "cov")]
    for i, r in enumerate(rows):
        y = 8 + i * bar_h
        total = max(int(r["flow_records"] or 0), 1)
        out.append(
            f'<text x="{name_w - 8}" y="{y + bar_h * 0.65:.1f}" class="lbl mono" '
            f'text-anchor="end">{text(r["exporter_ip"])}</text>'
        )
        x = float(name_w)
        for key, label, colour in parts:
            n = int(r[key] or 0)
            w = n / total * pw
            out.append(
                f'<rect class="seg" x="{x:.2f}" y="{y + 2}" width="{w:.2f}" height="{bar_h - 4}" '
                f'fill="{colour}" data-exporter={attr(r["exporter_ip"])} data-part="{key}" '
                f'data-flows="{n}"><title>{text(r["exporter_ip"])}: {num(n)} {label}</title></rect>'
            )
            x += w
    out.append(legend([(p[1], p[2]) for p in parts], name_w, height - 8, W - name_w))
    out.append("</svg>")
    return "".join(out)


def coverage_strip(
    rows: Sequence[Row],
    exporters: Sequence[str],
    *,
    t0: int,
    t1: int,
    interval_s: int,
    row_h: int = 16,
) -> str:
    """A strip per exporter: each bucket shaded by the share its windows cover; gaps marked.

    The buckets cover ``[t0, t1)``: when ``t1`` falls on a bucket's start, that
    bucket has not begun within the range and is not drawn (it would show as a
    gap for every exporter).
    """
    cov = {(r["exporter_ip"], epoch(r["time"])): float(r["covered"] or 0.0) for r in rows}
    buckets = list(range(t0 // interval_s * interval_s, max(t1, t0 + 1), interval_s))
    name_w = 150
    height = 6 + len(exporters) * row_h + 40
    pw = W - name_w - 12
    bw = pw / max(len(buckets), 1)
    out = [svg_open(W, height, "Coverage of the range per exporter", "strip")]
    for i, e in enumerate(exporters):
        y = 6 + i * row_h
        gaps = 0
        out.append(
            f'<text x="{name_w - 8}" y="{y + row_h * 0.7:.1f}" class="lbl mono" '
            f'text-anchor="end">{text(e)}</text>'
        )
        runs: list[tuple[int, int, str, bool]] = []  # (first, last, fill, gap)
        for j, b in enumerate(buckets):
            c = cov.get((e, b))
            gap = c is None
            gaps += gap
            fill = BAD if c is None else viridis(0.35 + 0.45 * c)
            if runs and runs[-1][2] == fill:
                runs[-1] = (runs[-1][0], j, fill, gap)
            else:
                runs.append((j, j, fill, gap))
        for first, last, fill, gap in runs:
            cls = ' class="gap"' if gap else ""
            out.append(
                f'<rect{cls} x="{name_w + first * bw:.2f}" y="{y + 1}" '
                f'width="{(last - first + 1) * bw:.2f}" height="{row_h - 2}" fill="{fill}" '
                'shape-rendering="crispEdges"/>'
            )
        out.append(
            f'<g class="exporter" data-exporter={attr(e)} data-gaps="{gaps}" '
            f'data-buckets="{len(buckets)}"></g>'
        )
    y_ax = 6 + len(exporters) * row_h
    for t, lab in time_ticks(buckets[0], buckets[-1], 6):
        x = name_w + (t - buckets[0]) / interval_s * bw
        out.append(
            f'<text x="{x:.1f}" y="{y_ax + 14}" class="ax" text-anchor="middle">{text(lab)}</text>'
        )
    out.append(
        legend(
            [("covered", viridis(0.8)), ("partly covered", viridis(0.45)), ("gap", BAD)],
            name_w,
            height - 8,
            W - name_w,
        )
    )
    out.append("</svg>")
    return "".join(out)


# -- rules ----------------------------------------------------------------------------

EVENT_COLOURS = {
    "published": "#56B4E9",
    "applied": "#009E73",
    "failed": BAD,
    "removed": "#CC79A7",
    "expired": MUTED,
}


def rules_timeline(
    hits: Sequence[Row],
    events: Sequence[Row],
    rule_ids: Sequence[str],
    *,
    t0: int,
    t1: int,
    interval_s: int,
    lane_h: int = 34,
) -> str:
    """One lane per rule: hits per second as bars, events as marks above them."""
    per: dict[tuple[str, int], float] = {
        (r["rule_id"], epoch(r["time"])): r["hits_per_s"] for r in hits
    }
    top_v = max([float(v or 0.0) for v in per.values()], default=0.0) or 1.0
    name_w = 130
    height = 8 + len(rule_ids) * lane_h + 44
    pw = W - name_w - 12
    span = max(t1 - t0, 1)

    def x_of(t: float) -> float:
        return name_w + (t - t0) / span * pw

    out = [svg_open(W, height, "Rules over time: hits and events", "rules")]
    for i, rid in enumerate(rule_ids):
        y = 8 + i * lane_h
        out.append(
            f'<line x1="{name_w}" x2="{W - 12}" y1="{y + lane_h - 4}" y2="{y + lane_h - 4}" '
            f'stroke="{GRID}"/>'
            f'<text x="{name_w - 8}" y="{y + lane_h * 0.6:.1f}" class="lbl mono" '
            f'text-anchor="end">{text(rid)}</text>'
        )
        total = 0.0
        for (r_id, t), v in per.items():
            if r_id != rid or not v:
                continue
            total += float(v) * interval_s
            h = float(v) / top_v * (lane_h - 14)
            out.append(
                f'<rect x="{x_of(t):.2f}" y="{y + lane_h - 4 - h:.1f}" '
                f'width="{max(pw * interval_s / span, 1.0):.2f}" height="{h:.1f}" fill="{GOOD}"/>'
            )
        out.append(f'<g class="rule" data-rule={attr(rid)} data-hits={attr(repr(total))}></g>')
        shown = ""
        marks: list[tuple[bool, str]] = []
        # Oldest first; a kind repeated (hit reports come as "applied" feedback)
        # is drawn once, where it started, so the marks show the changes.
        for ev in sorted(events, key=lambda e: epoch(e["ts"])):
            if ev["rule_id"] != rid:
                continue
            kind = ev["feedback"] or ev["event"]
            if kind == shown:
                continue
            shown = kind
            x = x_of(epoch(ev["ts"]))
            colour = EVENT_COLOURS.get(kind, MUTED)
            mark = (
                f'<path class="event" d="M{x:.1f},{y + 2} l4,5 l-4,5 l-4,-5 z" fill="{colour}" '
                f"data-rule={attr(rid)} data-kind={attr(kind)}><title>{text(rid)}: {text(kind)} "
                f"at {datetime.fromtimestamp(epoch(ev['ts']), UTC):%d %b %H:%M} UTC</title></path>"
            )
            marks.append((kind == "failed", mark))
        # Failures on top: a week squeezes events of one hour onto one spot.
        out.extend(m for _, m in sorted(marks, key=lambda m: m[0]))
    y_ax = 8 + len(rule_ids) * lane_h
    for t, lab in time_ticks(t0, t1, 6):
        out.append(
            f'<text x="{x_of(t):.1f}" y="{y_ax + 12}" class="ax" text-anchor="middle">'
            f"{text(lab)}</text>"
        )
    out.append(
        legend(
            [("hits/s", GOOD)] + [(k, c) for k, c in EVENT_COLOURS.items()],
            name_w,
            height - 8,
            W - name_w,
        )
    )
    out.append("</svg>")
    return "".join(out)
