"""Prometheus metrics of an enforcement point, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EnforceMetrics:
    """Everything that moves in an enforcement point gets a counter here."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "voipflow_enforce_messages_total",
            "rules.v1 messages read (rules and tombstones)",
            ["kind"],
            registry=r,
        )
        self.refused = Counter(
            "voipflow_enforce_rules_refused_total",
            "rule versions refused before any backend saw them, by reason",
            ["reason"],
            registry=r,
        )
        self.applied = Counter(
            "voipflow_enforce_rules_applied_total",
            "rule versions installed (new, replaced or re-installed)",
            registry=r,
        )
        self.apply_failed = Counter(
            "voipflow_enforce_rules_failed_total",
            "rule versions the backend could not install",
            registry=r,
        )
        self.removed = Counter(
            "voipflow_enforce_rules_removed_total",
            "rules taken out, by status (removed, expired)",
            ["status"],
            registry=r,
        )
        self.drift = Counter(
            "voipflow_enforce_drift_total",
            "differences between installed and desired state found and repaired, by kind",
            ["kind"],
            registry=r,
        )
        self.installed = Gauge(
            "voipflow_enforce_rules_installed",
            "rules this point has installed now",
            registry=r,
        )
        self.backend_errors = Counter(
            "voipflow_enforce_backend_errors_total",
            "reconcile passes that failed because the backend could not be read or changed",
            registry=r,
        )
        self.feedback = Counter(
            "voipflow_enforce_feedback_total",
            "rules-feedback.v1 messages sent, by status",
            ["status"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "voipflow_enforce_reconcile_seconds",
            "duration of one reconcile pass (read state, apply difference)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
