"""A stand-in for Grafana and its ClickHouse data source, which cannot run here.

No Grafana server can be installed on these machines, so this module does
what Grafana 11/12 and the grafana-clickhouse-datasource plugin do to a
panel's SQL before ClickHouse sees it, and nothing else. It is the one fake
in the test suite; the SQL it produces runs on a real ClickHouse engine
(chdb). Written from the plugin's and Grafana's documented behaviour and
source (grafana/clickhouse-datasource ``src/data/CHDatasource.ts``,
``pkg/macros/macros.go``; grafana/sqlds macro parsing; Grafana's template
variable formats and ``rangeutil``), in three steps like the real thing:

1. frontend, ``applyConditionalAll``: ``$__conditionalAll(cond, $var)``
   becomes ``1=1`` when ``$var`` is All (``$__all``) or empty, else ``cond``;
   occurrences are handled from the last one back;
2. frontend, template variables (``templateSrv.replace`` with the data
   source's default format: a multi-value becomes ``'a','b'``, a single value
   stays bare): ``$var``, ``${var}``, ``${var:format}``, ``[[var]]``; All
   means every option, or the custom all value unformatted; unknown names
   are left alone;
3. backend, the plugin's macros as sqlds finds them (``$__name`` followed by
   a word boundary, arguments in balanced parentheses split at top-level
   commas): ``$__timeFilter(c)`` -> ``c >= toDateTime(s) AND c <= toDateTime(s)``,
   ``$__timeFilter_ms`` with ``fromUnixTimestamp64Milli(ms)``, ``$__fromTime``,
   ``$__toTime``, ``$__fromTime_ms``, ``$__toTime_ms``, ``$__dateFilter``,
   ``$__timeInterval(c)`` -> ``toStartOfInterval(toDateTime(c), INTERVAL n second)``,
   ``$__timeInterval_ms``, ``$__interval_s``.

The interval a panel gets is Grafana's: the range divided by the panel's
``maxDataPoints`` (or its width in pixels), rounded to Grafana's steps,
never below the panel's ``interval``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ALL = "$__all"


@dataclass
class Variable:
    """A dashboard variable as Grafana holds it after its query ran."""

    name: str
    options: list[str]
    #: Selected values; ``[ALL]`` for "All".
    current: list[str] = field(default_factory=lambda: [ALL])
    multi: bool = True
    all_value: str | None = None

    def current_text(self) -> str:
        # JavaScript's Array.prototype.toString: values joined with commas.
        return ",".join(self.current) if self.multi else (self.current[0] if self.current else "")

    def value(self) -> str | list[str]:
        if ALL in self.current:
            return list(self.options)
        return list(self.current) if self.multi else self.current[0]


@dataclass
class Request:
    """What a panel's query is run with: time range, interval, variables."""

    from_ms: int
    to_ms: int
    interval_ms: int
    variables: dict[str, Variable] = field(default_factory=dict)


# -- Grafana's interval --------------------------------------------------------

_STEPS_MS = [
    (10, 1),
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
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
]

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def round_interval(ms: float) -> int:
    for below, step in _STEPS_MS:
        if ms < below:
            return step
    return 31_536_000_000


def interval_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text)
    if not m:
        raise ValueError(f"bad interval {text!r}")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def panel_interval_ms(panel: dict[str, Any], from_ms: int, to_ms: int, width_px: int = 1000) -> int:
    """The ``intervalMs`` Grafana sends for ``panel`` over ``[from_ms, to_ms]``."""
    resolution = panel.get("maxDataPoints") or width_px
    step = round_interval((to_ms - from_ms) / resolution)
    low = interval_ms(panel["interval"]) if panel.get("interval") else 1
    return max(step, low)


# -- step 1: $__conditionalAll ---------------------------------------------------

_CONDITIONAL_ALL = "$__conditionalAll("


def _macro_args(text: str, open_at: int) -> list[str]:
    """Arguments of the call whose ``(`` is at ``open_at``; [] if it never closes."""
    args: list[str] = []
    depth = 0
    start = open_at + 1
    for m in re.finditer(r"[(),]", text[open_at:]):
        ch, pos = m.group(0), open_at + m.start()
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 1:
            args.append(text[start:pos])
            start = pos + 1
        if depth == 0:
            args.append(text[start:pos])
            return args
    return []


def conditional_all(sql: str, variables: dict[str, Variable]) -> str:
    at = sql.rfind(_CONDITIONAL_ALL)
    while at != -1:
        params = _macro_args(sql, at + len(_CONDITIONAL_ALL) - 1)
        if len(params) != 2:
            return sql
        phrase = params[0]
        m = re.search(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+", params[1].strip())
        if m:
            var = variables.get(m.group(0))
            if var is not None and var.current_text() in ("", ALL):
                phrase = "1=1"
        sql = sql.replace(f"{_CONDITIONAL_ALL}{params[0]},{params[1]})", phrase, 1)
        at = sql.rfind(_CONDITIONAL_ALL)
    return sql


# -- step 2: template variables -------------------------------------------------

_VARIABLE_RE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)


def _format(value: str | list[str], fmt: str | None) -> str:
    values = value if isinstance(value, list) else [value]
    if fmt is None:  # the ClickHouse data source's own format function
        return "'" + "','".join(values) + "'" if isinstance(value, list) else value
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "raw":
        return ",".join(values)
    raise ValueError(f"format {fmt!r} is not modelled here")


def replace_variables(sql: str, request: Request) -> str:
    builtins = {
        "__from": str(request.from_ms),
        "__to": str(request.to_ms),
        "__interval_ms": str(request.interval_ms),
    }

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in builtins:
            return builtins[name]
        var = request.variables.get(name)
        if var is None:
            return m.group(0)
        if ALL in var.current and var.all_value is not None:
            return var.all_value  # Grafana leaves a custom all value unformatted
        return _format(var.value(), fmt)

    return _VARIABLE_RE.sub(repl, sql)


# -- step 3: backend macros -------------------------------------------------------


def _split_args(text: str) -> tuple[list[str] | None, int]:
    """sqlds' argument list at the start of ``text``: (args, length) or (None, 0)."""
    if not text.startswith("("):
        return None, 0
    args: list[str] = []
    depth = 0
    cur: list[str] = []
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    raise ValueError("failed to parse macro arguments (missing close bracket?)")


def _need(args: list[str] | None, n: int, name: str) -> list[str]:
    if args is None or len(args) != n:
        got = 0 if args is None else len(args)
        raise ValueError(f"$__{name}: expected {n} argument(s), received {got}")
    return args


def _macros(request: Request) -> dict[str, Any]:
    f_s, t_s = request.from_ms // 1000, request.to_ms // 1000
    f_dt, t_dt = f"toDateTime({f_s})", f"toDateTime({t_s})"
    f_ms = f"fromUnixTimestamp64Milli({request.from_ms})"
    t_ms = f"fromUnixTimestamp64Milli({request.to_ms})"

    def day(ms: int) -> str:
        return f"toDate('{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d}')"

    seconds = max(int(request.interval_ms / 1000), 1)
    millis = max(request.interval_ms, 1)

    def time_filter(a: list[str] | None) -> str:
        (c,) = _need(a, 1, "timeFilter")
        return f"{c} >= {f_dt} AND {c} <= {t_dt}"

    def time_filter_ms(a: list[str] | None) -> str:
        (c,) = _need(a, 1, "timeFilter_ms")
        return f"{c} >= {f_ms} AND {c} <= {t_ms}"

    def date_filter(a: list[str] | None) -> str:
        (c,) = _need(a, 1, "dateFilter")
        return f"{c} >= {day(request.from_ms)} AND {c} <= {day(request.to_ms)}"

    def time_interval(a: list[str] | None) -> str:
        (c,) = _need(a, 1, "timeInterval")
        return f"toStartOfInterval(toDateTime({c}), INTERVAL {seconds} second)"

    def time_interval_ms(a: list[str] | None) -> str:
        (c,) = _need(a, 1, "timeInterval_ms")
        return f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {millis} millisecond)"

    return {
        "fromTime": lambda a: f_dt,
        "toTime": lambda a: t_dt,
        "fromTime_ms": lambda a: f_ms,
        "toTime_ms": lambda a: t_ms,
        "timeFilter": time_filter,
        "timeFilter_ms": time_filter_ms,
        "dateFilter": date_filter,
        "timeInterval": time_interval,
        "timeInterval_ms": time_interval_ms,
        "interval_s": lambda a: str(seconds),
    }


def expand_macros(sql: str, request: Request) -> str:
    for name, fn in _macros(request).items():
        pattern = re.compile(r"\$__" + re.escape(name) + r"\b")
        # Right to left, so earlier positions stay valid while splicing.
        for m in reversed(list(pattern.finditer(sql))):
            args, length = _split_args(sql[m.end() :])
            sql = sql[: m.start()] + fn(args) + sql[m.end() + length :]
    return sql


def interpolate(sql: str, request: Request) -> str:
    """``sql`` as ClickHouse receives it from Grafana for ``request``."""
    sql = conditional_all(sql, request.variables)
    sql = replace_variables(sql, request)
    return expand_macros(sql, request)


def leftover(sql: str) -> list[str]:
    """Macros or variables still in ``sql`` after :func:`interpolate` (should be none)."""
    return re.findall(r"\$\{?\w+|\[\[\w+", sql)
