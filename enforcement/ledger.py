"""The rule ledger's state machine: what was asked (rules.v1) against what was done
(rules-feedback.v1). Pure, no I/O.

Each rule goes through::

    proposed -> published -> applied | failed -> expired | withdrawn
                                      (removed: an enforcement point took it out)

(``proposed`` and ``refused`` are recorded by the evaluator.) The ledger

* records ``published`` for every new version it sees on rules.v1;
* turns feedback into ``feedback`` events whose state is the feedback's
  status, with hit counters turned from the enforcement points' cumulative
  counts into deltas per report (what ``rule_events`` sums);
* **republishes** a version that got no feedback from any enforcement point
  within ``feedback_timeout_s``, up to ``max_republish`` times, then
  **escalates** it (``escalated`` event, metric, error log);
* escalates every ``failed`` feedback;
* **withdraws** (tombstones) rules whose expiry has passed and records
  ``expired``; a tombstone from the evaluator is recorded as ``expired`` or
  ``withdrawn`` after its ``reason`` header.

State per rule is one JSON entry (:meth:`Ledger.changes`/:meth:`Ledger.restore`)
for a compacted state topic, as for the evaluator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voipflow.enforcement.events import make_event

#: States after which a rule is over.
ENDED = ("expired", "withdrawn")


@dataclass(frozen=True, slots=True)
class Record:
    """Publish this rule-events.v1 message."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Republish:
    """Publish this rule version again (no enforcement point answered)."""

    rule: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Publish a tombstone for this rule (it expired)."""

    rule_id: str


@dataclass(frozen=True, slots=True)
class Escalation:
    """Something an operator must look at: a failure or a rule nobody applied."""

    rule_id: str
    reason: str  # failed | no_feedback
    detail: str


LedgerOutput = Record | Republish | Tombstone | Escalation


@dataclass
class Ledger:
    feedback_timeout_ms: int
    max_republish: int
    #: Rules over this long (past their expiry) are forgotten.
    forget_after_ms: int = 86_400_000
    #: rule id -> {"rule", "state", "published_ms", "answered", "republished",
    #: "counters": {ep: [packets, bytes]}, "seen": {ep: [observed_ms, statuses]}}
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: rule id -> reports on a version not read yet: [{"fb", "since"}]
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)

    def _set(self, rid: str, entry: dict[str, Any]) -> None:
        self.rules[rid] = entry
        self._dirty.add(rid)

    # -- rules.v1 ----------------------------------------------------------------

    def on_rule(self, rule: Mapping[str, Any], now_ms: int) -> list[LedgerOutput]:
        """A rules.v1 message: a new version is ``published``; a repeat changes nothing."""
        rid = str(rule["rule_id"])
        known = self.rules.get(rid)
        if known is not None and known["rule"]["version"] >= rule["version"]:
            return []
        entry = {
            "rule": dict(rule),
            "state": "published",
            "published_ms": now_ms,
            "answered": False,
            "republished": 0,
            "counters": known["counters"] if known else {},
            "seen": known.get("seen", {}) if known else {},
        }
        self._set(rid, entry)
        out: list[LedgerOutput] = [
            Record(make_event(rule, "published", "published", rule["produced_ms"]))
        ]
        waiting = self.pending.pop(rid, [])
        if waiting:
            self._dirty.add(f"pending|{rid}")
        for item in waiting:  # reports that came before the rule
            if item["fb"]["rule_version"] > rule["version"]:
                self.pending.setdefault(rid, []).append(item)
            else:
                out += self._feedback(item["fb"], entry)
        return out

    def on_tombstone(self, rid: str, reason: str, now_ms: int) -> list[LedgerOutput]:
        """A tombstone on rules.v1; ``reason`` from its header (expired or withdrawn)."""
        entry = self.rules.get(rid)
        if entry is None or entry["state"] in ENDED:
            return []
        state = "expired" if reason == "expired" else "withdrawn"
        entry["state"] = state
        self._dirty.add(rid)
        return [Record(make_event(entry["rule"], state, state, now_ms, detail=reason or state))]

    # -- rules-feedback.v1 ---------------------------------------------------------

    def on_feedback(self, fb: Mapping[str, Any], now_ms: int) -> list[LedgerOutput]:
        """One enforcement point's report on one rule version.

        A report on a version the ledger has not read yet (rules.v1 and the
        feedback topic are read side by side, in no common order) waits for
        it, at most ``feedback_timeout_ms``; then it is recorded as it is.
        """
        rid = str(fb["rule_id"])
        entry = self.rules.get(rid)
        if entry is None or fb["rule_version"] > entry["rule"]["version"]:
            self.pending.setdefault(rid, []).append({"fb": dict(fb), "since": now_ms})
            self._dirty.add(f"pending|{rid}")
            return []
        return self._feedback(fb, entry)

    def _feedback(self, fb: Mapping[str, Any], entry: dict[str, Any] | None) -> list[LedgerOutput]:
        rid = str(fb["rule_id"])
        rule: Mapping[str, Any] = (
            entry["rule"] if entry else {"rule_id": rid, "version": fb["rule_version"]}
        )
        status = str(fb["status"])
        ep = str(fb["enforcement_point"])
        packets, nbytes = int(fb.get("hit_packets", 0)), int(fb.get("hit_bytes", 0))
        observed = int(fb["observed_ms"])
        d_packets = d_bytes = 0
        if entry is not None:
            seen = entry.setdefault("seen", {}).get(ep, [-1, []])
            if observed < seen[0] or (observed == seen[0] and status in seen[1]):
                return []  # a report read again after a restart
            entry["seen"][ep] = [observed, [*seen[1], status] if observed == seen[0] else [status]]
            last = entry["counters"].get(ep, [0, 0])
            # counters are cumulative since the rule was applied; a smaller
            # one means the enforcement point started counting again
            d_packets = packets - last[0] if packets >= last[0] else packets
            d_bytes = nbytes - last[1] if nbytes >= last[1] else nbytes
            entry["counters"][ep] = [packets, nbytes]
            if fb["rule_version"] == entry["rule"]["version"]:
                entry["answered"] = True
                if status != "hits" and entry["state"] not in ENDED:
                    entry["state"] = status
                elif status == "hits" and entry["state"] == "published":
                    entry["state"] = "applied"  # counting hits: it is applied somewhere
            self._dirty.add(rid)
        # the event carries the rule's state after it: hits make a published
        # rule applied and change nothing else (a rule another enforcement
        # point failed to apply stays failed)
        state = entry["state"] if entry else status
        if state == "hits":
            state = "applied"  # hits of a rule the ledger does not know: it is applied
        detail = str(fb.get("error") or fb.get("detail") or "")
        event = make_event(
            {**rule, "version": fb["rule_version"]},
            "feedback",
            state,
            int(fb["observed_ms"]),
            feedback=status,
            enforcement_point=ep,
            hits=d_packets,
            hit_packets=d_packets,
            hit_bytes=d_bytes,
            detail=detail,
        )
        out: list[LedgerOutput] = [Record(event)]
        if status == "failed":
            out.append(Escalation(rid, "failed", f"{ep}: {detail}"))
            out.append(
                Record(
                    make_event(
                        rule,
                        "escalated",
                        state,
                        int(fb["observed_ms"]),
                        enforcement_point=ep,
                        detail=f"failed at {ep}: {detail}",
                    )
                )
            )
        return out

    # -- time ----------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[LedgerOutput]:
        """Expiry and feedback timeouts at wall-clock ``now_ms``."""
        out: list[LedgerOutput] = []
        forget: list[str] = []
        for rid, entry in self.rules.items():
            rule = entry["rule"]
            if entry["state"] in ENDED:
                if rule["expires_ms"] + self.forget_after_ms < now_ms:
                    forget.append(rid)
                continue
            if rule["expires_ms"] <= now_ms:
                entry["state"] = "expired"
                self._dirty.add(rid)
                out.append(Tombstone(rid))
                out.append(
                    Record(
                        make_event(
                            rule, "expired", "expired", rule["expires_ms"], detail="expiry passed"
                        )
                    )
                )
                continue
            if entry["answered"] or now_ms - entry["published_ms"] < self.feedback_timeout_ms:
                continue
            if entry["republished"] < self.max_republish:
                entry["republished"] += 1
                entry["published_ms"] = now_ms
                self._dirty.add(rid)
                n = entry["republished"]
                out.append(Republish(rule))
                out.append(
                    Record(
                        make_event(
                            rule,
                            "republished",
                            entry["state"],
                            now_ms,
                            detail=f"no feedback; republished ({n})",
                        )
                    )
                )
            elif entry["republished"] == self.max_republish:
                entry["republished"] += 1  # escalated once, not at every tick
                self._dirty.add(rid)
                detail = f"no enforcement point answered after {self.max_republish} republications"
                out.append(Escalation(rid, "no_feedback", detail))
                out.append(
                    Record(make_event(rule, "escalated", entry["state"], now_ms, detail=detail))
                )
        for rid in forget:
            del self.rules[rid]
            self._dirty.add(rid)
        for rid, items in list(self.pending.items()):
            late = [i for i in items if now_ms - i["since"] >= self.feedback_timeout_ms]
            if not late:
                continue
            keep = [i for i in items if i not in late]
            if keep:
                self.pending[rid] = keep
            else:
                del self.pending[rid]
            self._dirty.add(f"pending|{rid}")
            for item in late:  # about a rule this ledger never read: recorded as it is
                out += self._feedback(item["fb"], self.rules.get(rid))
        return out

    # -- state -----------------------------------------------------------------------

    def changes(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for key in sorted(self._dirty):
            if key.startswith("pending|"):
                items = self.pending.get(key.removeprefix("pending|"))
                out[key] = {"items": items} if items else None
            else:
                out[key] = self.rules.get(key)
        self._dirty.clear()
        return out

    def restore(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        for key, value in entries:
            if key.startswith("pending|"):
                self.pending[key.removeprefix("pending|")] = list(value["items"])
            else:
                self.rules[key] = dict(value)
