"""Rules and a feedback reader for the enforcement point tests."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from voipflow.schemas.rules import decode_feedback, encode_rule, rule_key


def make_rule(rule_id: str = "r-test-1", **over: Any) -> dict[str, Any]:
    """A valid rules.v1 object; ``over`` replaces top-level fields, ``target`` merges."""
    now = int(time.time() * 1000)
    rule: dict[str, Any] = {
        "schema": "rules.v1",
        "rule_id": rule_id,
        "version": 1,
        "policy": "test-policy",
        "mode": "enforce",
        "action": "block",
        "match": {"apps": ["whatsapp"], "cities": ["Lyon"]},
        "target": {
            "kind": "provider_ranges",
            "prefixes": ["198.51.100.0/24"],
            "protocol": "udp",
            "ports": [],
        },
        "created_ms": now,
        "expires_ms": now + 3_600_000,
        "evidence": {"condition": "call_seconds > 600 for 3 windows", "windows": []},
        "reason": "test-policy fired in Lyon on whatsapp",
        "produced_ms": now,
    }
    target = over.pop("target", None)
    rule.update(over)
    if target:
        rule["target"] = {**copy.deepcopy(rule["target"]), **target}
    return rule


class RulesTopic:
    """Publishes rules (and tombstones, and raw bytes) to a test topic."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")

    def publish(self, rule: dict[str, Any]) -> None:
        self.raw(rule["rule_id"].encode(), encode_rule(rule))

    def withdraw(self, rule_id: str) -> None:
        self.raw(rule_key(rule_id), None)

    def raw(self, key: bytes | None, value: bytes | None) -> None:
        self.producer.send(self.topic, key=key, value=value)
        self.producer.flush(timeout=10)

    def close(self) -> None:
        self.producer.close()


class FeedbackReader:
    """Reads rules-feedback.v1 from the start and waits for messages."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        self.seen: list[dict[str, Any]] = []

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """The first message (seen before or arriving) for which ``pred`` holds."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        while True:
            for msg in self.seen[checked:]:
                if pred(msg):
                    return msg
            checked = len(self.seen)
            if time.monotonic() > deadline:
                statuses = [(m["rule_id"], m["status"]) for m in self.seen]
                raise AssertionError(f"no such feedback within {timeout_s} s; seen {statuses}")
            for batch in self.consumer.poll(timeout_ms=200).values():
                self.seen += [decode_feedback(r.value) for r in batch]

    def status(self, rule_id: str, status: str, timeout_s: float = 30.0) -> dict[str, Any]:
        return self.wait_for(lambda m: m["rule_id"] == rule_id and m["status"] == status, timeout_s)

    def close(self) -> None:
        self.consumer.close()
