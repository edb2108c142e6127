"""Prometheus metrics of the worker: everything that moves gets a counter.

The same style as :class:`voipflow.collectors.metrics.CollectorMetrics`: one
:class:`WorkerMetrics` over a registry the caller gives, handed to the parts
that count (:class:`~streams.pipeline.FlowPipeline` passes its own to the
enricher, the window states and the agents). The worker command builds it
over the registry its endpoint serves (``metrics.listen`` + 1); tests build
their own over a fresh registry. Names and labels are the ones dashboards and
docs rely on.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Seconds buckets of the work on one flow batch.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class WorkerMetrics:
    """The worker's metrics, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.batches = Counter(
            "voipflow_worker_batches_total",
            "Flow batches processed, by topic",
            ["topic"],
            registry=r,
        )
        self.records = Counter(
            "voipflow_worker_records_total",
            "Flow records processed, by topic",
            ["topic"],
            registry=r,
        )
        self.bad_messages = Counter(
            "voipflow_worker_bad_messages_total",
            "Messages skipped because they could not be decoded, by topic and reason",
            ["topic", "reason"],
            registry=r,
        )
        self.redelivered = Counter(
            "voipflow_worker_redelivered_total",
            "Messages skipped because their offset was already applied (at-least-once replay)",
            ["topic"],
            registry=r,
        )
        self.refetched = Counter(
            "voipflow_worker_refetched_total",
            "Messages that arrived after an offset of their partition was passed over; "
            "held back, and the partition fetched again from the missing offset",
            ["topic"],
            registry=r,
        )
        self.deleted_unprocessed = Counter(
            "voipflow_worker_deleted_unprocessed_total",
            "Offsets deleted from a partition (retention) before any worker processed them",
            ["topic"],
            registry=r,
        )
        self.unhomed = Counter(
            "voipflow_worker_unhomed_records_total",
            "Flow records with neither side in the home networks (not attributed to a city)",
            registry=r,
        )
        self.unlocated = Counter(
            "voipflow_worker_unlocated_records_total",
            "Flow records whose subscriber no table placed in a city",
            registry=r,
        )
        self.city_source = Counter(
            "voipflow_worker_city_lookups_total",
            "Subscriber city found, by source (prefix, mmdb, exporter)",
            ["source"],
            registry=r,
        )
        self.table_reloads = Counter(
            "voipflow_worker_table_reloads_total",
            "Reloads of a lookup table, by table and result",
            ["table", "result"],
            registry=r,
        )
        self.voip_records = Counter(
            "voipflow_worker_voip_records_total",
            "Flow records classified as VoIP, by app",
            ["app"],
            registry=r,
        )
        self.late_records = Counter(
            "voipflow_worker_late_records_total",
            "Records that arrived after their window had closed (counted, not aggregated)",
            registry=r,
        )
        self.windows_published = Counter(
            "voipflow_worker_windows_published_total",
            "Closed window x city x app messages published",
            registry=r,
        )
        self.late_traffic_records = Counter(
            "voipflow_worker_late_traffic_records_total",
            "Records that reached an exporter's traffic window after it had closed (counted only)",
            registry=r,
        )
        self.traffic_windows_published = Counter(
            "voipflow_worker_traffic_windows_published_total",
            "Closed window x exporter x observation domain messages published (traffic.v1)",
            registry=r,
        )
        self.open_windows = Gauge(
            "voipflow_worker_open_windows", "Open city windows held by this worker", registry=r
        )
        self.open_traffic_windows = Gauge(
            "voipflow_worker_open_traffic_windows",
            "Open exporter traffic windows (window x observation domain) held by this worker",
            registry=r,
        )
        self.stalled_sources = Gauge(
            "voipflow_worker_stalled_source_partitions",
            "flows.v1 partitions with records waiting whose committed offset has not moved "
            "for stall_after_s (no worker takes them); their keys' windows stay open",
            registry=r,
        )
        self.stall_watch_errors = Counter(
            "voipflow_worker_stall_watch_errors_total",
            "Readings of the flows partitions' offsets that failed (the last answer is kept)",
            registry=r,
        )
        self.cpu_seconds = Counter(
            "voipflow_worker_cpu_seconds_total",
            "CPU seconds of the agents' thread in each part of the work: flow_step "
            "(decode, enrich, classify, partials, voip-flows encode), window_states "
            "(partials and ticks applied, windows closed), state_writes (states encoded "
            "and handed to the changelog); the rest of the process's CPU is Kafka and Faust",
            ["part"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "voipflow_worker_batch_seconds",
            "Time to enrich, classify and split one flow batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
