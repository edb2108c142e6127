"""rule-events.v1 messages built from a rule and what happened to it.

Both the evaluator and the ledger build their events here, so every event
carries the same columns of the rule (policy, mode, action, city, app) and a
deterministic ``event_id``: the same decision on the same input gives the
same id, so a replayed event can be recognised downstream.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from voipflow.schemas.rule_events import SCHEMA_NAME


def _first(values: Any) -> str:
    return str(values[0]) if values else ""


def make_event(
    rule: Mapping[str, Any],
    event: str,
    state: str,
    ts_ms: int,
    *,
    detail: str = "",
    feedback: str = "",
    enforcement_point: str = "",
    hits: int = 0,
    hit_packets: int = 0,
    hit_bytes: int = 0,
) -> dict[str, Any]:
    """One rule-events.v1 message about ``rule`` (a rules.v1 message or its id fields)."""
    match = rule.get("match", {})
    ident = [rule["rule_id"], rule.get("version", 0), event, state, ts_ms, feedback,
             enforcement_point, hits, detail]  # fmt: skip
    digest = hashlib.sha256(json.dumps(ident, ensure_ascii=False).encode()).hexdigest()[:20]
    return {
        "schema": SCHEMA_NAME,
        "event_id": digest,
        "ts_ms": int(ts_ms),
        "rule_id": str(rule["rule_id"]),
        "rule_version": int(rule.get("version", 0)),
        "event": event,
        "state": state,
        "policy": str(rule.get("policy", "")),
        "mode": str(rule.get("mode", "")),
        "action": str(rule.get("action", "")),
        "city": _first(match.get("cities", [])),
        "app": _first(match.get("apps", [])),
        "feedback": feedback,
        "enforcement_point": enforcement_point,
        "hits": int(hits),
        "hit_packets": int(hit_packets),
        "hit_bytes": int(hit_bytes),
        "detail": detail,
    }
