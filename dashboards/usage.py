"""The "VoIP usage" dashboard: minutes, calls, subscribers and apps per city.

Reads the usage rollups (table chosen per range or interval, see
:mod:`voipflow.dashboards.rollups`), ``flows_voip`` for calls, and ``cities`` for the
map's coordinates. Definitions an operator sees in the panel descriptions:

* VoIP minutes: estimated call time (``call_seconds`` / 60; paired media
  flows of one call count once);
* calls: distinct (subscriber, peer address, app) conversations in
  ``flows_voip``: the usage windows carry no call count;
* distinct subscribers: merged ``uniq`` states, exact below ~65k
  subscribers and within about 1 % above;
* VoIP share: VoIP bytes of the selected apps / all bytes of the selected
  cities, weighted by traffic. Each per-minute row carries its app's share of
  the city's bytes, so a window's city total is ``bytes / voip_share``; it is
  known for windows with VoIP only, which the denominator therefore covers
  (whatever the app selection). ``city_traffic_1h`` (migration 011) keeps
  those totals per hour, so long ranges read hours like the other panels
  (:func:`voipflow.dashboards.rollups.share_rows`).
"""

from __future__ import annotations

from typing import Any

from voipflow.dashboards.grafana import (
    barchart,
    dashboard,
    geomap,
    override,
    query_variable,
    row,
    stat,
    table,
    timeseries,
)
from voipflow.dashboards.rollups import (
    APP_FILTER,
    CITY_FILTER,
    Retention,
    share_rows,
    subscriber_rows,
    usage_rows,
)
from voipflow.schemas.voipflows import ROLES, Evidence

UID = "voipflow-usage"

_CITY_COORDS = """
    SELECT city, argMax(lat, updated) AS lat, argMax(lon, updated) AS lon
    FROM cities GROUP BY city
"""


#: An evidence bit (a power of two) as the name operators read.
EVIDENCE_NAME = (
    "transform(bit, ["
    + ", ".join(str(int(e)) for e in Evidence)
    + "], ["
    + ", ".join("'" + str(e.name).lower().replace("_", " ") + "'" for e in Evidence)
    + "], 'other')"
)


#: Per role a count column (``''``: rows of voip-flows.v1, written before roles).
ROLE_COUNTS = ",\n                   ".join(
    [f"countIf(role = '{name}') AS {name}" for name in ROLES] + ["countIf(role = '') AS unknown"]
)


def _classified_filter() -> str:
    return f"$__timeFilter_ms(time_received) AND {CITY_FILTER} AND {APP_FILTER}"


def _flows_filter() -> str:
    return f"$__timeFilter_ms(time_received) AND is_voip = 1 AND {CITY_FILTER} AND {APP_FILTER}"


def build(retention: Retention | None = None) -> dict[str, Any]:
    r = retention or Retention()
    by_range = usage_rows("range", r)
    by_interval = usage_rows("interval", r)
    week_before = usage_rows("range", r, shift_days=7)
    share_by_range = share_rows("range", r)
    subs_by_range = subscriber_rows("range", r)
    subs_by_interval = subscriber_rows("interval", r)
    city_subs_by_range = subscriber_rows("range", r, per="city")
    share_by_interval = share_rows("interval", r)
    panels = [
        row("Overview"),
        stat(
            "VoIP minutes",
            f"SELECT sum(call_seconds) / 60 AS voip_minutes FROM {by_range}",
            description="Estimated call minutes in the time range (paired media flows of one "
            "call count once).",
            decimals=0,
        ),
        stat(
            "Calls",
            f"SELECT uniq(subscriber_addr, peer_addr, app) AS calls FROM flows_voip "
            f"WHERE {_flows_filter()}",
            description="Distinct conversations (subscriber, peer address, app) in flows_voip: "
            "voip-usage windows carry no call count.",
            decimals=0,
        ),
        stat(
            "Distinct subscribers",
            f"SELECT uniqMerge(subscribers_state) AS subscribers FROM {subs_by_range}",
            description="Subscribers that used VoIP in the time range (merged uniq states).",
            decimals=0,
        ),
        stat(
            "VoIP traffic",
            f"SELECT sum(bytes) AS voip_bytes FROM {by_range}",
            description="VoIP bytes, corrected for sampling.",
            unit="decbytes",
        ),
        stat(
            "VoIP share of traffic",
            "SELECT if(sum(city_bytes) > 0, sum(voip_bytes) / sum(city_bytes), NULL) "
            f"AS voip_share FROM {share_by_range}",
            description="VoIP bytes of the selected apps / all bytes of the selected cities "
            "in the windows where any VoIP was seen, weighted by traffic.",
            unit="percentunit",
            decimals=2,
        ),
        stat(
            "Active cities",
            f"SELECT uniqExact(city) AS cities FROM {by_range}",
            description="Cities with any VoIP in the time range.",
            decimals=0,
        ),
        row("By city"),
        geomap(
            "VoIP minutes by city",
            f"""
            SELECT u.city AS city, c.lat AS lat, c.lon AS lon,
                   u.voip_minutes AS voip_minutes, n.subscribers AS subscribers,
                   s.voip_share AS voip_share
            FROM (
                SELECT city, sum(call_seconds) / 60 AS voip_minutes
                FROM {by_range}
                GROUP BY city
            ) AS u
            INNER JOIN ({_CITY_COORDS}) AS c ON c.city = u.city
            LEFT JOIN (
                SELECT city, uniqMerge(subscribers_state) AS subscribers
                FROM {city_subs_by_range}
                GROUP BY city
            ) AS n ON n.city = u.city
            LEFT JOIN (
                SELECT city,
                       if(sum(city_bytes) > 0, sum(voip_bytes) / sum(city_bytes), 0)
                           AS voip_share
                FROM {share_by_range}
                GROUP BY city
            ) AS s ON s.city = u.city
            ORDER BY voip_minutes DESC, city
            """,
            description="Marker size: VoIP minutes; colour: VoIP share of the city's traffic "
            "(0 where no traffic total is kept). Coordinates come from the "
            "cities table (`voipflow dashboards cities --file PREFIXES.csv`); a city "
            "missing there is listed in the table but not drawn.",
            size_field="voip_minutes",
            color_field="voip_share",
            text_field="city",
            unit="m",
        ),
        table(
            "Cities",
            f"""
            SELECT city, any(region) AS region, any(country) AS country,
                   sum(call_seconds) / 60 AS voip_minutes, sum(flows) AS flows,
                   uniqMerge(subscribers_state) AS subscribers, sum(bytes) AS voip_bytes,
                   argMax(app, call_seconds) AS top_app
            FROM (
                SELECT city, region, country, app, sum(call_seconds) AS call_seconds,
                       sum(flows) AS flows, uniqMergeState(subscribers_state) AS subscribers_state,
                       sum(bytes) AS bytes
                FROM {by_range}
                GROUP BY city, region, country, app
            )
            GROUP BY city
            ORDER BY voip_minutes DESC
            """,
            description="Per city: VoIP minutes, flow records, distinct subscribers, VoIP "
            "bytes and the app with the most call time.",
            w=12,
            h=14,
            overrides=[
                override("voip_minutes", unit="m", decimals=0),
                override("voip_bytes", unit="decbytes"),
            ],
        ),
        table(
            "Top cities, week over week",
            f"""
            SELECT cur.city AS city, cur.voip_minutes AS voip_minutes,
                   prev.voip_minutes AS voip_minutes_week_before,
                   if(prev.voip_minutes > 0, cur.voip_minutes / prev.voip_minutes - 1, NULL)
                       AS change
            FROM (
                SELECT city, sum(call_seconds) / 60 AS voip_minutes
                FROM {by_range}
                GROUP BY city
            ) AS cur
            LEFT JOIN (
                SELECT city, sum(call_seconds) / 60 AS voip_minutes
                FROM {week_before}
                GROUP BY city
            ) AS prev ON prev.city = cur.city
            ORDER BY voip_minutes DESC, city
            LIMIT 15
            """,
            description="The 15 cities with the most call minutes, against the same range "
            "one week earlier (change empty where the week before had none).",
            w=12,
            h=14,
            overrides=[
                override("voip_minutes", unit="m", decimals=0),
                override("voip_minutes_week_before", unit="m", decimals=0),
                override("change", unit="percentunit", decimals=1),
            ],
        ),
        barchart(
            "VoIP minutes per city",
            f"""
            SELECT city, sum(call_seconds) / 60 AS voip_minutes
            FROM {by_range}
            GROUP BY city
            ORDER BY voip_minutes DESC
            LIMIT 25
            """,
            description="The 25 cities with the most call minutes.",
            x_field="city",
            unit="m",
            w=8,
        ),
        barchart(
            "Calls per city",
            f"""
            SELECT city, uniq(subscriber_addr, peer_addr, app) AS calls
            FROM flows_voip
            WHERE {_flows_filter()}
            GROUP BY city
            ORDER BY calls DESC
            LIMIT 25
            """,
            description="Distinct conversations (subscriber, peer address, app) per city, "
            "from flows_voip.",
            x_field="city",
            w=8,
        ),
        barchart(
            "App share per city",
            f"""
            SELECT city, app, voip_minutes,
                   voip_minutes / sum(voip_minutes) OVER (PARTITION BY city) AS share
            FROM (
                SELECT city, app, sum(call_seconds) / 60 AS voip_minutes
                FROM {by_range}
                GROUP BY city, app
                HAVING voip_minutes > 0
            )
            ORDER BY city, app
            """,
            description="Each app's part of the city's VoIP minutes (rows city x app, "
            "turned into one bar per city by the grouping-to-matrix transformation).",
            x_field="city\\app",
            unit="percentunit",
            w=8,
            stacking="normal",
            transformations=[
                {
                    "id": "groupingToMatrix",
                    "options": {
                        "rowField": "city",
                        "columnField": "app",
                        "valueField": "share",
                        "emptyValue": "zero",
                    },
                }
            ],
        ),
        row("Trends"),
        timeseries(
            "VoIP minutes by app",
            f"""
            SELECT $__timeInterval(t) AS time, app, sum(call_seconds) / 60 AS voip_minutes
            FROM {by_interval}
            GROUP BY time, app
            ORDER BY time, app
            """,
            description="Call minutes per bucket and app.",
            unit="m",
            stack=True,
            interval="1m",
            max_data_points=200,
        ),
        timeseries(
            "VoIP bandwidth by app",
            f"""
            SELECT $__timeInterval(t) AS time, app,
                   sum(bytes) * 8 / greatest($__interval_s, max(g)) AS bits_per_s
            FROM {by_interval}
            GROUP BY time, app
            ORDER BY time, app
            """,
            description="Average VoIP bit rate per bucket and app (sampling corrected).",
            unit="bps",
            stack=True,
            interval="1m",
            max_data_points=200,
        ),
        timeseries(
            "Distinct subscribers by app",
            f"""
            SELECT $__timeInterval(t) AS time, app,
                   uniqMerge(subscribers_state) AS subscribers
            FROM {subs_by_interval}
            GROUP BY time, app
            ORDER BY time, app
            """,
            description="Subscribers that used each app in the bucket.",
            interval="1m",
            max_data_points=200,
        ),
        timeseries(
            "VoIP share of traffic by city",
            f"""
            SELECT $__timeInterval(t) AS time, city,
                   sum(voip_bytes) / sum(city_bytes) AS voip_share
            FROM {share_by_interval}
            GROUP BY time, city
            HAVING sum(city_bytes) > 0
            ORDER BY time, city
            """,
            description="VoIP bytes of the selected apps / all bytes of the city per bucket, "
            "in the windows where any VoIP was seen, weighted by traffic.",
            unit="percentunit",
            interval="1m",
            max_data_points=200,
        ),
        row("Classifier"),
        barchart(
            "Classifier confidence",
            f"""
            SELECT toString(bucket / 10) AS confidence_from,
                   countIf(is_voip = 1) AS voip_flows, countIf(is_voip = 0) AS other_flows
            FROM (
                SELECT least(toUInt8(floor(confidence * 10)), 9) AS bucket, is_voip
                FROM flows_voip
                WHERE {_classified_filter()}
            )
            GROUP BY bucket
            ORDER BY bucket
            """,
            description="Flow records by the classifier's confidence (tenths: 0.9 is 0.9 "
            "to 1.0), VoIP verdicts and records below the threshold apart. Most VoIP at "
            "0.9 and up means the figures rest on strong evidence.",
            x_field="confidence_from",
            horizontal=False,
            stacking="normal",
        ),
        barchart(
            "Evidence mix",
            f"""
            SELECT {EVIDENCE_NAME} AS evidence_kind, count() AS voip_flows,
                   count() / (SELECT count() FROM flows_voip WHERE {_flows_filter()}) AS share
            FROM flows_voip
            ARRAY JOIN bitmaskToArray(evidence) AS bit
            WHERE {_flows_filter()}
            GROUP BY evidence_kind
            ORDER BY voip_flows DESC, evidence_kind
            """,
            description="Share of VoIP flow records that carry each kind of evidence "
            "(bits of the evidence column, named in schemas/voipflows.py, set by "
            "streams/classify.py; a record carries several).",
            x_field="evidence_kind",
            unit="percentunit",
        ),
        barchart(
            "Flows by role",
            f"""
            SELECT app,
                   {ROLE_COUNTS}
            FROM flows_voip
            WHERE {_flows_filter()}
            GROUP BY app
            ORDER BY count() DESC, app
            """,
            description="VoIP flow records of each app by their part in the call (the role "
            "verdict): signalling, control (TLS to the app's servers, RTCP), media, relay "
            "(media through a TURN relay), ice (STUN checks). Only media and relay count "
            "call minutes. Unknown: rows written before flows had a role.",
            x_field="app",
            stacking="normal",
        ),
    ]
    variables = [
        query_variable("city", "City", "SELECT DISTINCT city FROM voip_usage_1d ORDER BY city"),
        query_variable(
            "app",
            "App",
            f"SELECT DISTINCT app FROM voip_usage_1d WHERE {CITY_FILTER} ORDER BY app",
        ),
    ]
    return dashboard(
        uid=UID,
        title="VoIP usage",
        description="VoIP minutes, calls, subscribers and apps per city, from the voipflow "
        "usage rollups in ClickHouse.",
        variables=variables,
        panels=panels,
    )
