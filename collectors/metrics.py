"""Prometheus metrics of the collector.

Everything that moves is counted, labelled by exporter (address text) where
it is about an exporter. The hot path never touches these objects: the
collector sums its figures in plain dictionaries and pushes them here once
per second (:meth:`CollectorMetrics.observe_decode` etc. take those sums).

Several worker processes: prometheus_client's multiprocess mode. Each worker
calls :func:`use_multiprocess` before creating its metrics, which makes every
value a small memory-mapped file in a directory the supervising process
owns; the supervisor serves ``/metrics`` on the one configured address and
sums the files (gauges: ``livesum`` over living workers). One address for
the whole collector, whatever the number of workers, instead of one port per
worker that dashboards and scrape configs would have to know.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)

# ``*_created`` series double the exposition and no dashboard here reads them.
disable_created_metrics()

#: Seconds buckets of the Kafka delivery latency (hand-over to acknowledgement).
KAFKA_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Seconds buckets of one decode call (a group of datagrams).
DECODE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

#: Distinct exporter label values for refused packets at most (a spoofed
#: flood must not explode the metric); the rest count as "other".
MAX_REFUSED_LABELS = 1000


def use_multiprocess(directory: str | os.PathLike[str]) -> None:
    """Make metrics created from now on in this process write to ``directory``.

    prometheus_client picks its value class when it is imported; setting it
    here instead means the import order of the process does not matter.
    """
    Path(directory).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()


class CollectorMetrics:
    """The collector's metrics, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        ns = "voipflow_collector"
        ex = ["exporter"]
        self.packets = Counter("packets", "Export datagrams decoded", ex, namespace=ns, registry=r)
        self.records = Counter("records", "Flow records decoded", ex, namespace=ns, registry=r)
        self.bytes = Counter("bytes", "UDP payload bytes decoded", ex, namespace=ns, registry=r)
        self.decode_errors = Counter(
            "decode_errors", "Decode errors", ["exporter", "reason"], namespace=ns, registry=r
        )
        self.sequence_lost = Counter(
            "sequence_lost",
            "Sequence number gaps (records for v5/IPFIX, packets for v9)",
            ex,
            namespace=ns,
            registry=r,
        )
        self.exporter_restarts = Counter(
            "exporter_restarts", "Exporter restarts detected", ex, namespace=ns, registry=r
        )
        self.templates = Gauge(
            "templates",
            "Templates known per exporter",
            ex,
            namespace=ns,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.records_held = Gauge(
            "records_held",
            "Data sets held until their template arrives",
            ex,
            namespace=ns,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.refused = Counter(
            "refused_packets",
            "Datagrams refused by admission (not_allowed, rate_limited)",
            ["exporter", "reason"],
            namespace=ns,
            registry=r,
        )
        self.kernel_drops = Counter(
            "kernel_drops",
            "Datagrams the kernel dropped on a listen socket (receive buffer full)",
            ["socket"],
            namespace=ns,
            registry=r,
        )
        self.rcvbuf = Gauge(
            "rcvbuf_bytes",
            "Receive buffer the kernel granted per listen socket",
            ["socket"],
            namespace=ns,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.decode_seconds = Histogram(
            "decode_seconds",
            "Seconds of one decode call (a group of datagrams)",
            namespace=ns,
            registry=r,
            buckets=DECODE_BUCKETS,
        )
        self.output_records = Counter(
            "output_records", "Records handed to the output", namespace=ns, registry=r
        )
        self.kafka_messages = Counter(
            "kafka_messages", "Messages acknowledged by Kafka", ["topic"], namespace=ns, registry=r
        )
        self.kafka_records = Counter(
            "kafka_records", "Flow records acknowledged by Kafka", namespace=ns, registry=r
        )
        self.kafka_send_seconds = Histogram(
            "kafka_send_seconds",
            "Seconds from handing a message to Kafka to its acknowledgement",
            ["topic"],
            namespace=ns,
            registry=r,
            buckets=KAFKA_LATENCY_BUCKETS,
        )
        self.kafka_errors = Counter(
            "kafka_errors",
            "Kafka deliveries the client gave up on; each is sent again, and one that"
            " timed out (KafkaTimeoutError) may then be in the topic twice",
            ["error"],
            namespace=ns,
            registry=r,
        )
        self.buffer_bytes = Gauge(
            "buffer_bytes",
            "Bytes waiting for Kafka acknowledgement",
            namespace=ns,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.buffer_dropped_records = Counter(
            "buffer_dropped_records",
            "Records dropped because the Kafka buffer was full",
            namespace=ns,
            registry=r,
        )
        self.buffer_dropped_messages = Counter(
            "buffer_dropped_messages",
            "Messages dropped because the Kafka buffer was full",
            namespace=ns,
            registry=r,
        )
        self.untracked_domain_packets = Counter(
            "untracked_domain_packets",
            "Export datagrams of (exporter, domain) pairs beyond the health report bound "
            "(counted in the other metrics, not reported per domain)",
            namespace=ns,
            registry=r,
        )
        self._refused_labels: set[str] = set()

    def refused_label(self, exporter: str) -> str:
        """``exporter`` while fewer than :data:`MAX_REFUSED_LABELS` are known, else "other"."""
        if exporter in self._refused_labels:
            return exporter
        if len(self._refused_labels) < MAX_REFUSED_LABELS:
            self._refused_labels.add(exporter)
            return exporter
        return "other"
