"""Configuration of the guardrails, the policy evaluator and the rule ledger.

``voipflow/settings.py`` assembles these as the ``[guardrails]``,
``[evaluator]`` and ``[ledger]`` sections (``VOIPFLOW_GUARDRAILS_*``,
``VOIPFLOW_EVALUATOR_*``, ``VOIPFLOW_LEDGER_*``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

#: Addresses no rule may ever block or throttle, whatever the configuration:
#: "this network", loopback, link-local, multicast, broadcast (RFC 6890).
BUILTIN_NEVER_BLOCK = (
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
)


def _cidrs(v: str) -> str:
    for item in filter(None, (s.strip() for s in v.split(","))):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a CIDR prefix: {exc}") from exc
    return v


def _split(v: str) -> list[str]:
    return [str(ipaddress.ip_network(s.strip(), strict=False)) for s in v.split(",") if s.strip()]


class GuardrailConfig(BaseModel):
    #: Prefixes no block or throttle may cover, comma separated, besides the
    #: built-in loopback, link-local, multicast and broadcast ranges. The
    #: evaluator cuts them out of every rule, and every enforcement point
    #: (``voipflow enforce``) refuses a rule that still touches them.
    never_block: str = ""
    #: The operator's infrastructure (routers, DNS resolvers, SIP trunks,
    #: management networks), comma separated: never blocked or throttled.
    infrastructure_prefixes: str = ""
    #: Emergency services (PSAP gateways, emergency call routing), comma
    #: separated: never blocked or throttled.
    emergency_prefixes: str = ""
    #: Rules in force at most (all cities, all policies).
    max_active_rules: int = Field(500, ge=1)
    #: New rules per minute at most (renewals of a rule in force are not new).
    max_new_rules_per_minute: int = Field(30, ge=1)
    #: Rules in force per city at most.
    max_rules_per_city: int = Field(20, ge=1)
    #: Prefixes one rule may carry at most (after splitting around protected ones).
    max_prefixes_per_rule: int = Field(4096, ge=1)

    @field_validator("never_block", "infrastructure_prefixes", "emergency_prefixes")
    @classmethod
    def _check_cidrs(cls, v: str) -> str:
        return _cidrs(v)

    def protected(self) -> dict[str, list[str]]:
        """Protected prefixes by the reason they are protected."""
        return {
            "built-in": list(BUILTIN_NEVER_BLOCK),
            "never-block": _split(self.never_block),
            "infrastructure": _split(self.infrastructure_prefixes),
            "emergency": _split(self.emergency_prefixes),
        }

    def configured_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The operator's protected prefixes (never-block, infrastructure, emergency).

        What an enforcement point checks every rule against, behind the
        evaluator: one setting for both, so they cannot disagree. The
        built-in ranges are left out: the evaluator never emits them, and a
        point that held them would refuse every port-only rule.
        """
        nets = [
            *_split(self.never_block),
            *_split(self.infrastructure_prefixes),
            *_split(self.emergency_prefixes),
        ]
        return [ipaddress.ip_network(n) for n in nets]


class EvaluatorConfig(BaseModel):
    #: Policy file, or folder of ``*.yaml`` policy files. Empty: the process refuses to start.
    policies: Path | None = None
    #: Kafka consumer group of the evaluators.
    group_id: str = Field("voipflow-evaluator", min_length=1)
    #: Compacted topic holding the evaluators' state (windows being counted,
    #: rules emitted), so a restarted evaluator resumes where it stopped. A
    #: city's entries lie on its partition: as many partitions as the scopes topic.
    state_topic: str = Field("voipflow-evaluator-state", min_length=1)
    #: Topic of the usage windows re-keyed by city (every window of one city on
    #: one partition, as many partitions as the state topic); empty:
    #: ``<group id>-scopes``. Internal to the evaluators.
    scopes_topic: str = ""
    #: Single-partition topic of the rules the evaluators propose; the one that
    #: owns it applies the global caps and publishes on rules.v1. Empty:
    #: ``<group id>-proposals``. Internal to the evaluators.
    proposals_topic: str = ""
    #: Compacted single-partition topic of the admission's state (rules
    #: published, refusals, the rate window). Empty: ``<group id>-admission``.
    admission_state_topic: str = ""
    #: Seconds without a heartbeat before the group gives a (killed)
    #: evaluator's cities and the admission to the others.
    session_timeout_s: float = Field(10.0, ge=1)
    #: Seconds between checks of the policy files; a changed file is reloaded,
    #: and a reload that fails keeps the policies running.
    reload_s: float = Field(10.0, gt=0)
    #: Seconds a peer seen in a city's VoIP flows stays in an observed_peers target.
    peer_timeout_s: float = Field(900.0, gt=0)
    #: Peers per city and app kept at most (the most recently seen).
    max_peers: int = Field(1024, ge=1)
    #: Seconds between expiry checks of the rules in force (wall clock).
    tick_s: float = Field(1.0, gt=0)
    #: Operator prefix table (CSV ``prefix,city,...``) giving each city's
    #: subscriber prefixes; empty: the worker's ``VOIPFLOW_WORKER_PREFIX_TABLE``.
    prefix_table: Path | None = None
    #: Stop after this many seconds without a usage window (0 = run until
    #: stopped): for backfills and tests.
    exit_when_idle_s: float = Field(0.0, ge=0)
    #: Fault injection for tests: SIGKILL the evaluator right after it wrote
    #: the state of its N-th batch, before that batch's rules are published
    #: (0 = never).
    fault_kill_after_batches: int = Field(0, ge=0)

    @field_validator("policies", "prefix_table")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is None or str(v) in ("", "."):
            return None
        if not v.exists():
            raise ValueError(f"{v} does not exist")
        return v

    def internal_topics(self) -> tuple[str, str, str]:
        """The scopes, proposals and admission state topics (named after the group when empty)."""
        return (
            self.scopes_topic or f"{self.group_id}-scopes",
            self.proposals_topic or f"{self.group_id}-proposals",
            self.admission_state_topic or f"{self.group_id}-admission",
        )


class LedgerConfig(BaseModel):
    #: Kafka consumer group of the ledger.
    group_id: str = Field("voipflow-ledger", min_length=1)
    #: Compacted topic holding the ledger's state (each rule's state, the
    #: enforcement points' last counters).
    state_topic: str = Field("voipflow-ledger-state", min_length=1)
    #: Seconds a published rule may wait for any enforcement point's feedback
    #: before the ledger publishes it again.
    feedback_timeout_s: float = Field(30.0, gt=0)
    #: Republications of one rule version at most; then the rule is escalated.
    max_republish: int = Field(3, ge=0)
    #: Seconds between the ledger's checks of timeouts and expiries.
    tick_s: float = Field(1.0, gt=0)
    #: Stop after this many seconds without a message (0 = run until stopped).
    exit_when_idle_s: float = Field(0.0, ge=0)
