"""Make a backend's installed state equal to the rules in force, and say what changed.

One :meth:`Reconciler.reconcile` reads the installed state, computes the
difference with the desired set and applies it as one batch. What it did
comes back as feedback messages (rules-feedback.v1 objects) for the service
to publish:

- ``applied``: a rule installed, replaced by a new version, found installed
  at start, or re-installed after drift (``detail`` says which);
- ``removed``: taken out after a tombstone, a refused new version, or because
  it was installed but is not in force at all (stale);
- ``expired``: taken out at its ``expires_ms``;
- ``failed``: the backend refused it (``error``); reported once per version;
- ``hits``: counters of applied rules, when asked.

A batch the backend refuses is retried rule by rule, so one rule the backend
cannot take does not keep the others out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from voipflow.enforcement.points.backend import Backend, Batch, Installed, State
from voipflow.enforcement.points.desired import DesiredRules, Refusal, Rule
from voipflow.enforcement.points.errors import BackendError
from voipflow.enforcement.points.metrics import EnforceMetrics

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Feedback:
    """Builds rules-feedback.v1 objects for one point and backend."""

    point: str
    backend: str

    def make(
        self, rule_id: str, version: int, status: str, mode: str, at_ms: int, **extra: Any
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "schema": "rules-feedback.v1",
            "rule_id": rule_id,
            "rule_version": version,
            "enforcement_point": self.point,
            "backend": self.backend,
            "status": status,
            "mode": mode,
            "observed_ms": at_ms,
        }
        msg.update({k: v for k, v in extra.items() if v is not None and v != ""})
        return msg

    def refused(self, refusal: Refusal, at_ms: int) -> dict[str, Any]:
        return self.make(
            refusal.rule_id,
            refusal.version,
            "failed",
            refusal.mode,
            at_ms,
            error=f"refused ({refusal.reason}): {refusal.error}"[:2000],
        )


@dataclass
class Reconciler:
    backend: Backend
    desired: DesiredRules
    feedback: Feedback
    metrics: EnforceMetrics
    #: Rules this process installed or found installed: handle -> rule.
    applied: dict[str, Rule] = field(default_factory=dict)
    #: (rule_id, digest) of versions the backend refused, reported once.
    failed: dict[str, str] = field(default_factory=dict)
    #: True until the first reconcile: differences then are reported as found at start.
    first: bool = True

    def reconcile(self, *, hits: bool = False, at_ms: int | None = None) -> list[dict[str, Any]]:
        """One pass; returns the feedback to publish. Raises BackendError when unreadable."""
        started = time.monotonic()
        at = now_ms() if at_ms is None else at_ms
        in_force = {r.handle: r for r in self.desired.in_force(at).values()}
        state = self.backend.installed(in_force, at)
        out: list[dict[str, Any]] = []
        batch, why = self._plan(in_force, state, at)
        out += self._apply(batch, why, state, at)
        if hits:
            out += self._hits(state, at)
        self.metrics.installed.set(len(self.applied))
        self.metrics.reconcile_seconds.observe(time.monotonic() - started)
        self.first = False
        return out

    def _plan(
        self, in_force: dict[str, Rule], state: State, at: int
    ) -> tuple[Batch, dict[str, str]]:
        batch = Batch(base=not state.base_ok)
        why: dict[str, str] = {}
        if not state.base_ok and not self.first:
            self._drift("base", state.base_detail)
        for handle, rule in in_force.items():
            inst = state.rules.get(handle)
            if self.failed.get(rule.rule_id) == rule.digest and inst is None:
                why[handle] = "installed after an earlier failure"
                batch.add.append(rule)
                continue
            if inst is None:
                if handle in self.applied and not self.first:
                    why[handle] = "drift repaired: rule was missing from the dataplane"
                    self._drift("missing", rule.rule_id)
                else:
                    why[handle] = "installed"
                batch.add.append(rule)
            elif inst.digest != rule.digest:
                batch.remove.append(inst)
                batch.add.append(rule)
                why[handle] = f"replaced version {inst.version}"
            elif not inst.intact:
                batch.remove.append(inst)
                batch.add.append(rule)
                why[handle] = f"drift repaired: {inst.detail}"
                self._drift("damaged", inst.detail)
            elif handle not in self.applied:
                # Installed before this process started, unchanged: confirm it.
                self.applied[handle] = rule
                why[handle] = "found installed at start, unchanged"
        for handle, inst in state.rules.items():
            if handle not in in_force:
                batch.remove.append(inst)
        return batch, why

    def _apply(
        self, batch: Batch, why: dict[str, str], state: State, at: int
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        # Rules unchanged but newly confirmed (found at start) need no batch.
        for handle, text in why.items():
            if text.startswith("found installed"):
                rule = self.applied[handle]
                out.append(self._applied(rule, text, at))
        if not batch.add and not batch.remove and not batch.base:
            return out
        try:
            self.backend.apply(batch, at)
            done_add, done_remove = batch.add, batch.remove
            failures: dict[str, str] = {}
        except BackendError as exc:
            log.warning(
                "backend refused a batch; applying its rules one by one",
                extra={"backend": self.backend.name, "changes": len(batch), "error": str(exc)},
            )
            done_add, done_remove, failures = self._one_by_one(batch, at)
        for inst in done_remove:
            if inst.handle in {r.handle for r in done_add}:
                continue  # replaced: reported as applied below
            out.append(self._removed(inst, at))
        for rule in done_add:
            self.failed.pop(rule.rule_id, None)
            self.applied[rule.handle] = rule
            self.metrics.applied.inc()
            out.append(self._applied(rule, why.get(rule.handle, "installed"), at))
        for rule in batch.add:
            if rule.handle in failures:
                self.applied.pop(rule.handle, None)
                if self.failed.get(rule.rule_id) != rule.digest:
                    self.failed[rule.rule_id] = rule.digest
                    self.metrics.apply_failed.inc()
                    log.error(
                        "backend could not install a rule",
                        extra={"rule_id": rule.rule_id, "error": failures[rule.handle]},
                    )
                    out.append(
                        self.feedback.make(
                            rule.rule_id,
                            rule.version,
                            "failed",
                            rule.mode,
                            at,
                            error=f"{self.backend.name}: {failures[rule.handle]}"[:2000],
                        )
                    )
        return out

    def _one_by_one(
        self, batch: Batch, at: int
    ) -> tuple[list[Rule], list[Installed], dict[str, str]]:
        done_add: list[Rule] = []
        done_remove: list[Installed] = []
        failures: dict[str, str] = {}
        replaced = {r.handle for r in batch.add}
        # Base and removals first (removals of replaced rules go with their add).
        first = Batch(remove=[i for i in batch.remove if i.handle not in replaced], base=batch.base)
        if first:
            self.backend.apply(first, at)  # a failure here is the backend's, not a rule's
            done_remove += first.remove
        for rule in batch.add:
            old = [i for i in batch.remove if i.handle == rule.handle]
            try:
                self.backend.apply(Batch(remove=old, add=[rule]), at)
            except BackendError as exc:
                failures[rule.handle] = str(exc)
                continue
            done_remove += old
            done_add.append(rule)
        return done_add, done_remove, failures

    def _applied(self, rule: Rule, detail: str, at: int) -> dict[str, Any]:
        return self.feedback.make(
            rule.rule_id,
            rule.version,
            "applied",
            rule.mode,
            at,
            detail=detail,
            elements=rule.elements,
        )

    def _removed(self, inst: Installed, at: int) -> dict[str, Any]:
        known = self.applied.pop(inst.handle, None)
        rule_id = self.desired.name_of(inst.handle) or inst.rule_id or inst.handle
        held = self.desired.rules.get(rule_id)
        mode = (known or held).mode if (known or held) else "enforce"  # type: ignore[union-attr]
        if held is not None and held.expires_ms <= at:
            status, detail = "expired", f"expired at {held.expires_ms}"
        elif rule_id in self.desired.versions:
            status, detail = "removed", "a newer version was refused"
        elif rule_id in self.desired.ids.values():
            status, detail = "removed", "withdrawn"
        else:
            status, detail = "removed", "stale: installed but not in force"
            self._drift("stale", rule_id)
        self.metrics.removed.labels(status).inc()
        return self.feedback.make(
            rule_id,
            inst.version,
            status,
            mode,
            at,
            detail=detail,
            hit_packets=inst.packets,
            hit_bytes=inst.bytes,
        )

    def _hits(self, state: State, at: int) -> list[dict[str, Any]]:
        out = []
        for handle, rule in self.applied.items():
            inst = state.rules.get(handle)
            if inst is None or inst.packets is None or inst.digest != rule.digest:
                continue
            out.append(
                self.feedback.make(
                    rule.rule_id,
                    rule.version,
                    "hits",
                    rule.mode,
                    at,
                    hit_packets=inst.packets,
                    hit_bytes=inst.bytes,
                    elements=inst.elements,
                )
            )
        return out

    def _drift(self, kind: str, detail: str) -> None:
        self.metrics.drift.labels(kind).inc()
        log.warning("drift repaired", extra={"kind": kind, "detail": detail})
