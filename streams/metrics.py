"""Prometheus metrics of the worker: everything that moves gets a counter.

Metrics are module-level objects on the default registry, created once per
process; the worker exposes them on ``metrics.listen`` (+1 offset).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCHES = Counter("voipflow_worker_batches_total", "Flow batches processed, by topic", ["topic"])
RECORDS = Counter("voipflow_worker_records_total", "Flow records processed, by topic", ["topic"])
BAD_MESSAGES = Counter(
    "voipflow_worker_bad_messages_total",
    "Messages skipped because they could not be decoded, by topic and reason",
    ["topic", "reason"],
)
REDELIVERED = Counter(
    "voipflow_worker_redelivered_total",
    "Messages skipped because their offset was already applied (at-least-once replay)",
    ["topic"],
)
UNHOMED = Counter(
    "voipflow_worker_unhomed_records_total",
    "Flow records with neither side in the home networks (not attributed to a city)",
)
UNLOCATED = Counter(
    "voipflow_worker_unlocated_records_total",
    "Flow records whose subscriber no table placed in a city",
)
CITY_SOURCE = Counter(
    "voipflow_worker_city_lookups_total",
    "Subscriber city found, by source (prefix, mmdb, exporter)",
    ["source"],
)
TABLE_RELOADS = Counter(
    "voipflow_worker_table_reloads_total",
    "Reloads of a lookup table, by table and result",
    ["table", "result"],
)
VOIP_RECORDS = Counter(
    "voipflow_worker_voip_records_total", "Flow records classified as VoIP, by app", ["app"]
)
LATE_RECORDS = Counter(
    "voipflow_worker_late_records_total",
    "Records that arrived after their window had closed (counted, not aggregated)",
)
WINDOWS_PUBLISHED = Counter(
    "voipflow_worker_windows_published_total", "Closed window x city x app messages published"
)
LATE_TRAFFIC_RECORDS = Counter(
    "voipflow_worker_late_traffic_records_total",
    "Records that reached an exporter's traffic window after it had closed (counted only)",
)
TRAFFIC_WINDOWS_PUBLISHED = Counter(
    "voipflow_worker_traffic_windows_published_total",
    "Closed window x exporter x observation domain messages published (traffic.v1)",
)
OPEN_WINDOWS = Gauge("voipflow_worker_open_windows", "Open city windows held by this worker")
BATCH_SECONDS = Histogram(
    "voipflow_worker_batch_seconds",
    "Time to enrich, classify and split one flow batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
