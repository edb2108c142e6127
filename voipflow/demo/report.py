"""The demo's last word: VoIP usage per city from ClickHouse, next to the simulator's truth.

The figures come from ``voip_usage_1m`` (the first copy of each window x city
x app, as the sink keeps it), over the windows of this run only: the hourly
and daily rollups the analysts' queries read
(``schemas/clickhouse/queries/top_cities_voip_minutes.sql``,
``app_share_per_city.sql``) hold earlier runs too, and count windows as
minutes, which the demo's shorter windows are not. The queries follow theirs:
call minutes from ``call_seconds``, distinct subscribers merged from the uniq
states (never added).

Two views of the truth are compared (``voipflow.simulate.truth``): records
(``flows``, what the exporters sent, which the worker counts unscaled) and
bytes and call seconds before sampling (``bytes_total``, ``call_seconds``),
which the worker's sampling-corrected figures estimate.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from voipflow.demo.database import opened_for_reading
from voipflow.demo.options import DemoOptions
from voipflow.demo.plan import DemoPlan
from voipflow.demo.printer import Printer
from voipflow.report import ReportError
from voipflow.report.make import write_report
from voipflow.report.queries import Selection
from voipflow.settings import Settings

#: Per city: call minutes, distinct subscribers (merged uniq states), records,
#: bytes (sampling corrected) and the app with the most VoIP bytes (not call
#: time: the worker counts no call time for media relayed on STUN/TURN ports,
#: see ``streams.aggregate.media_call_seconds``, which WhatsApp, Teams and Meet
#: calls use).
USAGE_PER_CITY = """
SELECT
    city,
    round(sum(secs) / 60, 1) AS call_minutes,
    uniqMerge(subs) AS subscribers,
    sum(n) AS voip_flows,
    sum(b) AS voip_bytes,
    argMax(app, (b, secs)) AS top_app
FROM
(
    SELECT
        city,
        app,
        sum(call_seconds) AS secs,
        uniqMergeState(subscribers_state) AS subs,
        sum(flows) AS n,
        sum(bytes) AS b
    FROM voip_usage_1m FINAL
    WHERE window_start >= toDateTime({start}) AND window_start < toDateTime({end})
    GROUP BY city, app
)
GROUP BY city
ORDER BY call_minutes DESC, city
"""

#: Per city: VoIP bytes over all bytes of the city's windows. Each usage row
#: carries its share of the city's window, so bytes / voip_share gives the
#: window's total, the same on every app row of that window.
VOIP_SHARE_PER_CITY = """
SELECT city, sum(voip) / sum(total) AS voip_share
FROM
(
    SELECT city, window_start, sum(bytes) AS voip, max(bytes / voip_share) AS total
    FROM voip_usage_1m FINAL
    WHERE window_start >= toDateTime({start}) AND window_start < toDateTime({end})
      AND voip_share > 0
    GROUP BY city, window_start
)
GROUP BY city
"""

WINDOWS = """
SELECT count(DISTINCT window_start), toUnixTimestamp(min(window_start)),
    toUnixTimestamp(max(window_start))
FROM voip_usage_1m FINAL
WHERE window_start >= toDateTime({start}) AND window_start < toDateTime({end})
"""


@dataclass(slots=True)
class CityRow:
    city: str
    call_minutes: float
    subscribers: int
    voip_flows: int
    voip_bytes: int
    voip_share: float
    top_app: str
    # what the simulator sent as VoIP (records; bytes and call seconds before sampling)
    sent_flows: int = 0
    sent_bytes: int = 0
    sent_call_minutes: float = 0.0
    sent_share: float = 0.0


def truth_per_city(truth: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per city: VoIP records, bytes and call minutes sent, and the VoIP share of bytes."""
    out: dict[str, dict[str, float]] = {}
    for c in truth["cities"]:
        out[c["city"]] = {"flows": 0, "bytes": 0, "minutes": 0.0, "all_bytes": c["bytes_total"]}
    for u in truth["usage"]:
        if not u["is_voip"]:
            continue
        t = out[u["city"]]
        t["flows"] += u["flows"]
        t["bytes"] += u["bytes_total"]
        t["minutes"] += u["call_seconds"] / 60.0
    return out


def query_usage(
    settings: Settings, data_dir: Path, start_s: int, end_s: int
) -> tuple[list[CityRow], tuple[Any, ...]]:
    """The per-city rows of this run's windows, and (windows, first, last)."""
    with opened_for_reading(settings, data_dir) as ch:
        args = {"start": start_s, "end": end_s}
        usage = ch.query(USAGE_PER_CITY.format(**args)).dicts()
        shares = {r[0]: float(r[1]) for r in ch.query(VOIP_SHARE_PER_CITY.format(**args)).rows}
        windows = ch.query(WINDOWS.format(**args)).rows[0]
    rows = [
        CityRow(
            city=str(r["city"]),
            call_minutes=float(r["call_minutes"]),
            subscribers=int(r["subscribers"]),
            voip_flows=int(r["voip_flows"]),
            voip_bytes=int(r["voip_bytes"]),
            voip_share=shares.get(str(r["city"]), 0.0),
            top_app=str(r["top_app"]),
        )
        for r in usage
    ]
    return rows, tuple(windows)


def _pct(a: float, b: float) -> str:
    return f"{100.0 * a / b:.1f} %" if b else "-"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def render(rows: list[CityRow]) -> str:
    head = (
        "city",
        "call min",
        "subscribers",
        "VoIP flows",
        "VoIP MB",
        "VoIP share",
        "top app",
        "bytes vs sent",
    )
    body = [
        (
            r.city,
            f"{r.call_minutes:,.1f}",
            f"{r.subscribers:,}",
            f"{r.voip_flows:,}",
            _mb(r.voip_bytes),
            f"{100 * r.voip_share:.1f} %",
            r.top_app,
            _pct(r.voip_bytes, r.sent_bytes),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    left = {0, 6}

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [fmt(head), "  ".join("-" * w for w in widths)]
    lines += [fmt(b) for b in body]
    return "\n".join(lines)


def html_report(settings: Settings, plan: DemoPlan, start_s: int, end_s: int) -> str:
    """``voipflow report`` over this run's windows, in the demo directory; its path."""
    try:
        with opened_for_reading(settings, plan.data_dir) as ch:
            return str(
                write_report(ch, Selection(start_s, end_s), plan.demo_dir / "report.html").path
            )
    except ReportError as exc:
        return f"not written ({exc})"


def _hms(ts: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(int(ts)))


def _mib(n: int | None) -> str:
    return f"{n / 2**20:,.0f} MiB" if n else "?"


def report(
    settings: Settings,
    options: DemoOptions,
    plan: DemoPlan,
    printer: Printer,
    figures: dict[str, Any],
    after_table: list[str] | None = None,
) -> bool:
    """Print the table and the comparison; False if the run produced no usable result.

    ``after_table``: lines printed after the comparison (the run's rules).

    Call it after the sink has stopped: it opens ClickHouse in this process.
    """
    say, line = printer.say, printer.line
    truth = json.loads(plan.truth_path.read_text(encoding="utf-8"))
    w = options.window_s
    start_s = int(truth["start_ms"]) // 1000 // w * w
    end_s = int(truth["end_ms"]) // 1000 + w
    rows, (n_windows, first, last) = query_usage(settings, plan.data_dir, start_s, end_s)
    sent = truth_per_city(truth)
    for r in rows:
        t = sent.get(r.city)
        if t is not None:
            r.sent_flows, r.sent_bytes = int(t["flows"]), int(t["bytes"])
            r.sent_call_minutes = round(t["minutes"], 1)
            r.sent_share = t["bytes"] / t["all_bytes"] if t["all_bytes"] else 0.0
    voip_cities = sorted(c for c, t in sent.items() if t["flows"])
    missing = sorted(set(voip_cities) - {r.city for r in rows})
    line()
    if not rows:
        say("no VoIP usage reached ClickHouse: see the logs in " + str(plan.log_dir))
    else:
        line(
            f"VoIP usage per city (ClickHouse voip_usage_1m: {n_windows} windows of {w} s, "
            f"{_hms(first)}-{_hms(last + w)} UTC)"
        )
        line(render(rows))
    tot = {k: sum(float(t[k]) for t in sent.values()) for k in ("flows", "bytes", "minutes")}
    all_bytes = sum(float(t["all_bytes"]) for t in sent.values())
    got_bytes = sum(r.voip_bytes for r in rows)
    ratios = [r.voip_bytes / r.sent_bytes for r in rows if r.sent_bytes]
    spread = f"{100 * min(ratios):.1f}-{100 * max(ratios):.1f} %" if ratios else "-"
    got_flows = sum(r.voip_flows for r in rows)
    line(
        f"vs what the simulator sent as VoIP: flows {_pct(got_flows, tot['flows'])}, "
        f"bytes {_pct(got_bytes, tot['bytes'])} (per city {spread}), "
        f"call minutes {_pct(sum(r.call_minutes for r in rows), tot['minutes'])}; "
        f"cities {len(rows)} of {len(voip_cities)}"
        + (f" (missing: {', '.join(missing)})" if missing else "")
    )
    if after_table:
        line()
        for text in after_table:
            line(text)
        line()
    if rows:
        line(f"HTML report of this run: {html_report(settings, plan, start_s, end_s)}")
    k = figures.get("counts", {})
    rss = figures.get("peak_rss", {})
    line(
        f"pipeline: {k.get('sent', 0):,} flows sent, {k.get('decoded', 0):,} decoded, "
        f"{k.get('published', 0):,} published, {k.get('voip_classified', 0):,} classified VoIP, "
        f"{k.get('late_records', 0):,} late; ClickHouse rows: {k.get('rows_flows', 0):,} VoIP "
        f"flows, {k.get('rows_usage', 0):,} usage; VoIP share of bytes "
        f"{_pct(got_bytes, all_bytes)} measured vs {_pct(tot['bytes'], all_bytes)} sent"
    )
    line("peak RSS: " + ", ".join(f"{name} {_mib(v)}" for name, v in rss.items()))
    if options.json_out is not None:
        doc = {
            "window_s": w,
            "windows": n_windows,
            "start_s": start_s,
            "end_s": end_s,
            "cities": [asdict(r) for r in rows],
            "sent": {
                "voip_flows": tot["flows"],
                "voip_bytes": tot["bytes"],
                "call_minutes": tot["minutes"],
                "all_bytes": all_bytes,
            },
            "missing_cities": missing,
            "figures": figures,
        }
        options.json_out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return bool(rows) and not missing
