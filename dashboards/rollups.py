"""Which usage table a panel reads: ``voip_usage_1m``, ``_1h`` or ``_1d``.

A Grafana query cannot name its table from the time range, so usage panels
read a ``UNION ALL`` of the three tables in which exactly one branch has a
true constant condition. ClickHouse folds the others to ``WHERE 0`` and
reads no part of their tables, so a year on the daily table costs what a
year of days costs, and a short range keeps per-minute detail.

Two ways to choose:

* by **range** (totals: stats, maps, per-city tables): per-minute rows up to
  two days, hourly rows up to 62 days (each day whose 24 hours all start in
  the range read as its daily row: the same sums and unions, from a 24th of
  the rows), daily rows beyond;
* by **interval** (time series, ``$__interval_s``): the coarsest table whose
  rows are no wider than a bucket, so buckets are exact sums of rows.

Either way a table is used only while the range starts inside its retention
(``usage_1m_ttl_days``, ``usage_1h_ttl_days``); older ranges fall through to
the next table. A row counts when its period *starts* inside the range
(``$__timeFilter``): a range that cuts an hour in two counts that whole hour
from the hourly table, and not at all when the cut hour starts before the
range. Every branch yields the same columns::

    t DateTime('UTC')  period start       g UInt32  period length, seconds
    city, region, country, app  String    flows, packets, bytes UInt64
    call_seconds Float64                  minutes Float64 (of windows with usage)
    subscribers_state AggregateFunction(uniq, UInt64)
"""

from __future__ import annotations

from dataclasses import dataclass

#: Filters on the dashboard's ``city`` and ``app`` variables; "All" adds none.
CITY_FILTER = "$__conditionalAll(city IN (${city:singlequote}), $city)"
APP_FILTER = "$__conditionalAll(app IN (${app:singlequote}), $app)"

#: Longest range (seconds) totals read from per-minute rows, then hourly rows.
RANGE_1M_MAX_S = 2 * 86400
RANGE_1H_MAX_S = 62 * 86400

_RANGE_S = "dateDiff('second', $__fromTime, $__toTime)"


@dataclass(frozen=True, slots=True)
class Retention:
    """Days each usage table keeps (0 = forever), as ``ClickHouseConfig`` sets them."""

    usage_1m_days: int = 35
    usage_1h_days: int = 400
    #: Whole days of hourly ranges come from the daily tables only inside this.
    usage_1d_days: int = 0


def _fresh(days: int, shift_days: int = 0) -> str:
    if days <= 0:
        return "1"
    return f"{_from(shift_days)} >= now() - INTERVAL {days} DAY"


def _from(shift_days: int) -> str:
    return f"$__fromTime - INTERVAL {shift_days} DAY" if shift_days else "$__fromTime"


def _time_filter(shift_days: int) -> str:
    """``$__timeFilter(t)``, or the same range ``shift_days`` earlier."""
    if not shift_days:
        return "$__timeFilter(t)"
    return f"t >= {_from(shift_days)} AND t <= $__toTime - INTERVAL {shift_days} DAY"


def _branch(table: str, cond: str, filters: str, shift_days: int = 0) -> str:
    # voip_usage_1m rows are one window of window_s seconds (60 by default).
    if table == "voip_usage_1m":
        t, g, minutes = "window_start", "window_s", "window_s / 60"
    elif table == "voip_usage_1h":
        t, g, minutes = "window_start", "3600", "minutes"
    else:
        t, g, minutes = "toDateTime(day, 'UTC')", "86400", "minutes"
    return (
        f"SELECT {t} AS t, toUInt32({g}) AS g, toString(city) AS city, "
        "toString(region) AS region, toString(country) AS country, toString(app) AS app, "
        "toUInt64(flows) AS flows, toUInt64(packets) AS packets, toUInt64(bytes) AS bytes, "
        f"toFloat64(call_seconds) AS call_seconds, toFloat64({minutes}) AS minutes, "
        "subscribers_state\n"
        f"  FROM {table}\n"
        f"  WHERE ({cond}) AND {_time_filter(shift_days)} AND {filters}"
    )


def _choices(by: str, retention: Retention, shift_days: int = 0) -> tuple[str, str]:
    """The conditions that pick the per-minute table, and else the hourly one."""
    if by == "range":
        fine = f"{_RANGE_S} <= {RANGE_1M_MAX_S} AND {_fresh(retention.usage_1m_days, shift_days)}"
        hourly = f"{_RANGE_S} <= {RANGE_1H_MAX_S} AND {_fresh(retention.usage_1h_days, shift_days)}"
    elif by == "interval":
        fine = f"$__interval_s < 3600 AND {_fresh(retention.usage_1m_days)}"
        hourly = f"$__interval_s < 86400 AND {_fresh(retention.usage_1h_days)}"
    else:
        raise ValueError(f"by must be 'range' or 'interval', not {by!r}")
    return fine, hourly


_DAY_T = "toDateTime(day, 'UTC')"


def _whole_day(start: str, shift_days: int = 0) -> str:
    """The day starting at ``start`` has all its 24 hours in the range (shifted back)."""
    to = f"$__toTime - INTERVAL {shift_days} DAY" if shift_days else "$__toTime"
    return f"{start} >= {_from(shift_days)} AND {start} + INTERVAL 23 HOUR <= {to}"


def _hours_and_days(
    fine: str, hourly: str, by: str, retention: Retention, shift_days: int = 0
) -> tuple[str, str]:
    """Conditions of the hourly and the daily branch.

    Where the range picks hourly rows, a day whose 24 hours all start in the
    range is read as its one daily row instead: sums and unions of sets do not
    care how time is cut, so the figures are those of the hours, for a 24th
    of the rows in the middle of a long range. Only while the range starts
    inside the daily tables' retention (they keep forever by default).
    """
    hour = f"NOT ({fine}) AND {hourly}"
    day = f"NOT ({fine}) AND NOT ({hourly})"
    if by != "range":  # buckets narrower than a day: no day fits in one
        return hour, day
    whole = _whole_day("toStartOfDay(window_start)", shift_days)
    kept = f" AND {_fresh(retention.usage_1d_days, shift_days)}" if retention.usage_1d_days else ""
    return (
        f"{hour} AND NOT ({whole}{kept})",
        f"({day}) OR ({hour} AND {_whole_day(_DAY_T, shift_days)}{kept})",
    )


def usage_rows(
    by: str, retention: Retention, filters: str | None = None, shift_days: int = 0
) -> str:
    """The ``UNION ALL`` subquery over the usage tables, choosing ``by`` range or interval.

    ``shift_days`` reads the same range that many days earlier (week over
    week: 7), choosing the table as the range itself would.
    """
    filters = filters or f"{CITY_FILTER} AND {APP_FILTER}"
    fine, hourly = _choices(by, retention, shift_days)
    hours, days = _hours_and_days(fine, hourly, by, retention, shift_days)
    branches = [
        _branch("voip_usage_1m", fine, filters, shift_days),
        _branch("voip_usage_1h", hours, filters, shift_days),
        _branch("voip_usage_1d", days, filters, shift_days),
    ]
    return "(\n  " + "\n  UNION ALL\n  ".join(branches) + "\n)"


#: One hour of ``city_traffic_1h``: the city's bytes in its windows with VoIP.
#: FINAL merges the rows of one (city, hour) as the table's merges would (maxMap
#: per window), at read time and only where parts still hold several: on merged
#: parts a fraction of what maxMap in a GROUP BY costs over every row.
_CITY_HOURS = (
    "SELECT window_start, city, arraySum(windows.2) AS city_bytes\n"
    "    FROM city_traffic_1h FINAL\n"
    "    WHERE ({cond}) AND {time} AND {filters}"
)


def city_rows(by: str, retention: Retention, filters: str | None = None) -> str:
    """All bytes of each city per period, chosen ``by`` range or interval as :func:`usage_rows`.

    The denominator of the VoIP share: the city's traffic in the windows where
    any VoIP was seen (the only windows whose total the usage rows carry),
    whatever the app selection. The periods are those of the usage table the
    same choice reads (windows, hours, days that start in the range), so
    VoIP bytes from :func:`usage_rows` and these totals cover the same time.
    Columns: ``t DateTime('UTC')``, ``city String``, ``city_bytes Float64``.

    Per-minute rows give a window's total as bytes / voip_share of any of its
    rows (the largest, as migration 011 keeps them); ``city_traffic_1h`` holds
    the same totals per window, summed per hour or, beyond the hourly range,
    per day.
    """
    filters = filters or CITY_FILTER
    fine, hourly = _choices(by, retention)
    minutes = (
        "SELECT window_start AS t, toString(city) AS city, "
        "max(bytes / voip_share) AS city_bytes\n"
        "  FROM voip_usage_1m\n"
        f"  WHERE ({fine}) AND $__timeFilter(window_start) AND voip_share > 0 AND {filters}\n"
        "  GROUP BY t, city"
    )
    hours = (
        "SELECT window_start AS t, toString(city) AS city, city_bytes FROM (\n    "
        + _CITY_HOURS.format(
            cond=f"NOT ({fine}) AND {hourly}", time="$__timeFilter(window_start)", filters=filters
        )
        + "\n  )"
    )
    day = "toStartOfDay(window_start, 'UTC')"
    days = (
        f"SELECT {day} AS t, toString(city) AS city, "
        "sum(city_bytes) AS city_bytes FROM (\n    "
        + _CITY_HOURS.format(
            cond=f"NOT ({fine}) AND NOT ({hourly})",
            time=f"{day} >= $__fromTime AND {day} <= $__toTime",
            filters=filters,
        )
        + "\n  )\n  GROUP BY t, city"
    )
    return "(\n  " + "\n  UNION ALL\n  ".join([minutes, hours, days]) + "\n)"


def share_rows(by: str, retention: Retention) -> str:
    """VoIP bytes (selected cities and apps) and city bytes (selected cities) per period.

    ``UNION ALL`` of :func:`usage_rows` and :func:`city_rows` with columns
    ``t``, ``city``, ``voip_bytes``, ``city_bytes`` (each row has one of the
    two, the other 0): group them and divide the sums for the VoIP share.
    """
    return (
        "(\n  SELECT t, city, toFloat64(bytes) AS voip_bytes, 0. AS city_bytes\n  FROM "
        + usage_rows(by, retention)
        + "\n  UNION ALL\n  SELECT t, city, 0. AS voip_bytes, city_bytes FROM "
        + city_rows(by, retention)
        + "\n)"
    )


#: True when the dashboard's city (app) variable is "All" (``$__conditionalAll``
#: gives ``1=1`` then, and its first argument otherwise).
ALL_CITIES = "($__conditionalAll(0, $city))"
ALL_APPS = "($__conditionalAll(0, $app))"

#: per -> (the variable collapsed when All, its filter, the filter kept, tables).
_SUBSCRIBER_TABLES = {
    "app": (ALL_CITIES, APP_FILTER, "app_subscribers"),
    "city": (ALL_APPS, CITY_FILTER, "city_subscribers"),
}


def subscriber_rows(by: str, retention: Retention, per: str = "app") -> str:
    """Subscriber states per period and ``per`` (app or city), chosen ``by`` range or
    interval as :func:`usage_rows`.

    When the other variable selects everything (every city for ``per="app"``,
    every app for ``per="city"``), hours and days come from
    ``app_subscribers_1h``/``_1d`` or ``city_subscribers_1h``/``_1d`` (one
    state per app or city and period, migration 012) instead of the per-city-
    and-app rollups; the sets they merge are the same, so the counts are too.
    Per-minute rows and other selections read the usage tables. Hours and
    days as :func:`usage_rows` cuts them. Columns: ``t``, ``g``, ``per``
    (``app`` or ``city``), ``subscribers_state``.
    """
    everything, kept_filter, prefix = _SUBSCRIBER_TABLES[per]
    fine, hourly = _choices(by, retention)
    chosen = f"NOT {everything}"
    filters = f"{CITY_FILTER} AND {APP_FILTER}"
    hours, days = _hours_and_days(fine, hourly, by, retention)

    def detailed(table: str, cond: str) -> str:
        return (
            f"SELECT t, g, {per}, subscribers_state FROM (\n  "
            + _branch(table, cond, filters)
            + "\n  )"
        )

    def collapsed(table: str, t: str, g: int, cond: str) -> str:
        return (
            f"SELECT {t} AS t, toUInt32({g}) AS g, toString({per}) AS {per}, subscribers_state\n"
            f"  FROM {table}\n"
            f"  WHERE ({cond}) AND $__timeFilter(t) AND {kept_filter}"
        )

    branches = [
        detailed("voip_usage_1m", fine),
        detailed("voip_usage_1h", f"({hours}) AND {chosen}"),
        detailed("voip_usage_1d", f"({days}) AND {chosen}"),
        collapsed(f"{prefix}_1h", "window_start", 3600, f"({hours}) AND {everything}"),
        collapsed(f"{prefix}_1d", _DAY_T, 86400, f"({days}) AND {everything}"),
    ]
    return "(\n  " + "\n  UNION ALL\n  ".join(branches) + "\n)"
