"""The reconciler's bookkeeping, on the log backend (its state is its own memory).

``PickyBackend`` is the log backend refusing any batch that holds one
particular prefix, the way nft refuses a whole transaction for one bad
command: it tests that one refused rule does not keep the others out.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import redirect_stdout

import pytest

from tests.enforcement.points.rulesdata import make_rule
from voipflow.enforcement.points.backend import Batch
from voipflow.enforcement.points.desired import DesiredRules
from voipflow.enforcement.points.errors import BackendError
from voipflow.enforcement.points.logbackend import LogBackend
from voipflow.enforcement.points.metrics import EnforceMetrics
from voipflow.enforcement.points.reconcile import Feedback, Reconciler
from voipflow.schemas.rules import encode_rule, validate_feedback


class PickyBackend(LogBackend):
    refuse = "203.0.113.0/24"

    def apply(self, batch: Batch, now_ms: int) -> None:
        if any(self.refuse in map(str, r.v4) for r in batch.add):
            raise BackendError(f"cannot hold {self.refuse}")
        super().apply(batch, now_ms)


@pytest.fixture
def rec() -> Iterator[Reconciler]:
    backend = PickyBackend("-")
    backend.start()
    with redirect_stdout(io.StringIO()):
        yield Reconciler(backend, DesiredRules(), Feedback("t", "log"), EnforceMetrics())


def _put(rec: Reconciler, rule: dict) -> None:
    assert rec.desired.apply(rule["rule_id"].encode(), encode_rule(rule)).refused is None


def _pass(rec: Reconciler) -> list[tuple[str, str]]:
    out = rec.reconcile()
    for msg in out:
        validate_feedback(msg)
    return sorted((m["rule_id"], m["status"]) for m in out)


def test_one_refused_rule_does_not_keep_the_others_out(rec: Reconciler) -> None:
    _put(rec, make_rule("r-1"))
    _put(rec, make_rule("r-bad", target={"prefixes": ["203.0.113.0/24"]}))
    _put(rec, make_rule("r-2", target={"prefixes": ["192.0.2.0/24"]}))
    assert _pass(rec) == [("r-1", "applied"), ("r-2", "applied"), ("r-bad", "failed")]
    # Retried on every pass, reported once per version.
    assert _pass(rec) == []
    assert rec.metrics.registry.get_sample_value("voipflow_enforce_rules_failed_total") == 1
    _put(rec, make_rule("r-bad", version=2, target={"prefixes": ["198.18.0.0/15"]}))
    assert _pass(rec) == [("r-bad", "applied")]


def test_a_rule_replaced_by_a_new_version_is_reported_once_as_applied(rec: Reconciler) -> None:
    _put(rec, make_rule("r-1"))
    _pass(rec)
    _put(rec, make_rule("r-1", version=2, mode="shadow"))
    out = rec.reconcile()
    assert [(m["status"], m["rule_version"], m["detail"]) for m in out] == [
        ("applied", 2, "replaced version 1")
    ]
