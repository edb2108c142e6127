"""The log backend: one JSON line per action, and nothing else.

It is the reference for teams that write enforcement consumers in other
languages: run ``voipflow enforce --backend log`` beside theirs and compare
what each would do. Each line is one object::

    {"action": "install", "rule_id": ..., "version": ..., "mode": ...,
     "verdict": "drop" | "limit" | "count", "rate_bytes_per_s": ...,
     "protocol": ..., "prefixes": [...], "ports": [[from, to], ...],
     "expires_ms": ..., "at_ms": ...}
    {"action": "remove", "rule_id": ..., "version": ..., "at_ms": ...}

``verdict`` is what a dataplane would do with a matching packet: ``count``
for shadow mode and for monitor/alert rules. Its "installed" state is its own
memory, so a restarted log point prints every rule in force again.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

from voipflow.enforcement.points.backend import Batch, Installed, State
from voipflow.enforcement.points.desired import Rule


def verdict(rule: Rule) -> str:
    """What a dataplane does with a packet the rule matches."""
    if not rule.drops:
        return "count"
    return "drop" if rule.action == "block" else "limit"


def describe(rule: Rule, at_ms: int) -> dict[str, Any]:
    """The install line of a rule (also what the tests compare backends against)."""
    return {
        "action": "install",
        "rule_id": rule.rule_id,
        "version": rule.version,
        "mode": rule.mode,
        "verdict": verdict(rule),
        "rate_bytes_per_s": rule.rate_bytes_per_s if verdict(rule) == "limit" else None,
        "protocol": rule.protocol,
        "prefixes": [str(n) for n in (*rule.v4, *rule.v6)],
        "ports": [list(p) for p in rule.ports],
        "expires_ms": rule.expires_ms,
        "at_ms": at_ms,
    }


class LogBackend:
    name = "log"

    def __init__(self, output: str = "-") -> None:
        self._path = output
        self._out: TextIO | None = None
        self._rules: dict[str, Rule] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self._out = sys.stdout if self._path == "-" else open(self._path, "a")  # noqa: SIM115

    def stop(self) -> None:
        if self._out is not None and self._out is not sys.stdout:
            self._out.close()
        self._out = None

    def installed(self, desired: Mapping[str, Rule], now_ms: int) -> State:
        with self._lock:
            return State(
                rules={
                    h: Installed(h, r.rule_id, r.version, r.digest, elements=r.elements)
                    for h, r in self._rules.items()
                }
            )

    def apply(self, batch: Batch, now_ms: int) -> None:
        lines = []
        with self._lock:
            for inst in batch.remove:
                old = self._rules.pop(inst.handle, None)
                lines.append(
                    {
                        "action": "remove",
                        "rule_id": old.rule_id if old else inst.rule_id,
                        "version": inst.version,
                        "at_ms": now_ms,
                    }
                )
            for rule in batch.add:
                self._rules[rule.handle] = rule
                lines.append(describe(rule, now_ms))
        out = self._out or sys.stdout
        out.write("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
        out.flush()
