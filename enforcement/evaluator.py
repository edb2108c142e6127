"""The policy evaluator's logic: usage windows in, rule decisions out. Pure, no I/O.

For each policy and each (city, app) it matches, the evaluator keeps the
windows in which the condition held (by start time). A window completes a
*run* of consecutive holding windows; once a run is ``for`` windows long the
policy fires a rule for that city and app:

* **rule id**: deterministic from the policy, the scope (city, app), the
  action, the target kind, the mode and the rate (:func:`rule_id`), so a
  restarted evaluator, or a second one replaying the same input, names the
  same rule the same way;
* **version**: 1 the first time; +1 each time the rule is published with
  other content: renewed (its expiry moved on by a run that went on for half
  its ttl), or fired again after it expired;
* **created / expires**: the end of the window that fired it (event time),
  plus the policy's ttl;
* **evidence**: the last ``for`` windows of the run with their metrics.

Windows may arrive out of order (voip-usage.v1 is keyed by window, so one
city's windows lie on several partitions) and twice (after a worker or
evaluator crash): runs are computed from the set of holding windows, so
order does not matter, and a window seen before changes nothing.

Before a rule is published the guardrails check its target (never-block
prefixes are cut out) and the caps (:mod:`voipflow.enforcement.guardrails`). A
refused rule becomes a ``refused`` event with the reason, once per run.

One evaluator may hold every city (``global_caps=True``: it applies all the
caps itself, as ``voipflow rules simulate`` runs it), or only the cities of one
partition, when several processes share the work
(:mod:`voipflow.enforcement.evaluator_process`): then it checks the per-city
cap only, its :class:`Publish` outputs are *proposals* that the one
:mod:`voipflow.enforcement.admission` admits against the global caps, and
:meth:`Evaluator.declined` takes back a version the admission refused.

The whole state (holding windows, rules, refusals, the rate window) is a
set of key -> JSON entries: :meth:`Evaluator.changes` hands over the entries
changed since the last call (the process writes them to a compacted topic)
and :meth:`Evaluator.restore` rebuilds the evaluator from them.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voipflow.enforcement.errors import TargetError
from voipflow.enforcement.events import make_event
from voipflow.enforcement.guardrails import Guardrails, Refusal
from voipflow.enforcement.policy import Policy
from voipflow.enforcement.targets import TargetResolver
from voipflow.schemas.rules import RULES_SCHEMA

#: Holding windows kept per scope beyond the longest run a policy needs.
HORIZON_WINDOWS = 60
METRIC_FIELDS = ("call_seconds", "subscribers", "bytes", "flows", "voip_share")


def rule_id(policy: Policy, city: str, app: str) -> str:
    """Deterministic id of the rule ``policy`` fires for ``city`` and ``app``."""
    ident = [policy.name, city, app, policy.action, policy.target, policy.mode, policy.rate_kbps]
    digest = hashlib.sha256(json.dumps(ident, ensure_ascii=False).encode()).hexdigest()[:12]
    return f"{policy.name}-{digest}"


def proposed_event(rule: Mapping[str, Any]) -> dict[str, Any]:
    """The ``proposed`` event of a rule version; the same rule gives the same event id."""
    last = rule["evidence"]["windows"][-1]
    fired_by_last = rule["created_ms"] == last["window_start_ms"] + last["window_s"] * 1000
    what = "fired" if fired_by_last else "renewed"
    return make_event(rule, "proposed", "proposed", rule["produced_ms"],
                      detail=f"{what}: {rule['reason']}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish this rules.v1 message (a new rule or a new version).

    ``run_start`` is the first window of the run that fired it: the admission
    of a partitioned evaluator records a refusal once per run, as this one does.
    """

    rule: dict[str, Any]
    run_start: int = 0


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Publish a tombstone for the rule: ``reason`` is ``expired`` or ``withdrawn``."""

    rule_id: str
    reason: str
    rule: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """Publish this rule-events.v1 message (proposed, refused)."""

    event: dict[str, Any]


Output = Publish | Withdraw | Event


def expire_rules(rules: dict[str, dict[str, Any]], dirty: set[str], now_ms: int) -> list[Withdraw]:
    """Deactivate the active rules whose expiry has passed; their tombstones."""
    out = []
    for rid, state in rules.items():
        if state["active"] and state["rule"]["expires_ms"] <= now_ms:
            state["active"] = False
            dirty.add(f"rule|{rid}")
            out.append(Withdraw(rid, "expired", state["rule"]))
    return out


def withdraw_unwanted(
    rules: dict[str, dict[str, Any]], dirty: set[str], wanted: Mapping[str, Policy]
) -> list[Withdraw]:
    """Deactivate the active rules that no policy in ``wanted`` would fire any more."""
    out = []
    for rid, state in rules.items():
        rule = state["rule"]
        pol = wanted.get(rule["policy"])
        still = pol is not None and rid == rule_id(
            pol, rule["match"]["cities"][0], rule["match"]["apps"][0]
        )
        if state["active"] and not still:
            state["active"] = False
            dirty.add(f"rule|{rid}")
            out.append(Withdraw(rid, "withdrawn", rule))
    return out


def refused_event(
    what: Mapping[str, Any], version: int, run_start: int, refusal: Refusal
) -> dict[str, Any]:
    """The ``refused`` event of a rule (``what``: its id, policy, mode, action, match)."""
    return make_event(
        {
            "rule_id": what["rule_id"],
            "version": version,
            "policy": what["policy"],
            "mode": what["mode"],
            "action": what["action"],
            "match": {"cities": what["match"]["cities"], "apps": what["match"]["apps"]},
        },
        "refused",
        "refused",
        run_start,
        detail=f"{refusal.code}: {refusal.reason}",
    )


def _without_prev(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "prev"}


@dataclass
class _Scope:
    window_s: int
    holding: dict[int, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"window_s": self.window_s, "holding": list(self.holding.values())}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> _Scope:
        return cls(int(obj["window_s"]), {int(w["window_start_ms"]): w for w in obj["holding"]})

    def run_through(self, start: int) -> list[int]:
        """Starts of the run of consecutive holding windows that contains ``start``."""
        step = self.window_s * 1000
        lo = start
        while lo - step in self.holding:
            lo -= step
        hi = start
        while hi + step in self.holding:
            hi += step
        return list(range(lo, hi + step, step))


def _scope_key(policy: str, city: str, app: str) -> str:
    return f"scope|{policy}|{city}|{app}"


@dataclass
class Evaluator:
    policies: list[Policy]
    resolver: TargetResolver
    guardrails: Guardrails
    scopes: dict[str, _Scope] = field(default_factory=dict)
    #: rule id -> {"rule": last published message, "active": bool, "city": ...}
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: rule id -> {"code": refusal code, "run": first window of the refused run}
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: False when the evaluator owns some cities only: it checks the per-city
    #: cap, and the global caps (rules in force, new rules per minute) are left
    #: to the one admission (:mod:`voipflow.enforcement.admission`).
    global_caps: bool = True
    _dirty: set[str] = field(default_factory=set)

    # -- input -------------------------------------------------------------

    def on_usage(self, usage: Mapping[str, Any], now_ms: int) -> list[Output]:
        """Decisions on one voip-usage.v1 window."""
        out: list[Output] = []
        city, app = str(usage["city"]), str(usage["app"])
        region, country = str(usage.get("region", "")), str(usage.get("country", ""))
        for policy in self.policies:
            if policy.match.matches(city, region, country, app):
                out += self._window(policy, usage, city, app, now_ms)
        return out

    def _window(
        self, policy: Policy, usage: Mapping[str, Any], city: str, app: str, now_ms: int
    ) -> list[Output]:
        if not policy.condition.holds(dict(usage)):
            return []
        key = _scope_key(policy.name, city, app)
        ws = int(usage["window_s"])
        start = int(usage["window_start_ms"])
        scope = self.scopes.get(key)
        if scope is None or scope.window_s != ws:
            scope = self.scopes[key] = _Scope(ws)
        if start in scope.holding:
            return []  # seen before: a replay changes nothing
        scope.holding[start] = {
            "window_start_ms": start,
            "window_s": ws,
            "city": city,
            "app": app,
            "metrics": {m: usage[m] for m in METRIC_FIELDS if m in usage},
        }
        newest = max(scope.holding)
        keep_from = newest - (policy.condition.for_windows + HORIZON_WINDOWS) * ws * 1000
        for s in [s for s in scope.holding if s < keep_from]:
            del scope.holding[s]
        self._dirty.add(key)
        run = scope.run_through(start)
        if len(run) < policy.condition.for_windows:
            return []
        evidence = [scope.holding[s] for s in run[-policy.condition.for_windows :]]
        where = (city, str(usage.get("region", "")), str(usage.get("country", "")), app)
        return self._fire(policy, where, evidence, run[0], now_ms)

    # -- firing --------------------------------------------------------------

    def _fire(
        self,
        policy: Policy,
        where: tuple[str, str, str, str],
        evidence: list[dict[str, Any]],
        run_start: int,
        now_ms: int,
    ) -> list[Output]:
        city, _, _, app = where
        rid = rule_id(policy, city, app)
        last = evidence[-1]
        end_ms = last["window_start_ms"] + last["window_s"] * 1000
        ttl_ms = policy.ttl_s * 1000
        expires = end_ms + ttl_ms
        if expires <= now_ms:
            return []  # the rule would be over before it is published (old input)
        state = self.rules.get(rid)
        active = bool(state and state["active"])
        if active and state is not None and expires - state["rule"]["expires_ms"] < ttl_ms / 2:
            return []  # in force, and not yet worth a new version
        try:
            target = self.resolver.resolve(policy, city, app, end_ms)
        except TargetError as exc:
            return self._refuse(policy, rid, city, app, run_start, Refusal("no_target", str(exc)))
        check = self.guardrails.check_target(policy.action, target.prefixes)
        if check.refusal is not None:
            return self._refuse(policy, rid, city, app, run_start, check.refusal)
        if not active:
            active_cities = {r: s["city"] for r, s in self.rules.items() if s["active"]}
            if self.global_caps:
                refusal = self.guardrails.admit(city, end_ms, active_cities)
                self._dirty.add("rate")
            else:
                refusal = self.guardrails.city_cap(city, active_cities)
            if refusal is not None:
                return self._refuse(policy, rid, city, app, run_start, refusal)
        version = state["rule"]["version"] + 1 if state else 1
        created = state["rule"]["created_ms"] if active and state else end_ms
        rule = self._rule(policy, rid, version, where, evidence, created, expires, now_ms)
        rule["target"] = target.as_message() | {"prefixes": list(check.prefixes)}
        if check.trimmed:
            rule["reason"] += "; cut out of the target as protected: " + ", ".join(check.trimmed)
        entry: dict[str, Any] = {"rule": rule, "active": True, "city": city, "run": run_start}
        if not self.global_caps:
            # what to go back to if the admission refuses this version
            entry["prev"] = None if state is None else _without_prev(state)
        self.rules[rid] = entry
        self._dirty.add(f"rule|{rid}")
        if self.refused.pop(rid, None) is not None:
            self._dirty.add(f"refused|{rid}")
        return [Event(proposed_event(rule)), Publish(rule, run_start)]

    def _rule(
        self,
        policy: Policy,
        rid: str,
        version: int,
        where: tuple[str, str, str, str],
        evidence: list[dict[str, Any]],
        created: int,
        expires: int,
        now_ms: int,
    ) -> dict[str, Any]:
        city, region, country, app = where
        cond = policy.condition
        ws = evidence[-1]["window_s"]
        rule: dict[str, Any] = {
            "schema": RULES_SCHEMA,
            "rule_id": rid,
            "version": version,
            "policy": policy.name,
            "mode": policy.mode,
            "action": policy.action,
            "match": {
                "apps": [app],
                "cities": [city],
                "regions": [region] if region else [],
                "countries": [country] if country else [],
                "exporters": list(policy.match.exporters),
            },
            "target": {},
            "created_ms": created,
            "expires_ms": expires,
            "evidence": {"condition": cond.describe(), "windows": evidence},
            "reason": (
                f"policy {policy.name}: {cond.metric} above {cond.threshold:g} in "
                f"{cond.for_windows} consecutive {ws} s windows of {app} in {city}; "
                f"{policy.action} {policy.target} ({policy.mode})"
            ),
            "produced_ms": now_ms,
        }
        if policy.rate_kbps is not None:
            rule["rate_kbps"] = policy.rate_kbps
        return rule

    def _refuse(
        self, policy: Policy, rid: str, city: str, app: str, run_start: int, refusal: Refusal
    ) -> list[Output]:
        before = self.refused.get(rid)
        if before == {"code": refusal.code, "run": run_start}:
            return []  # this run was refused for this reason already
        self.refused[rid] = {"code": refusal.code, "run": run_start}
        self._dirty.add(f"refused|{rid}")
        state = self.rules.get(rid)
        version = state["rule"]["version"] if state else 0
        what = {"rule_id": rid, "policy": policy.name, "mode": policy.mode,
                "action": policy.action, "match": {"cities": [city], "apps": [app]}}  # fmt: skip
        return [Event(refused_event(what, version, run_start, refusal))]

    def declined(self, rid: str, version: int, code: str, run_start: int) -> None:
        """The admission refused ``version`` of a rule this evaluator proposed.

        The rule goes back to what it was before that version (absent, or
        expired), so the next window of the run proposes it again -- as a
        single evaluator retries its caps on every window -- and the refusal
        is remembered for the run, as :meth:`_refuse` does.
        """
        state = self.rules.get(rid)
        if state is None or not state["active"] or state["rule"]["version"] != version:
            return  # an old answer: the rule moved on since
        prev = state.get("prev")
        if prev is None:
            del self.rules[rid]
        else:
            self.rules[rid] = dict(prev) | {"active": False}
        self.refused[rid] = {"code": code, "run": run_start}
        self._dirty.update((f"rule|{rid}", f"refused|{rid}"))

    # -- time and policy changes -----------------------------------------------

    def expire(self, now_ms: int) -> list[Output]:
        """Tombstones for the rules whose expiry has passed (wall clock)."""
        return list(expire_rules(self.rules, self._dirty, now_ms))

    def set_policies(self, policies: list[Policy]) -> list[Output]:
        """Use new policies; rules no policy would fire any more are withdrawn."""
        self.policies = list(policies)
        wanted = {p.name: p for p in self.policies}
        out: list[Output] = list(withdraw_unwanted(self.rules, self._dirty, wanted))
        for key in [k for k in self.scopes if k.split("|")[1] not in wanted]:
            del self.scopes[key]
            self._dirty.add(key)
        return out

    def active_rules(self) -> dict[str, dict[str, Any]]:
        """The rules in force: id -> latest message."""
        return {rid: s["rule"] for rid, s in self.rules.items() if s["active"]}

    # -- state -----------------------------------------------------------------

    def changes(self) -> dict[str, dict[str, Any] | None]:
        """State entries changed since the last call (None: deleted)."""
        out: dict[str, dict[str, Any] | None] = {}
        for key in sorted(self._dirty):
            out[key] = self._entry(key)
        self._dirty.clear()
        return out

    def _entry(self, key: str) -> dict[str, Any] | None:
        kind, _, rest = key.partition("|")
        if kind == "scope":
            scope = self.scopes.get(key)
            return scope.to_json() if scope and scope.holding else None
        if kind == "rule":
            return self.rules.get(rest)
        if kind == "refused":
            return self.refused.get(rest)
        if kind == "rate":
            return {"recent_new": list(self.guardrails.recent_new)}
        raise KeyError(key)

    def restore(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Rebuild the state from entries (the latest value of each key)."""
        for key, value in entries:
            kind, _, rest = key.partition("|")
            if kind == "scope":
                self.scopes[key] = _Scope.from_json(value)
            elif kind == "rule":
                self.rules[rest] = dict(value)
            elif kind == "refused":
                self.refused[rest] = dict(value)
            elif kind == "rate":
                self.guardrails.recent_new = deque(int(t) for t in value["recent_new"])
