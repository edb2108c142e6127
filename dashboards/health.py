"""The "Pipeline health" dashboard: exporters, collectors and the sink.

Reads ``exporter_health`` (a report every 10 s per exporter and observation
domain from each collector process; counters are deltas since the previous
report, ``templates``, ``records_held`` and ``sampling_rate`` are current
values), ``voip_usage_1m`` for the delays of usage windows, ``flows_voip``
for stored flow rates and ``pipeline_stats`` for the sink's own figures
(rows inserted, bad messages, retries: totals since the sink started; lag:
messages not yet committed per topic and partition).

Sequence loss is a share of what the exporter numbered: NetFlow v9 numbers
export packets (RFC 3954), NetFlow v5 and IPFIX number flow records (RFC
7011), so the expected count is ``packets`` for v9 and ``records`` otherwise.
``kernel_drops`` is the same figure on every report of one collector process
and interval (the kernel cannot tell the exporter of a dropped datagram):
it is taken once per collector and report, never summed over exporters.

Coverage reads ``exporter_traffic_1m`` (traffic.v1 windows of reception
time): which flows of each exporter were placed in a city, and which parts
of the range its windows cover.

Besides the sink's lag, the delay of each usage window from its end to its
insert is shown, split at the worker's ``produced`` time.
"""

from __future__ import annotations

from typing import Any

from voipflow.dashboards.grafana import (
    dashboard,
    override,
    query_variable,
    row,
    stat,
    table,
    timeseries,
)

UID = "voipflow-health"

#: Exporter address as operators write it: IPv4 without the ::ffff: prefix.
EXPORTER = "replaceRegexpOne(toString(exporter), '^::ffff:', '')"
EXPORTER_FILTER = f"$__conditionalAll({EXPORTER} IN (${{exporter:singlequote}}), $exporter)"
#: What the exporter's sequence numbers count (see the module docstring).
EXPECTED = "if(netflow_version = 9, packets, records)"

_WHERE = f"$__timeFilter_ms(ts) AND {EXPORTER_FILTER}"
_RANGE_S = "dateDiff('second', $__fromTime, $__toTime)"
_TRAFFIC_WHERE = f"$__timeFilter(window_start) AND {EXPORTER_FILTER}"


def _per_exporter_rate(title: str, column: str, description: str, unit: str) -> dict[str, Any]:
    return timeseries(
        title,
        f"""
        SELECT $__timeInterval(ts) AS time, {EXPORTER} AS exporter_ip,
               sum({column}) / $__interval_s AS per_s
        FROM exporter_health
        WHERE {_WHERE}
        GROUP BY time, exporter_ip
        ORDER BY time, exporter_ip
        """,
        description=description,
        unit=unit,
        interval="10s",
    )


def _per_exporter_gauge(title: str, column: str, description: str) -> dict[str, Any]:
    return timeseries(
        title,
        f"""
        SELECT $__timeInterval(ts) AS time, {EXPORTER} AS exporter_ip, max({column}) AS value
        FROM exporter_health
        WHERE {_WHERE}
        GROUP BY time, exporter_ip
        ORDER BY time, exporter_ip
        """,
        description=description,
        interval="10s",
    )


def _sink_counter_rate(title: str, metric: str, series: str, description: str) -> dict[str, Any]:
    """Per-second rate of a sink counter in ``pipeline_stats`` (a total since start).

    Each report's increase over the previous report of the same instance and
    labels is summed per bucket; a drop means the sink restarted, and the
    value itself is then the increase. The first report of a series in the
    range only sets the baseline.
    """
    return timeseries(
        title,
        f"""
        SELECT $__timeInterval(ts) AS time, series, sum(delta) / $__interval_s AS per_s
        FROM (
            SELECT ts, {series} AS series,
                   value - lagInFrame(value, 1, value) OVER (
                       PARTITION BY instance, labels ORDER BY ts
                       ROWS BETWEEN 1 PRECEDING AND CURRENT ROW
                   ) AS step,
                   if(step < 0, value, step) AS delta
            FROM pipeline_stats
            WHERE $__timeFilter(ts) AND component = 'sink' AND metric = '{metric}'
        )
        GROUP BY time, series
        ORDER BY time, series
        """,
        description=description + " From the sink's own rows in pipeline_stats.",
        unit="short",
        interval="1m",
    )


def build() -> dict[str, Any]:
    kernel_drops_per_report = """
        SELECT ts, collector, max(kernel_drops) AS drops
        FROM exporter_health
        WHERE $__timeFilter_ms(ts)
        GROUP BY ts, collector
    """
    panels = [
        row("Exporters"),
        stat(
            "Exporters reporting",
            f"SELECT uniqExact(exporter) AS exporters FROM exporter_health WHERE {_WHERE}",
            description="Exporters with at least one health report in the time range.",
            decimals=0,
        ),
        stat(
            "Export packets/s",
            f"SELECT sum(packets) / {_RANGE_S} AS packets_per_s FROM exporter_health "
            f"WHERE {_WHERE}",
            description="NetFlow/IPFIX datagrams received per second, averaged over the range.",
            unit="pps",
        ),
        stat(
            "Flow records/s",
            f"SELECT sum(records) / {_RANGE_S} AS records_per_s FROM exporter_health "
            f"WHERE {_WHERE}",
            description="Flow records decoded per second, averaged over the range.",
            unit="short",
        ),
        stat(
            "Sequence loss",
            f"SELECT sum(sequence_lost) / nullIf(sum(sequence_lost) + sum({EXPECTED}), 0) "
            f"AS loss FROM exporter_health WHERE {_WHERE}",
            description="Share of what exporters numbered (v9: packets; v5, IPFIX: records) "
            "that never arrived.",
            unit="percentunit",
            decimals=3,
        ),
        stat(
            "Decode errors",
            f"SELECT sum(decode_errors) AS decode_errors FROM exporter_health WHERE {_WHERE}",
            description="Datagrams or sets the collectors could not decode.",
            decimals=0,
        ),
        stat(
            "Kernel drops",
            f"SELECT sum(drops) AS kernel_drops FROM ({kernel_drops_per_report})",
            description="Datagrams the kernel dropped on the collectors' sockets (all "
            "exporters: the kernel cannot tell whose they were).",
            decimals=0,
        ),
        table(
            "Exporters",
            f"""
            SELECT {EXPORTER} AS exporter_ip, observation_domain_id AS domain,
                   argMax(netflow_version, ts) AS version,
                   arrayStringConcat(arraySort(groupUniqArray(collector)), ', ') AS collectors,
                   max(ts) AS last_report,
                   sum(packets) AS export_packets, sum(records) AS flow_records,
                   sum(sequence_lost) AS lost,
                   sum(sequence_lost) / nullIf(sum(sequence_lost) + sum({EXPECTED}), 0) AS loss,
                   sum(decode_errors) AS decode_errors,
                   argMax(templates, ts) AS templates,
                   argMax(sampling_rate, ts) AS sampling_rate,
                   argMax(records_held, ts) AS records_held,
                   sum(exporter_restarts) AS restarts
            FROM exporter_health
            WHERE {_WHERE}
            GROUP BY exporter_ip, domain
            ORDER BY exporter_ip, domain
            """,
            description="Per exporter and observation domain over the range; templates, "
            "sampling rate and held records are the latest reported values.",
            h=9,
            overrides=[override("loss", unit="percentunit", decimals=3)],
        ),
        _per_exporter_rate(
            "Export packets/s by exporter", "packets", "Datagrams per second.", "pps"
        ),
        _per_exporter_rate(
            "Flow records/s by exporter", "records", "Flow records per second.", "short"
        ),
        timeseries(
            "Sequence loss by exporter",
            f"""
            SELECT $__timeInterval(ts) AS time, {EXPORTER} AS exporter_ip,
                   sum(sequence_lost) / nullIf(sum(sequence_lost) + sum({EXPECTED}), 0) AS loss
            FROM exporter_health
            WHERE {_WHERE}
            GROUP BY time, exporter_ip
            ORDER BY time, exporter_ip
            """,
            description="Share of numbered packets (v9) or records (v5, IPFIX) lost per bucket.",
            unit="percentunit",
            interval="10s",
        ),
        _per_exporter_rate(
            "Decode errors/s by exporter",
            "decode_errors",
            "Datagrams or sets that could not be decoded, per second.",
            "short",
        ),
        _per_exporter_gauge(
            "Templates by exporter", "templates", "Templates the collector holds per exporter."
        ),
        _per_exporter_gauge(
            "Sampling rate by exporter",
            "sampling_rate",
            "1 in N packets sampled, as the exporter announced or the settings override.",
        ),
        _per_exporter_gauge(
            "Records held for templates",
            "records_held",
            "Data sets waiting for their template: a lasting value means a template never came.",
        ),
        timeseries(
            "Kernel drops by collector",
            f"""
            SELECT $__timeInterval(ts) AS time, collector, sum(drops) / $__interval_s AS drops_per_s
            FROM ({kernel_drops_per_report})
            GROUP BY time, collector
            ORDER BY time, collector
            """,
            description="Datagrams per second the kernel dropped on each collector's sockets "
            "(receive buffer full: add collector processes or buffer).",
            unit="pps",
            interval="10s",
        ),
        row("Coverage"),
        table(
            "Exporter coverage",
            f"""
            SELECT {EXPORTER} AS exporter_ip, sum(flows) AS flow_records,
                   sum(placed_flows) AS placed, sum(unlocated_flows) AS unlocated,
                   sum(unhomed_flows) AS unhomed,
                   sum(placed_flows) / greatest(sum(flows), 1) AS placed_share,
                   least(1, sum(window_s) / (uniqExact(observation_domain_id) * {_RANGE_S}))
                       AS time_covered,
                   max(window_start) AS last_window
            FROM exporter_traffic_1m
            WHERE {_TRAFFIC_WHERE}
            GROUP BY exporter_ip
            ORDER BY flow_records DESC, exporter_ip
            """,
            description="Per exporter over the range (traffic.v1 windows): flow records "
            "placed in a city, at home but in no city (extend the prefix table), or with "
            "no side at home (extend VOIPFLOW_WORKER_HOME_NETWORKS), and the share of the "
            "range its windows cover (below 1: gaps).",
            h=9,
            overrides=[
                override("placed_share", unit="percentunit", decimals=1),
                override("time_covered", unit="percentunit", decimals=1),
            ],
        ),
        timeseries(
            "Exporter coverage by exporter",
            f"""
            SELECT $__timeInterval(window_start) AS time, {EXPORTER} AS exporter_ip,
                   least(1, sum(window_s) / (uniqExact(observation_domain_id) * $__interval_s))
                       AS covered
            FROM exporter_traffic_1m
            WHERE {_TRAFFIC_WHERE}
            GROUP BY time, exporter_ip
            ORDER BY time, exporter_ip
            """,
            description="Share of each bucket the exporter's traffic windows cover; a "
            "missing point is a gap (the exporter, its collector or the workers were away).",
            unit="percentunit",
            interval="1m",
            max_data_points=200,
            w=24,
        ),
        row("Pipeline"),
        timeseries(
            "Usage window delay",
            """
            SELECT $__timeInterval(window_start) AS time,
                   avg(dateDiff('millisecond', window_start + window_s, produced)) / 1000
                       AS close_delay_avg,
                   max(dateDiff('millisecond', window_start + window_s, produced)) / 1000
                       AS close_delay_max,
                   avg(dateDiff('millisecond', produced, inserted_at)) / 1000 AS sink_delay_avg,
                   max(dateDiff('millisecond', produced, inserted_at)) / 1000 AS sink_delay_max
            FROM voip_usage_1m
            WHERE $__timeFilter(window_start)
            GROUP BY time
            ORDER BY time
            """,
            description="Close delay: window end to the worker publishing it (lateness "
            "allowance included). Sink delay: publishing to the insert in ClickHouse "
            "(1-second resolution).",
            unit="s",
            interval="1m",
        ),
        timeseries(
            "VoIP flows stored/s",
            """
            SELECT $__timeInterval(time_received) AS time, app,
                   count() / $__interval_s AS flows_per_s
            FROM flows_voip
            WHERE $__timeFilter_ms(time_received)
            GROUP BY time, app
            ORDER BY time, app
            """,
            description="Classified VoIP flow records inserted into flows_voip per second, "
            "by app, at the time the collector received them.",
            unit="short",
            stack=True,
            interval="10s",
        ),
        timeseries(
            "Sink lag by topic",
            """
            SELECT time, topic, sum(lag) AS lag
            FROM (
                SELECT $__timeInterval(ts) AS time, instance, topic, max(lag) AS lag
                FROM (
                    SELECT ts, instance, JSONExtractString(labels, 'topic') AS topic,
                           sum(value) AS lag
                    FROM pipeline_stats
                    WHERE $__timeFilter(ts) AND component = 'sink' AND metric = 'lag'
                    GROUP BY ts, instance, topic
                )
                GROUP BY time, instance, topic
            )
            GROUP BY time, topic
            ORDER BY time, topic
            """,
            description="Messages on each topic not yet committed by the sink (summed over "
            "partitions; the largest report of each sink instance in the bucket, summed "
            "over instances). Written by the sink every VOIPFLOW_SINK_STATS_INTERVAL_S.",
            interval="1m",
        ),
        _sink_counter_rate(
            "Sink rows inserted/s by table",
            "rows_inserted",
            "JSONExtractString(labels, 'table')",
            "Rows the sink inserted into each table, per second.",
        ),
        _sink_counter_rate(
            "Sink bad messages/s",
            "bad_messages",
            "concat(JSONExtractString(labels, 'topic'), ' ', JSONExtractString(labels, 'reason'))",
            "Messages the sink skipped as bad, per second, by topic and reason.",
        ),
        _sink_counter_rate(
            "Sink retries/s",
            "transient_errors",
            "instance",
            "Inserts the sink retried after a transient ClickHouse error, per second and "
            "sink instance.",
        ),
    ]
    variables = [
        query_variable(
            "exporter",
            "Exporter",
            f"SELECT DISTINCT {EXPORTER} AS exporter_ip FROM exporter_health ORDER BY exporter_ip",
        )
    ]
    return dashboard(
        uid=UID,
        title="Pipeline health",
        description="Exporters, collectors and the sink: packets, records, loss, templates, "
        "sampling, kernel drops, decode errors and delays.",
        variables=variables,
        panels=panels,
        time_from="now-6h",
        refresh="30s",
    )
