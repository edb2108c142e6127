"""Prometheus metrics of the policy evaluator and the rule ledger.

Module-level objects on the default registry, created once per process; the
processes expose them on ``metrics.listen`` like the other voipflow processes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WINDOWS = Counter("voipflow_evaluator_windows_total", "Usage windows evaluated")
BAD_MESSAGES = Counter(
    "voipflow_enforcement_bad_messages_total",
    "Messages skipped because they could not be decoded, by process, topic and reason",
    ["process", "topic", "reason"],
)
RULES_PUBLISHED = Counter(
    "voipflow_evaluator_rules_published_total", "Rule versions published, by action", ["action"]
)
RULES_REFUSED = Counter(
    "voipflow_evaluator_rules_refused_total", "Rules a guardrail refused, by guardrail", ["code"]
)
RULES_WITHDRAWN = Counter(
    "voipflow_enforcement_rules_withdrawn_total",
    "Tombstones published, by process and reason (expired, withdrawn)",
    ["process", "reason"],
)
POLICY_RELOADS = Counter(
    "voipflow_evaluator_policy_reloads_total", "Policy file reloads, by result", ["result"]
)
ACTIVE_RULES = Gauge("voipflow_evaluator_active_rules", "Rules in force as the evaluator sees them")
PARTITIONS_OWNED = Gauge(
    "voipflow_evaluator_partitions_owned",
    "Partitions this evaluator owns: scopes (cities it evaluates), admission (0 or 1)",
    ["role"],
)
PROPOSALS = Counter(
    "voipflow_evaluator_proposals_total",
    "Proposed rule versions the admission decided, by outcome "
    "(admitted, renewed, refused, replayed)",
    ["outcome"],
)
TRANSITIONS = Counter(
    "voipflow_ledger_transitions_total",
    "Rule state changes the ledger recorded, by state",
    ["state"],
)
REPUBLISHED = Counter(
    "voipflow_ledger_republished_total", "Rules published again for lack of feedback"
)
ESCALATIONS = Counter(
    "voipflow_ledger_escalations_total",
    "Rules escalated: failed at an enforcement point, or never acknowledged",
    ["reason"],
)
