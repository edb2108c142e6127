"""Prometheus metrics of the sink, registered in a registry the caller gives.

The same style as :class:`voipflow.collectors.metrics.CollectorMetrics`: the command
builds one :class:`SinkMetrics` over the registry it serves, tests build
their own over a fresh registry, so several sinks in one process never clash
and a test reads exactly its sink's figures. The names and labels are the
ones dashboards and ``docs/clickhouse.md`` rely on.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Seconds buckets of one ClickHouse insert.
INSERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class SinkMetrics:
    """The sink's metrics, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rows = Counter(
            "voipflow_sink_rows_inserted", "Rows inserted into ClickHouse", ["table"], registry=r
        )
        self.inserts = Counter(
            "voipflow_sink_inserts", "Inserts into ClickHouse", ["table"], registry=r
        )
        self.insert_seconds = Histogram(
            "voipflow_sink_insert_seconds",
            "Duration of one ClickHouse insert",
            ["table"],
            buckets=INSERT_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "voipflow_sink_errors", "ClickHouse errors by kind", ["table", "kind"], registry=r
        )
        self.bad = Counter(
            "voipflow_sink_bad_messages",
            "Messages skipped as bad",
            ["topic", "reason"],
            registry=r,
        )
        self.skipped = Counter(
            "voipflow_sink_rows_skipped",
            "Rows left out because ClickHouse already holds them (replays, re-published windows)",
            ["table", "why"],
            registry=r,
        )
        self.republished = Counter(
            "voipflow_sink_republished_dropped",
            "Rows of voip-flows messages left out as republished copies (source position "
            "seen before: a worker processed the same input again)",
            ["table"],
            registry=r,
        )
        self.lag = Gauge(
            "voipflow_sink_lag", "Messages not yet committed", ["topic", "partition"], registry=r
        )
        self.stalls = Counter(
            "voipflow_sink_fetch_restarts",
            "Partitions with messages that made no progress and were fetched again",
            ["topic"],
            registry=r,
        )
        self.paused = Gauge(
            "voipflow_sink_paused", "1 while consumption is paused for a retry", registry=r
        )
