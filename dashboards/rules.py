"""The "Rules" dashboard: rules by state, their events, hits, failed applications, effect.

Reads ``rules`` (one row per rule version) and ``rule_events`` (one row per
state-machine event: published, expired, ... with ``feedback`` empty, and the
enforcement points' feedback, ``feedback`` = applied, failed or removed, with
hit counters; see docs/sql.md). A failed application is a row with
``feedback = 'failed'``; an event's kind is its feedback when it has one,
else its ``event``. A rule's state is the ``state`` of its latest row up to
the end of the time range; its city, app and action are those of its latest
version. ``hits``, ``hit_packets`` and ``hit_bytes`` are counts since the
enforcement point's previous report (deltas, like the exporter health
counters), so they are summed. Rules with an empty city or app apply
everywhere and stay listed whatever the filter.
"""

from __future__ import annotations

from typing import Any

from voipflow.dashboards.grafana import (
    dashboard,
    override,
    piechart,
    query_variable,
    row,
    stat,
    table,
    timeseries,
)
from voipflow.dashboards.rollups import APP_FILTER, CITY_FILTER
from voipflow.schemas.rule_effect import rule_effect_sql

UID = "voipflow-rules"

#: Latest version of every rule.
_LATEST_RULES = """
    SELECT rule_id, max(version) AS latest_version, argMax(action, version) AS action,
           argMax(city, version) AS city, argMax(app, version) AS app,
           argMax(rate_limit_kbps, version) AS rate_limit_kbps,
           argMax(created, version) AS created, argMax(expires, version) AS expires,
           argMax(reason, version) AS reason, argMax(author, version) AS author
    FROM rules
    GROUP BY rule_id
"""

#: Rules the city and app variables select (rules for all cities/apps always).
_SELECTED = f"""
    rule_id IN (
        SELECT rule_id FROM ({_LATEST_RULES})
        WHERE ({CITY_FILTER} OR city = '') AND ({APP_FILTER} OR app = '')
    )
"""


def build() -> dict[str, Any]:
    in_range = f"$__timeFilter_ms(ts) AND {_SELECTED}"
    panels = [
        row("Rules"),
        piechart(
            "Rules by state",
            f"""
            SELECT state, count() AS rules
            FROM (
                SELECT rule_id, argMax(state, ts) AS state
                FROM rule_events
                WHERE ts <= $__toTime_ms AND {_SELECTED}
                GROUP BY rule_id
            )
            GROUP BY state
            ORDER BY state
            """,
            description="Each rule counted once, in the state of its latest event up to the "
            "end of the time range.",
        ),
        stat(
            "Rule hits",
            f"SELECT sum(hits) AS hits FROM rule_events WHERE {in_range}",
            description="Packets or flows the enforcement points matched, summed over the "
            "time range.",
            decimals=0,
            w=4,
            h=8,
        ),
        stat(
            "Failed applications",
            f"SELECT countIf(feedback = 'failed') AS failed FROM rule_events WHERE {in_range}",
            description="Times an enforcement point reported that it could not apply a rule.",
            decimals=0,
            w=4,
            h=8,
        ),
        table(
            "Top rules by hits",
            f"""
            SELECT rule_id, argMax(action, ts) AS action, sum(hits) AS hits,
                   sum(hit_packets) AS hit_packets, sum(hit_bytes) AS hit_bytes,
                   uniqExactIf(enforcement_point, feedback = 'applied') AS applied_at_points
            FROM rule_events
            WHERE {in_range}
            GROUP BY rule_id
            HAVING hits > 0
            ORDER BY hits DESC, rule_id
            LIMIT 20
            """,
            description="Rules with the most hits in the time range.",
            w=8,
            overrides=[override("hit_bytes", unit="decbytes")],
        ),
        table(
            "Rules",
            f"""
            SELECT r.rule_id AS rule_id, r.latest_version AS version, r.action AS action,
                   r.city AS city, r.app AS app, r.rate_limit_kbps AS rate_limit_kbps,
                   s.state AS state, s.last_change AS last_change,
                   h.hits AS hits, h.failures AS failures,
                   r.created AS created, r.expires AS expires, r.reason AS reason,
                   r.author AS author
            FROM ({_LATEST_RULES}) AS r
            LEFT JOIN (
                SELECT rule_id, argMax(state, ts) AS state, max(ts) AS last_change
                FROM rule_events
                WHERE ts <= $__toTime_ms
                GROUP BY rule_id
            ) AS s ON s.rule_id = r.rule_id
            LEFT JOIN (
                SELECT rule_id, sum(hits) AS hits, countIf(feedback = 'failed') AS failures
                FROM rule_events
                WHERE $__timeFilter_ms(ts)
                GROUP BY rule_id
            ) AS h ON h.rule_id = r.rule_id
            WHERE ({CITY_FILTER} OR r.city = '') AND ({APP_FILTER} OR r.app = '')
            ORDER BY hits DESC, rule_id
            """,
            description="Every rule at its latest version with its current state, hits and "
            "failed applications in the time range (state is empty for a rule without "
            "events).",
            h=10,
        ),
        table(
            "Rule effect",
            rule_effect_sql(
                _SELECTED, until="$__toTime", spans="t_on <= $__toTime AND t_off >= $__fromTime"
            ),
            description="Per applied rule whose applied span overlaps the range: VoIP of its "
            "city and app while applied (first applied feedback until expiry or the end of the "
            "range) against the same span just before, from per-minute usage rows. Leakage: "
            "call seconds while applied / before (for a block, what still got through). The "
            "same SQL as `voipflow rules show`.",
            h=10,
            overrides=[
                override("bytes_before", unit="decbytes"),
                override("bytes_after", unit="decbytes"),
                override("leakage", unit="percentunit", decimals=1),
            ],
        ),
        row("Activity"),
        timeseries(
            "Rule hits by rule",
            f"""
            SELECT $__timeInterval(ts) AS time, rule_id, sum(hits) / $__interval_s AS hits_per_s
            FROM rule_events
            WHERE {in_range}
            GROUP BY time, rule_id
            ORDER BY time, rule_id
            """,
            description="Hits per second reported by the enforcement points, per rule.",
            unit="short",
            interval="10s",
        ),
        timeseries(
            "Failed applications by enforcement point",
            f"""
            SELECT $__timeInterval(ts) AS time, enforcement_point, count() AS failures
            FROM rule_events
            WHERE {in_range} AND feedback = 'failed'
            GROUP BY time, enforcement_point
            ORDER BY time, enforcement_point
            """,
            description="Failed applications per bucket and enforcement point.",
            stack=True,
            interval="10s",
        ),
        timeseries(
            "Rule events by type",
            f"""
            SELECT $__timeInterval(ts) AS time, if(feedback != '', feedback, event) AS kind,
                   count() AS events
            FROM rule_events
            WHERE {in_range}
            GROUP BY time, kind
            ORDER BY time, kind
            """,
            description="Events per bucket by kind: the enforcement points' feedback "
            "(applied, failed, removed) or the state machine's event (published, expired, ...).",
            stack=True,
            interval="10s",
            w=24,
        ),
        table(
            "Recent failures",
            f"""
            SELECT ts, rule_id, rule_version, enforcement_point, state, detail
            FROM rule_events
            WHERE {in_range} AND feedback = 'failed'
            ORDER BY ts DESC, rule_id
            LIMIT 100
            """,
            description="The latest failed applications with the enforcement point's reason.",
            w=12,
            h=10,
        ),
        table(
            "Rule events",
            f"""
            SELECT ts, rule_id, rule_version, event, state, action, feedback,
                   enforcement_point, hits, detail
            FROM rule_events
            WHERE {in_range}
            ORDER BY ts DESC, rule_id
            LIMIT 500
            """,
            description="The latest 500 events of the selected rules.",
            w=12,
            h=10,
        ),
    ]
    variables = [
        query_variable(
            "city", "City", "SELECT DISTINCT city FROM rules WHERE city != '' ORDER BY city"
        ),
        query_variable("app", "App", "SELECT DISTINCT app FROM rules WHERE app != '' ORDER BY app"),
    ]
    return dashboard(
        uid=UID,
        title="Rules",
        description="Operator rules: their state, hits and the enforcement points' feedback.",
        variables=variables,
        panels=panels,
    )
