"""The one place where the global caps are applied: proposals in, rules out. Pure, no I/O.

Several evaluators share the work by city (:mod:`voipflow.enforcement.partitioning`).
Each decides, for its cities, when a policy fires, the rule's id, version,
target and evidence, and checks the never-block prefixes and the per-city
cap: what comes out of it is a *proposal*. The caps that span every city --
rules in force (``VOIPFLOW_GUARDRAILS_MAX_ACTIVE_RULES``) and new rules per
minute (``VOIPFLOW_GUARDRAILS_MAX_NEW_RULES_PER_MINUTE``) -- cannot be checked
by one evaluator alone: two of them would each admit up to the cap. So every
proposal goes to a single-partition topic, and the evaluator that owns that
partition runs this :class:`Admission` on it. It is the only writer of
``rules.v1`` among the evaluators:

* a proposal of a rule already in force is a renewal: published;
* a proposal of a rule not in force passes :meth:`Guardrails.admit` (the
  per-city cap again, exactly, the rules in force, the rate): published with
  its ``proposed`` event, or refused -- a ``refused`` event with the reason
  (once per run, like the evaluator's) and a :class:`Declined` answer that
  goes back to the evaluator owning the city, which then forgets that
  version so the run's next window proposes it again;
* a version at or below the one already published is a replay (a restarted
  evaluator proposes its rules in force again): nothing happens;
* expiry (wall clock) and policies that no longer fire a rule give its
  tombstone here, and only here, so a rule is withdrawn once.

Its state (rules published, refusals, the rate window) is a set of key ->
JSON entries like the evaluator's (:meth:`changes`, :meth:`restore`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voipflow.enforcement.evaluator import (
    Event,
    Output,
    Publish,
    Withdraw,
    expire_rules,
    proposed_event,
    refused_event,
    withdraw_unwanted,
)
from voipflow.enforcement.guardrails import Guardrails
from voipflow.enforcement.policy import Policy


@dataclass(frozen=True, slots=True)
class Declined:
    """Tell the evaluator owning ``city`` that this version of its rule was refused."""

    rule_id: str
    version: int
    city: str
    code: str
    run_start: int


AdmissionOutput = Output | Declined


def _event_ms(rule: Mapping[str, Any]) -> int:
    """When the rule fired: the end of its last evidence window (event time)."""
    last = rule["evidence"]["windows"][-1]
    return int(last["window_start_ms"]) + int(last["window_s"]) * 1000


@dataclass
class Admission:
    policies: list[Policy]
    guardrails: Guardrails
    #: rule id -> {"rule": last published message, "active": bool, "city": ...}
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: rule id -> {"code": refusal code, "run": first window of the refused run}
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)

    def on_proposal(
        self, rule: dict[str, Any], run_start: int, now_ms: int
    ) -> tuple[str, list[AdmissionOutput]]:
        """Admit or refuse one proposed rule version; the outcome and the outputs.

        The outcome is ``admitted``, ``renewed``, ``refused`` or ``replayed``.
        """
        rid, version = str(rule["rule_id"]), int(rule["version"])
        city = str(rule["match"]["cities"][0])
        state = self.rules.get(rid)
        if state is not None and int(state["rule"]["version"]) >= version:
            return "replayed", []
        if int(rule["expires_ms"]) <= now_ms:
            return "replayed", []  # over before it could be admitted
        outcome = "renewed"
        if state is None or not state["active"]:
            outcome = "admitted"
            active_cities = {r: s["city"] for r, s in self.rules.items() if s["active"]}
            refusal = self.guardrails.admit(city, _event_ms(rule), active_cities)
            self._dirty.add("rate")
            if refusal is not None:
                out: list[AdmissionOutput] = [Declined(rid, version, city, refusal.code, run_start)]
                if self.refused.get(rid) != {"code": refusal.code, "run": run_start}:
                    self.refused[rid] = {"code": refusal.code, "run": run_start}
                    self._dirty.add(f"refused|{rid}")
                    published = int(state["rule"]["version"]) if state else 0
                    out.insert(0, Event(refused_event(rule, published, run_start, refusal)))
                return "refused", out
        self.rules[rid] = {"rule": rule, "active": True, "city": city}
        self._dirty.add(f"rule|{rid}")
        if self.refused.pop(rid, None) is not None:
            self._dirty.add(f"refused|{rid}")
        return outcome, [Event(proposed_event(rule)), Publish(rule, run_start)]

    def expire(self, now_ms: int) -> list[AdmissionOutput]:
        """Tombstones for the rules whose expiry has passed (wall clock)."""
        return list(expire_rules(self.rules, self._dirty, now_ms))

    def set_policies(self, policies: list[Policy]) -> list[AdmissionOutput]:
        """Use new policies; rules no policy would fire any more are withdrawn."""
        self.policies = list(policies)
        wanted = {p.name: p for p in self.policies}
        return list(withdraw_unwanted(self.rules, self._dirty, wanted))

    def reconcile(self, on_topic: Mapping[str, dict[str, Any] | None]) -> list[AdmissionOutput]:
        """Make rules.v1 (``on_topic``: its compacted view) agree with this state.

        What the state says is in force but the topic lacks is published again
        (the same event id as the one that may have been lost); what the state
        withdrew but the topic holds gets its tombstone; a rule the topic holds
        and the state does not know (written by an evaluator from before the
        admission existed) is taken as in force, so the caps count it.
        """
        out: list[AdmissionOutput] = []
        for rid, entry in self.rules.items():
            rule, topic_rule = entry["rule"], on_topic.get(rid)
            if entry["active"]:
                if topic_rule is None or topic_rule["version"] < rule["version"]:
                    out += [Event(proposed_event(rule)), Publish(rule)]
            elif topic_rule is not None:
                out.append(Withdraw(rid, "withdrawn", rule))
        for rid, topic_rule in on_topic.items():
            if topic_rule is not None and rid not in self.rules:
                city = str(topic_rule["match"]["cities"][0])
                self.rules[rid] = {"rule": topic_rule, "active": True, "city": city}
                self._dirty.add(f"rule|{rid}")
        return out

    def active_rules(self) -> dict[str, dict[str, Any]]:
        """The rules in force: id -> latest message."""
        return {rid: s["rule"] for rid, s in self.rules.items() if s["active"]}

    # -- state -----------------------------------------------------------------

    def changes(self) -> dict[str, dict[str, Any] | None]:
        """State entries changed since the last call (None: deleted)."""
        out: dict[str, dict[str, Any] | None] = {}
        for key in sorted(self._dirty):
            kind, _, rest = key.partition("|")
            if kind == "rule":
                out[key] = self.rules.get(rest)
            elif kind == "refused":
                out[key] = self.refused.get(rest)
            else:
                out[key] = {"recent_new": list(self.guardrails.recent_new)}
        self._dirty.clear()
        return out

    def restore(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Rebuild the state from entries (the latest value of each key)."""
        for key, value in entries:
            kind, _, rest = key.partition("|")
            if kind == "rule":
                self.rules[rest] = dict(value)
            elif kind == "refused":
                self.refused[rest] = dict(value)
            elif kind == "rate":
                self.guardrails.recent_new = deque(int(t) for t in value["recent_new"])
