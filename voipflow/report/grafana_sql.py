"""Grafana panel SQL made runnable: the ClickHouse data source's macros, expanded.

The report runs the panels' own SQL, which is written for Grafana: template
variables (``${city:singlequote}``), ``$__conditionalAll(cond, $var)`` and
the data source's time macros. This module expands the subset the voipflow
dashboards use, the way the grafana-clickhouse-datasource plugin does
(conditionalAll first, then variables, then ``$__`` macros), so that the
text ClickHouse receives from the report is the text it would receive from
Grafana for the same range, interval and selection. A test expands every
report query with the test suite's Grafana stand-in too and compares.

Supported: ``$__conditionalAll``, ``$var``, ``${var}``, ``${var:singlequote}``,
``$__timeFilter``, ``$__timeFilter_ms``, ``$__fromTime``, ``$__toTime``,
``$__fromTime_ms``, ``$__toTime_ms``, ``$__timeInterval``, ``$__interval_s``.
Anything else is left in place and refused by :func:`expand`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Grafana's interval steps: (below this many ms, use this step).
_STEPS_MS = (
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
    (604800000, 86400000),
    (1814400000, 604800000),
    (3628800000, 2592000000),
)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True, slots=True)
class PanelRequest:
    """What a panel query runs with: range (ms), bucket width (ms), variable selections.

    A variable absent from ``selected`` (or selected empty) means All.
    """

    from_ms: int
    to_ms: int
    interval_ms: int = 60_000
    selected: Mapping[str, Sequence[str]] = field(default_factory=dict)


def panel_interval_ms(from_ms: int, to_ms: int, max_points: int, min_interval: str | None) -> int:
    """The bucket Grafana gives a panel: range / max data points, rounded, at least ``min``."""
    raw = (to_ms - from_ms) / max(max_points, 1)
    step = next((s for below, s in _STEPS_MS if raw < below), 31_536_000_000)
    if raw < 1000:
        step = 1000
    low = 1
    if min_interval:
        m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", min_interval)
        if not m:
            raise ValueError(f"bad panel interval {min_interval!r}")
        low = int(m.group(1)) * _UNIT_MS[m.group(2)]
    return max(step, low)


def _call_args(text: str, open_at: int) -> tuple[list[str], int] | None:
    """Top-level comma-separated arguments of the call whose ``(`` is at ``open_at``."""
    depth = 0
    args: list[str] = []
    start = open_at + 1
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(text[start:i])
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(text[start:i])
            start = i + 1
    return None


def _conditional_all(sql: str, selected: Mapping[str, Sequence[str]]) -> str:
    head = "$__conditionalAll("
    at = sql.rfind(head)
    while at != -1:
        parsed = _call_args(sql, at + len(head) - 1)
        if parsed is None or len(parsed[0]) != 2:
            raise ValueError("$__conditionalAll needs two arguments")
        (cond, var), end = parsed
        m = re.search(r"\$\{?(\w+)", var.strip())
        name = m.group(1) if m else ""
        phrase = cond if selected.get(name) else "1=1"
        sql = sql[:at] + phrase + sql[end:]
        at = sql.rfind(head)
    return sql


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)")


def _variables(sql: str, options: Mapping[str, Sequence[str]], req: PanelRequest) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        fmt = m.group(2)
        if name not in options:
            return m.group(0)
        values = list(req.selected.get(name) or options[name])
        if fmt == "singlequote":
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
        if fmt is None:
            return "'" + "','".join(values) + "'"
        raise ValueError(f"variable format {fmt!r} is not supported")

    return _VARIABLE.sub(repl, sql)


def _macros(sql: str, req: PanelRequest) -> str:
    f_dt, t_dt = f"toDateTime({req.from_ms // 1000})", f"toDateTime({req.to_ms // 1000})"
    f_ms = f"fromUnixTimestamp64Milli({req.from_ms})"
    t_ms = f"fromUnixTimestamp64Milli({req.to_ms})"
    seconds = max(req.interval_ms // 1000, 1)
    with_arg = {
        "timeFilter": lambda c: f"{c} >= {f_dt} AND {c} <= {t_dt}",
        "timeFilter_ms": lambda c: f"{c} >= {f_ms} AND {c} <= {t_ms}",
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {seconds} second)",
    }
    bare = {
        "fromTime_ms": f_ms,
        "toTime_ms": t_ms,
        "fromTime": f_dt,
        "toTime": t_dt,
        "interval_s": str(seconds),
    }
    for name, fn in with_arg.items():
        pattern = re.compile(r"\$__" + name + r"\b")
        for m in reversed(list(pattern.finditer(sql))):
            parsed = _call_args(sql, m.end())
            if parsed is None or len(parsed[0]) != 1 or sql[m.end()] != "(":
                raise ValueError(f"$__{name} needs one argument")
            (arg,), end = parsed
            sql = sql[: m.start()] + fn(arg.strip()) + sql[end:]
    for name, text in bare.items():
        sql = re.sub(r"\$__" + name + r"\b", text, sql)
    return sql


def expand(sql: str, req: PanelRequest, options: Mapping[str, Sequence[str]]) -> str:
    """``sql`` as ClickHouse receives it; ``options`` are each variable's values for All."""
    out = _macros(_variables(_conditional_all(sql, req.selected), options, req), req)
    left = re.findall(r"\$\{?\w+", out)
    if left:
        raise ValueError(f"not expanded: {', '.join(sorted(set(left)))}")
    return out
