"""rules.v1 and rule-events.v1 messages as rows of ``rules`` and ``rule_events``.

The sink's table mappings call these (one message -> one row), and the
tests and ``voipflow rules simulate`` use them to write the same rows.
Columns are those of ``schemas/clickhouse/003_rules.sql`` and ``009``:

* ``rules``: one row per rule version; ``city``/``app`` are the rule's
  scope (one of each for evaluator rules, empty when it applies to all),
  ``match`` its match object as JSON, ``body`` the whole message, ``author``
  who made it (``policy:<name>``);
* ``rule_events``: one row per event, the event's own columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RULE_COLUMNS = (
    "rule_id", "version", "created", "action", "city", "app", "match", "rate_limit_kbps",
    "expires", "reason", "author", "body", "policy", "mode", "target_kind",
)  # fmt: skip
EVENT_COLUMNS = (
    "ts", "rule_id", "rule_version", "event", "state", "action", "feedback",
    "enforcement_point", "hits", "hit_packets", "hit_bytes", "detail", "event_id", "policy",
    "mode", "city", "app",
)  # fmt: skip


def _one(values: Sequence[str]) -> str:
    return str(values[0]) if len(values) == 1 else ""


def rule_row(rule: Mapping[str, Any]) -> dict[str, Any]:
    """One ``rules`` row of a rules.v1 message (plain Python values, times in ms)."""
    match = rule["match"]
    return {
        "rule_id": rule["rule_id"],
        "version": int(rule["version"]),
        "created": int(rule["created_ms"]),
        "action": rule["action"],
        "city": _one(match.get("cities", [])),
        "app": _one(match.get("apps", [])),
        "match": json.dumps(match, separators=(",", ":"), ensure_ascii=False),
        "rate_limit_kbps": int(rule.get("rate_kbps", 0)),
        "expires": int(rule["expires_ms"]),
        "reason": rule["reason"],
        "author": f"policy:{rule['policy']}",
        "body": json.dumps(rule, separators=(",", ":"), ensure_ascii=False),
        "policy": rule["policy"],
        "mode": rule["mode"],
        "target_kind": rule["target"]["kind"],
    }


def event_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """One ``rule_events`` row of a rule-events.v1 message (times in ms)."""
    row = {name: event[name] for name in EVENT_COLUMNS if name in event}
    row["ts"] = int(event["ts_ms"])
    return row


_TIMES = {"created", "expires", "ts"}
_UINTS = {"version": np.uint32, "rate_limit_kbps": np.uint32, "rule_version": np.uint32,
          "hits": np.uint64, "hit_packets": np.uint64, "hit_bytes": np.uint64}  # fmt: skip


def columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Rows -> numpy columns for an insert (times as datetime64[ms])."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        values = [r[name] for r in rows]
        if name in _TIMES:
            out[name] = np.array(values, dtype=np.int64).astype("datetime64[ms]")
        elif name in _UINTS:
            out[name] = np.array(values, dtype=_UINTS[name])
        else:
            out[name] = np.array(values, dtype=object)
    return out
