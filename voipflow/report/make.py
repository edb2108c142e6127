"""Making a report: range from the command line, queries, page, file, PDF.

Shared by ``voipflow report``, the demo's last step and the benchmark.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from voipflow.dashboards.rollups import Retention
from voipflow.report.queries import ClickHouse, Selection, fetch
from voipflow.report.render import render

_DURATION = re.compile(r"(\d+)\s*(m|h|d|w)")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(value: str, now: int) -> int:
    """Epoch seconds of ``value``: a duration back from ``now`` (``7d``, ``36h``, ``90m``,
    ``2w``), ``now``, or an ISO date/time (UTC unless it says otherwise).

    Raises ``ValueError`` with what is accepted.
    """
    v = value.strip()
    if v == "now":
        return now
    m = _DURATION.fullmatch(v)
    if m:
        return now - int(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a duration (7d, 36h, 90m, 2w) nor an ISO time "
            "(2026-03-01 or 2026-03-01T08:00)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def selection_for(
    since: str,
    until: str = "now",
    cities: tuple[str, ...] = (),
    apps: tuple[str, ...] = (),
    now: int | None = None,
) -> Selection:
    """The report's range, cut at whole minutes like the usage windows."""
    t = int(time.time()) if now is None else now
    to_s = parse_when(until, t) // 60 * 60
    from_s = parse_when(since, t) // 60 * 60
    if from_s >= to_s:
        raise ValueError(f"--since ({since}) must be before --until ({until})")
    return Selection(from_s, to_s, cities, apps)


@dataclass(frozen=True, slots=True)
class Written:
    """A report on disk, with how long its parts took."""

    path: Path
    query_s: float
    render_s: float
    total_s: float


def write_report(
    ch: ClickHouse,
    selection: Selection,
    out: Path,
    *,
    retention: Retention | None = None,
    source: str | None = None,
) -> Written:
    """Query ``ch``, render and write the page to ``out``."""
    start = time.perf_counter()
    data = fetch(ch, selection, retention)
    r0 = time.perf_counter()
    page = render(data, source=source or f"{ch.kind} database {ch.database}")
    render_s = time.perf_counter() - r0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return Written(out, data.query_s, render_s, time.perf_counter() - start)
