"""What no rule may do, whatever a policy says: the guardrails.

Two kinds of check, both pure:

* :meth:`Guardrails.check_target` -- a block or throttle never covers a
  protected prefix (built-in loopback, link-local, multicast, broadcast; the
  configured never-block, infrastructure and emergency prefixes). A target
  prefix *inside* a protected one is dropped; a target prefix that
  *contains* a protected one is **split** around it (the rule keeps the rest
  of the prefix: an operator who blocks a provider's /16 that happens to hold
  the emergency gateway's /32 wants the other 65,535 addresses blocked, not
  the whole rule dropped). IPv4 protected prefixes are protected in their
  IPv4-mapped IPv6 form (``::ffff:a.b.c.d``) too, and mapped IPv6 ones in
  their IPv4 form. A traffic rule with no prefix left, or with none to begin
  with (it would apply to every address), is refused. Monitor and alert
  rules change no traffic and are not checked.
* :meth:`Guardrails.admit` -- the caps: rules in force, new rules per minute
  (of event time, so a replay decides as the live run did), rules per city.

A refusal is a :class:`Refusal` with a short ``code`` (for metrics and the
``refused`` rule event) and a sentence an operator can read.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from voipflow.enforcement.config import GuardrailConfig
from voipflow.enforcement.policy import TRAFFIC_ACTIONS

Net = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str  # never_block | no_prefixes | too_many_prefixes | max_active | rate | city_cap
    reason: str


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """A target after the never-block check: the prefixes to keep, or a refusal."""

    prefixes: tuple[str, ...]
    #: Protected prefixes that were cut out of the target, with why they are protected.
    trimmed: tuple[str, ...] = ()
    refusal: Refusal | None = None


def _mapped(net: ipaddress.IPv4Network) -> ipaddress.IPv6Network:
    base = int(_MAPPED.network_address) | int(net.network_address)
    return ipaddress.IPv6Network((base, 96 + net.prefixlen))


def _split(target: Net, protected: list[tuple[Net, str]]) -> tuple[list[Net], list[str]]:
    """``target`` minus every protected prefix; and the protected ones it touched."""
    pieces: list[Net] = [target]
    touched: list[str] = []
    for prot, why in protected:
        if prot.version != target.version or not target.overlaps(prot):
            continue
        touched.append(f"{prot} ({why})")
        out: list[Net] = []
        for piece in pieces:
            if not piece.overlaps(prot):
                out.append(piece)
            elif piece.subnet_of(prot):  # type: ignore[arg-type]
                continue  # wholly protected: dropped
            else:  # the protected prefix lies inside this piece: keep the rest
                out.extend(piece.address_exclude(prot))  # type: ignore[arg-type]
        pieces = out
    return pieces, touched


@dataclass
class Guardrails:
    config: GuardrailConfig
    #: Event times (ms) of the new rules admitted in the last minute.
    recent_new: deque[int] = field(default_factory=deque)
    _protected: list[tuple[Net, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        prot: list[tuple[Net, str]] = []
        for why, prefixes in self.config.protected().items():
            for p in prefixes:
                net = ipaddress.ip_network(p, strict=False)
                prot.append((net, why))
                if isinstance(net, ipaddress.IPv4Network):
                    prot.append((_mapped(net), why))
                elif net.subnet_of(_MAPPED):  # the IPv4 address written as IPv6
                    v4 = int(net.network_address) & 0xFFFFFFFF
                    prot.append((ipaddress.IPv4Network((v4, net.prefixlen - 96)), why))
        self._protected = prot

    @property
    def protected(self) -> list[tuple[Net, str]]:
        """Every protected prefix with why it is protected (IPv4-mapped forms included)."""
        return list(self._protected)

    def check_target(self, action: str, prefixes: Iterable[str]) -> TargetCheck:
        """The never-block check of one rule's target prefixes."""
        given = tuple(prefixes)
        if action not in TRAFFIC_ACTIONS:
            return TargetCheck(given)
        if not given:
            return TargetCheck(
                (),
                refusal=Refusal(
                    "no_prefixes",
                    f"a {action} without prefixes would apply to every address; "
                    "the target resolved to none",
                ),
            )
        kept: list[Net] = []
        trimmed: list[str] = []
        for p in given:
            pieces, touched = _split(ipaddress.ip_network(p, strict=False), self._protected)
            kept.extend(pieces)
            trimmed.extend(touched)
        v4 = [n for n in kept if isinstance(n, ipaddress.IPv4Network)]
        v6 = [n for n in kept if isinstance(n, ipaddress.IPv6Network)]
        out = tuple(
            str(n) for n in [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
        )
        trimmed_t = tuple(dict.fromkeys(trimmed))
        if not out:
            return TargetCheck(
                (),
                trimmed_t,
                Refusal(
                    "never_block",
                    "every prefix of the target is protected: " + ", ".join(trimmed_t),
                ),
            )
        if len(out) > self.config.max_prefixes_per_rule:
            return TargetCheck(
                out,
                trimmed_t,
                Refusal(
                    "too_many_prefixes",
                    f"{len(out)} prefixes after the never-block check, more than "
                    f"VOIPFLOW_GUARDRAILS_MAX_PREFIXES_PER_RULE={self.config.max_prefixes_per_rule}",
                ),
            )
        return TargetCheck(out, trimmed_t)

    def admit(self, city: str, event_ms: int, active_cities: Mapping[str, str]) -> Refusal | None:
        """Whether a new rule for ``city`` may start now; ``active_cities`` maps the
        rules in force to their cities. An admitted rule counts towards the rate."""
        cfg = self.config
        if len(active_cities) >= cfg.max_active_rules:
            return Refusal(
                "max_active",
                f"{len(active_cities)} rules in force, the cap "
                f"VOIPFLOW_GUARDRAILS_MAX_ACTIVE_RULES={cfg.max_active_rules}",
            )
        in_city = self.city_cap(city, active_cities)
        if in_city is not None:
            return in_city
        while self.recent_new and self.recent_new[0] <= event_ms - 60_000:
            self.recent_new.popleft()
        if len(self.recent_new) >= cfg.max_new_rules_per_minute:
            return Refusal(
                "rate",
                f"{len(self.recent_new)} new rules in the last minute, the cap "
                f"VOIPFLOW_GUARDRAILS_MAX_NEW_RULES_PER_MINUTE={cfg.max_new_rules_per_minute}",
            )
        self.recent_new.append(event_ms)
        return None

    def city_cap(self, city: str, active_cities: Mapping[str, str]) -> Refusal | None:
        """The per-city cap alone: what an evaluator owning ``city`` checks itself."""
        cap = self.config.max_rules_per_city
        in_city = sum(1 for c in active_cities.values() if c == city)
        if in_city >= cap:
            return Refusal(
                "city_cap",
                f"{in_city} rules in force in {city}, the cap "
                f"VOIPFLOW_GUARDRAILS_MAX_RULES_PER_CITY={cap}",
            )
        return None


def covers_protected(prefixes: Iterable[str], protected: Iterable[tuple[Net, str]]) -> list[str]:
    """The target prefixes that overlap a protected prefix (for checks and tests)."""
    prot = list(protected)
    bad = []
    for p in prefixes:
        net = ipaddress.ip_network(p, strict=False)
        if any(net.version == q.version and net.overlaps(q) for q, _ in prot):
            bad.append(p)
    return bad
