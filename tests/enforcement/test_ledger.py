"""The ledger's state machine: published, applied/failed, republished, escalated, expired."""

from __future__ import annotations

from typing import Any

from tests.enforcement.helpers import T0, evaluator, policy, rule_feedback, usage
from voipflow.enforcement.evaluator import Publish
from voipflow.enforcement.ledger import Escalation, Ledger, LedgerOutput, Record, Tombstone
from voipflow.schemas.rule_events import validate_rule_event


def _rule(ttl: str = "10m") -> dict[str, Any]:
    ev = evaluator([policy("led", windows=1, ttl=ttl)])
    (pub,) = [o for o in ev.on_usage(usage("Berlin", "teams", 0, call_seconds=500), T0) if
              isinstance(o, Publish)]  # fmt: skip
    return pub.rule


def _events(out: list[LedgerOutput]) -> list[dict[str, Any]]:
    evs = [o.event for o in out if isinstance(o, Record)]
    for e in evs:
        validate_rule_event(e)
    return evs


def test_published_applied_hits_expired() -> None:
    rule = _rule()
    led = Ledger(feedback_timeout_ms=30_000, max_republish=2)
    (pub,) = _events(led.on_rule(rule, T0))
    assert (pub["event"], pub["state"], pub["rule_version"]) == ("published", "published", 1)
    assert led.on_rule(rule, T0 + 5) == []  # the same version read again
    (ap,) = _events(led.on_feedback(rule_feedback(rule, "applied", "ep-1", T0 + 1000), T0 + 1000))
    assert (ap["event"], ap["state"], ap["feedback"], ap["enforcement_point"]) == (
        "feedback",
        "applied",
        "applied",
        "ep-1",
    )
    # cumulative counters become deltas per report and enforcement point
    hits = []
    for at, packets in ((2000, 100), (3000, 250), (4000, 30)):  # 30: the counter restarted
        fb = rule_feedback(
            rule, "hits", "ep-1", T0 + at, hit_packets=packets, hit_bytes=packets * 100
        )
        (e,) = _events(led.on_feedback(fb, T0 + at))
        hits.append((e["hits"], e["hit_bytes"], e["state"]))
    assert hits == [(100, 10_000, "applied"), (150, 15_000, "applied"), (30, 3_000, "applied")]
    # a report read again after a restart is recognised
    assert (
        led.on_feedback(rule_feedback(rule, "hits", "ep-1", T0 + 3000, hit_packets=250), T0) == []
    )
    assert led.tick(rule["expires_ms"] - 1) == []  # answered: no republication
    out = led.tick(rule["expires_ms"])
    assert [type(o) for o in out] == [Tombstone, Record]
    (exp,) = _events(out)
    assert (exp["event"], exp["state"]) == ("expired", "expired")
    assert led.tick(rule["expires_ms"] + 1) == []  # once
    assert led.on_tombstone(rule["rule_id"], "expired", rule["expires_ms"] + 2) == []


def test_no_feedback_is_republished_then_escalated() -> None:
    rule = _rule(ttl="1h")
    led = Ledger(feedback_timeout_ms=30_000, max_republish=2)
    led.on_rule(rule, T0)
    assert led.tick(T0 + 29_999) == []
    kinds = []
    for k in range(1, 5):
        out = led.tick(T0 + k * 30_000)
        kinds.append([type(o).__name__ for o in out] + [e["event"] for e in _events(out)])
    assert kinds == [
        ["Republish", "Record", "republished"],
        ["Republish", "Record", "republished"],
        ["Escalation", "Record", "escalated"],
        [],  # escalated once
    ]


def test_failure_is_escalated_and_a_tombstone_withdraws() -> None:
    rule = _rule()
    led = Ledger(feedback_timeout_ms=30_000, max_republish=2)
    led.on_rule(rule, T0)
    out = led.on_feedback(
        rule_feedback(rule, "failed", "ep-2", T0 + 500, error="nft: table full"), T0 + 500
    )
    esc = [o for o in out if isinstance(o, Escalation)]
    assert [(e.reason, e.detail) for e in esc] == [("failed", "ep-2: nft: table full")]
    evs = _events(out)
    assert [(e["event"], e["state"], e["feedback"]) for e in evs] == [
        ("feedback", "failed", "failed"),
        ("escalated", "failed", ""),
    ]
    assert evs[0]["detail"] == "nft: table full"
    (w,) = _events(led.on_tombstone(rule["rule_id"], "withdrawn", T0 + 600))
    assert (w["event"], w["state"]) == ("withdrawn", "withdrawn")
    assert led.tick(rule["expires_ms"] + 1) == []  # withdrawn rules do not expire again


def test_new_version_and_state_round_trip() -> None:
    rule = _rule()
    led = Ledger(feedback_timeout_ms=30_000, max_republish=0)
    led.on_rule(rule, T0)
    led.on_feedback(rule_feedback(rule, "hits", "ep-1", T0 + 1, hit_packets=10), T0 + 1)
    v2 = {**rule, "version": 2, "expires_ms": rule["expires_ms"] + 60_000}
    (pub,) = _events(led.on_rule(v2, T0 + 2))
    assert pub["rule_version"] == 2
    again = Ledger(feedback_timeout_ms=30_000, max_republish=0)
    again.restore((k, v) for k, v in led.changes().items() if v is not None)
    assert again.on_rule(v2, T0 + 3) == []
    # counters carry over versions: the next report is a delta from 10
    (e,) = _events(
        again.on_feedback(rule_feedback(v2, "hits", "ep-1", T0 + 4, hit_packets=15), T0 + 4)
    )
    assert e["hits"] == 5
    assert again.tick(T0 + 2 + 30_000) == []  # version 2 was answered: nothing to do


def test_feedback_read_before_its_rule_waits_for_it() -> None:
    """rules.v1 and the feedback topic are read side by side, in no common order."""
    rule = _rule()
    led = Ledger(feedback_timeout_ms=30_000, max_republish=1)
    assert led.on_feedback(rule_feedback(rule, "applied", "ep-1", T0 + 10), T0 + 10) == []
    restarted = Ledger(feedback_timeout_ms=30_000, max_republish=1)
    restarted.restore((k, v) for k, v in led.changes().items() if v is not None)
    evs = _events(restarted.on_rule(rule, T0 + 20))
    assert [(e["event"], e["state"]) for e in evs] == [
        ("published", "published"),
        ("feedback", "applied"),
    ]
    assert restarted.tick(T0 + 60_000) == []  # answered: not republished
    # a report about a rule never read is recorded as it is once the wait is over
    other = {**rule, "rule_id": "elsewhere-1"}
    assert led.on_feedback(rule_feedback(other, "failed", "ep-9", T0, error="x"), T0) == []
    assert led.tick(T0 + 29_999) == []
    late = _events(led.tick(T0 + 30_000))
    assert [(e["rule_id"], e["event"], e["state"]) for e in late] == [
        ("elsewhere-1", "feedback", "failed"),
        ("elsewhere-1", "escalated", "failed"),
    ]
