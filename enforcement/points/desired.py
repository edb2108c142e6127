"""The desired set: the rules in force, rebuilt from the compacted ``rules.v1`` topic.

:class:`DesiredRules` is fed every message of the topic in order (key, value;
a ``None`` value is a tombstone) and keeps, per key, the latest valid version.
Checks happen here, before any backend sees a rule, so the same rule is
refused the same way by every backend: the contract (:mod:`voipflow.schemas.rules`),
a key that is not the rule's id, a target that would match all traffic, and
-- defence in depth behind the evaluator's guardrails -- a block or throttle
whose prefixes overlap a never-block prefix of this point.

A refused version still replaces the version before it: the publisher no
longer asserts the old one, and a point that keeps enforcing what it cannot
check would fail closed on customers. It is removed, and the refusal reported.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from voipflow.enforcement.points.errors import RefusedRule
from voipflow.schemas.rules import RuleError, RuleFormatError, RuleVersionError, decode_rule

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Actions that change traffic when the mode is ``enforce``.
TRAFFIC_ACTIONS = frozenset({"block", "throttle"})


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule in force, normalised for the dataplanes (collapsed prefixes, sorted ports)."""

    rule_id: str
    version: int
    policy: str
    mode: str
    action: str
    rate_kbps: int | None
    protocol: str
    v4: tuple[ipaddress.IPv4Network, ...]
    v6: tuple[ipaddress.IPv6Network, ...]
    ports: tuple[tuple[int, int], ...]
    expires_ms: int

    @property
    def handle(self) -> str:
        """Short name of the rule in a backend (nft names are limited in length)."""
        return "r" + hashlib.sha256(self.rule_id.encode()).hexdigest()[:15]

    @property
    def digest(self) -> str:
        """Changes whenever what the dataplane does changes (not with evidence)."""
        text = repr(
            (
                self.mode,
                self.action,
                self.rate_kbps,
                self.protocol,
                [str(n) for n in self.v4],
                [str(n) for n in self.v6],
                self.ports,
                self.expires_ms,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def drops(self) -> bool:
        """True when the rule drops or limits traffic (else it only counts)."""
        return self.mode == "enforce" and self.action in TRAFFIC_ACTIONS

    @property
    def rate_bytes_per_s(self) -> int | None:
        """A throttle's rate in bytes per second (the contract says kilobits per second)."""
        return None if self.rate_kbps is None else max(1, self.rate_kbps * 1000 // 8)

    @property
    def elements(self) -> int:
        return len(self.v4) + len(self.v6)


def handle_of(rule_id: str) -> str:
    """The :attr:`Rule.handle` of an id, for rules known only by their key."""
    return "r" + hashlib.sha256(rule_id.encode()).hexdigest()[:15]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message the point refused: enough to send failed feedback."""

    rule_id: str
    version: int
    mode: str
    reason: str
    error: str


@dataclass(slots=True)
class Change:
    """What one message did to the desired set."""

    rule_id: str
    refused: Refusal | None = None
    #: The message was older than the version already held: ignored.
    stale: bool = False


def normalise(obj: dict[str, Any], never_block: Iterable[Network] = ()) -> Rule:
    """A valid rules.v1 object as a :class:`Rule`, or :class:`RefusedRule`."""
    target = obj["target"]
    nets = [ipaddress.ip_network(p) for p in target["prefixes"]]
    v4 = tuple(ipaddress.collapse_addresses(n for n in nets if n.version == 4))
    v6 = tuple(ipaddress.collapse_addresses(n for n in nets if n.version == 6))
    ports = _merge_ports((r["from"], r["to"]) for r in target["ports"])
    protocol = target["protocol"]
    if obj["action"] in TRAFFIC_ACTIONS:
        if not nets and not ports and protocol == "any":
            raise RefusedRule(
                "matches_everything",
                "the target has no prefixes, no ports and protocol any: it would match all traffic",
            )
        guards = list(never_block)
        if not nets and guards:
            # No prefixes means any address, never-block ones included; FlowSpec
            # cannot say "except", so every backend refuses it alike.
            raise RefusedRule(
                "never_block",
                f"the target has no prefixes, so it covers never-block prefix {guards[0]} of "
                "the guardrails (VOIPFLOW_GUARDRAILS_*)",
            )
        for net in nets:
            for guard in guards:
                if net.version == guard.version and net.overlaps(guard):
                    raise RefusedRule(
                        "never_block",
                        f"target prefix {net} overlaps never-block prefix {guard} of the "
                        "guardrails (VOIPFLOW_GUARDRAILS_*)",
                    )
    return Rule(
        rule_id=obj["rule_id"],
        version=int(obj["version"]),
        policy=obj["policy"],
        mode=obj["mode"],
        action=obj["action"],
        rate_kbps=obj.get("rate_kbps"),
        protocol=protocol,
        v4=v4,
        v6=v6,
        ports=ports,
        expires_ms=int(obj["expires_ms"]),
    )


def _merge_ports(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, overlapping and adjacent ranges merged (nft interval sets refuse overlaps)."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


@dataclass
class DesiredRules:
    """Latest valid version per key of ``rules.v1``; see the module docstring."""

    never_block: list[Network] = field(default_factory=list)
    #: Most rules in force at once (0: no limit); new rules past it are refused.
    max_rules: int = 0
    rules: dict[str, Rule] = field(default_factory=dict)
    #: Highest version seen per key (valid or refused), so older ones are ignored.
    versions: dict[str, int] = field(default_factory=dict)
    #: Every key ever seen, by handle: names installed rules whose key is gone.
    ids: dict[str, str] = field(default_factory=dict)

    def apply(self, key: bytes | None, value: bytes | None) -> Change:
        """Take one message of the topic into the set."""
        key_text = key.decode("utf-8", "replace") if key else ""
        if value is None:
            if key_text:
                self.ids[handle_of(key_text)] = key_text
                self.rules.pop(key_text, None)
                self.versions.pop(key_text, None)
            return Change(key_text or "<no key>")
        try:
            obj = decode_rule(value)
        except RuleVersionError as exc:
            return self._refuse(key_text, value, "schema_version", str(exc))
        except RuleFormatError as exc:
            return self._refuse(key_text, value, "not_json", str(exc))
        except RuleError as exc:
            return self._refuse(key_text, value, "invalid", str(exc))
        rule_id = obj["rule_id"]
        if key_text and key_text != rule_id:
            return self._refuse(
                key_text, value, "key_mismatch", f"message key {key_text!r} is not its rule_id"
            )
        self.ids[handle_of(rule_id)] = rule_id
        if obj["version"] < self.versions.get(rule_id, 0):
            return Change(rule_id, stale=True)
        self.versions[rule_id] = obj["version"]
        try:
            rule = normalise(obj, self.never_block)
            if self.max_rules and rule_id not in self.rules:
                held = len(self.in_force(int(time.time() * 1000)))
                if held >= self.max_rules:
                    raise RefusedRule(
                        "max_rules",
                        f"this enforcement point already holds {held} rules, its maximum "
                        "(VOIPFLOW_ENFORCE_MAX_RULES)",
                    )
            self.rules[rule_id] = rule
        except RefusedRule as exc:
            self.rules.pop(rule_id, None)
            return Change(
                rule_id, Refusal(rule_id, obj["version"], obj["mode"], exc.reason, str(exc))
            )
        return Change(rule_id)

    def _refuse(self, key: str, value: bytes, reason: str, error: str) -> Change:
        version, mode = _salvage(value)
        rule_id = key or "<no key>"
        if key:
            # The refused version replaces the one before it (module docstring).
            self.ids[handle_of(key)] = key
            self.rules.pop(key, None)
            self.versions[key] = max(self.versions.get(key, 0), version)
        return Change(rule_id, Refusal(rule_id, version, mode, reason, error))

    def in_force(self, now_ms: int) -> dict[str, Rule]:
        """Rules not yet expired, by id."""
        return {k: r for k, r in self.rules.items() if r.expires_ms > now_ms}

    def next_expiry_ms(self, now_ms: int) -> int | None:
        """When the next rule in force expires (to reconcile right then)."""
        later = [r.expires_ms for r in self.rules.values() if r.expires_ms > now_ms]
        return min(later) if later else None

    def name_of(self, handle: str) -> str | None:
        return self.ids.get(handle)


def _salvage(value: bytes) -> tuple[int, str]:
    """Version and mode of a refused message, as far as they can be read (else 0, enforce)."""
    import json

    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return 0, "enforce"
    if not isinstance(obj, dict):
        return 0, "enforce"
    version = obj.get("version")
    mode = obj.get("mode")
    return (
        version if isinstance(version, int) and version >= 0 else 0,
        mode if mode in ("enforce", "shadow") else "enforce",
    )
