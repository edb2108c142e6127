"""Per exporter and observation domain figures: Prometheus and ``exporter-health.v1``.

The decoder returns per-call statistics per (exporter, domain). They are
summed here in plain objects (a few integer additions per exporter per
decode call), pushed to Prometheus once per second and reported to Kafka
every ``health_interval_s`` as one JSON object per exporter and domain, whose
fields the contract ``schemas/json/exporter-health.v1.json`` lists
(:mod:`voipflow.schemas.health`).

Counters are deltas since the previous report of this process; ``templates``,
``records_held`` and ``sampling_rate`` are current values. ``kernel_drops``
is what the kernel dropped on this process's sockets in the interval: the
kernel cannot tell which exporter a dropped datagram came from, so every
report of one process in one interval carries the same figure (take the
maximum per collector, not the sum over exporters). An exporter and domain
is reported while it sent anything in the last ``quiet_after_s`` (one hour),
with zero deltas when it fell silent, so silence shows.

Both follow source addresses, which a flood of spoofed datagrams can make up
at will, so both are bounded: the first ``max_labels`` exporters get their
own Prometheus label and the rest share ``exporter="other"``; at most
``max_domains`` (exporter, domain) pairs are reported, and what the others
sent is still counted in Prometheus (under their label, or "other") and in
``voipflow_collector_untracked_domain_packets_total``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voipflow.collectors.codec.call import DomainKey, ExporterStats
from voipflow.collectors.metrics import CollectorMetrics
from voipflow.schemas.flowbatch import addr_to_text
from voipflow.schemas.health import SCHEMA_NAME

HEALTH_SCHEMA = SCHEMA_NAME
#: Prometheus label shared by the exporters beyond ``max_labels``.
OTHER = "other"


@dataclass(slots=True)
class DomainTotals:
    """Counters summed over decode calls, and the latest gauges."""

    netflow_version: int = 0
    packets: int = 0
    records: int = 0
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    sequence_lost: int = 0
    restarts: int = 0
    templates: int = 0
    held_sets: int = 0
    sampling_rate: int = 1
    last_seen_ms: int = 0

    def add(self, st: ExporterStats, now_ms: int) -> None:
        if st.netflow_version:
            self.netflow_version = st.netflow_version
        self.packets += st.packets
        self.records += st.records
        self.bytes += st.bytes
        if st.errors:
            for reason, n in st.errors.items():
                self.errors[reason] = self.errors.get(reason, 0) + n
        self.sequence_lost += st.sequence_lost
        self.restarts += st.restarts
        self.templates = st.templates
        self.held_sets = st.held_sets
        self.sampling_rate = st.sampling_rate
        self.last_seen_ms = now_ms

    def merge(self, other: DomainTotals) -> None:
        if other.netflow_version:
            self.netflow_version = other.netflow_version
        self.packets += other.packets
        self.records += other.records
        self.bytes += other.bytes
        for reason, n in other.errors.items():
            self.errors[reason] = self.errors.get(reason, 0) + n
        self.sequence_lost += other.sequence_lost
        self.restarts += other.restarts
        self.templates = other.templates
        self.held_sets = other.held_sets
        self.sampling_rate = other.sampling_rate
        self.last_seen_ms = max(self.last_seen_ms, other.last_seen_ms)

    def reset_counters(self) -> None:
        self.packets = self.records = self.bytes = 0
        self.sequence_lost = self.restarts = 0
        self.errors = {}


class ExporterTracker:
    """Sums decoder statistics; feeds metrics each second and health reports."""

    def __init__(
        self,
        collector_id: str,
        metrics: CollectorMetrics | None = None,
        quiet_after_s: float = 3600.0,
        max_labels: int = 1000,
        max_domains: int = 65536,
    ) -> None:
        self.collector_id = collector_id
        self.metrics = metrics
        self.quiet_after_ms = int(quiet_after_s * 1000)
        self.max_labels = max_labels
        self.max_domains = max_domains
        self._pending: dict[DomainKey, DomainTotals] = {}
        self._window: dict[DomainKey, DomainTotals] = {}
        self._text: dict[bytes, str] = {}
        self._labels: set[str] = set()

    def label(self, addr16: bytes) -> str:
        """The exporter's Prometheus label: its address, or "other" past ``max_labels``."""
        ex = self.exporter_text(addr16)
        if ex in self._labels:
            return ex
        if len(self._labels) < self.max_labels:
            self._labels.add(ex)
            return ex
        return OTHER

    def exporter_text(self, addr16: bytes) -> str:
        text = self._text.get(addr16)
        if text is None:
            if len(self._text) > 65536:
                self._text.clear()
            text = self._text[addr16] = addr_to_text(addr16)
        return text

    def add(self, stats: Mapping[DomainKey, ExporterStats], now_ms: int) -> None:
        """Add one decode call's statistics."""
        pending = self._pending
        for key, st in stats.items():
            tot = pending.get(key)
            if tot is None:
                tot = pending[key] = DomainTotals()
            tot.add(st, now_ms)

    def flush_metrics(self) -> None:
        """Push what was summed since the last call to Prometheus, keep it for health."""
        metrics = self.metrics
        pending, self._pending = self._pending, {}
        per_exporter_templates: dict[str, int] = {}
        per_exporter_held: dict[str, int] = {}
        for key, tot in pending.items():
            win = self._window.get(key)
            if win is None and len(self._window) < self.max_domains:
                self._window[key] = win = DomainTotals()
            if win is not None:
                win.merge(tot)
            if metrics is None:
                continue
            if win is None:
                metrics.untracked_domain_packets.inc(tot.packets)
            ex = self.label(key[0])
            if tot.packets:
                metrics.packets.labels(ex).inc(tot.packets)
                metrics.bytes.labels(ex).inc(tot.bytes)
            if tot.records:
                metrics.records.labels(ex).inc(tot.records)
            for reason, n in tot.errors.items():
                metrics.decode_errors.labels(ex, reason).inc(n)
            if tot.sequence_lost:
                metrics.sequence_lost.labels(ex).inc(tot.sequence_lost)
            if tot.restarts:
                metrics.exporter_restarts.labels(ex).inc(tot.restarts)
        if metrics is None:
            return
        # Gauges are per exporter: the sum over its domains' latest values.
        for key, win in self._window.items():
            ex = self.label(key[0])
            per_exporter_templates[ex] = per_exporter_templates.get(ex, 0) + win.templates
            per_exporter_held[ex] = per_exporter_held.get(ex, 0) + win.held_sets
        for ex, n in per_exporter_templates.items():
            metrics.templates.labels(ex).set(n)
        for ex, n in per_exporter_held.items():
            metrics.records_held.labels(ex).set(n)

    def health_reports(self, now_ms: int, kernel_drops: int) -> list[dict[str, Any]]:
        """One report per exporter and domain, deltas since the previous call."""
        self.flush_metrics()
        out = []
        for key, win in list(self._window.items()):
            if now_ms - win.last_seen_ms > self.quiet_after_ms:
                del self._window[key]
                continue
            out.append(
                {
                    "schema": HEALTH_SCHEMA,
                    "ts_ms": now_ms,
                    "collector": self.collector_id,
                    "exporter": self.exporter_text(key[0]),
                    "observation_domain_id": key[1],
                    "netflow_version": win.netflow_version,
                    "packets": win.packets,
                    "records": win.records,
                    "bytes": win.bytes,
                    "decode_errors": sum(win.errors.values()),
                    "templates": win.templates,
                    "records_held": win.held_sets,
                    "sequence_lost": win.sequence_lost,
                    "exporter_restarts": win.restarts,
                    "sampling_rate": win.sampling_rate,
                    "kernel_drops": kernel_drops,
                }
            )
            win.reset_counters()
        return out
