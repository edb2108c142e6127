"""An enforcement point with the log backend against the session's real Kafka broker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.enforcement.points.rulesdata import FeedbackReader, RulesTopic, make_rule
from voipflow.enforcement.config import GuardrailConfig
from voipflow.enforcement.points.config import EnforceConfig
from voipflow.enforcement.points.logbackend import LogBackend
from voipflow.enforcement.points.metrics import EnforceMetrics
from voipflow.enforcement.points.service import EnforcementPoint
from voipflow.schemas.rules import encode_rule

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


class Harness:
    def __init__(self, bootstrap: str, rules: str, feedback: str, out: Path) -> None:
        self.bootstrap, self.rules, self.feedback, self.out = bootstrap, rules, feedback, out
        self.points: list[EnforcementPoint] = []

    def point(self, never_block: str = "", **config: Any) -> EnforcementPoint:
        cfg = EnforceConfig(point_id="test-log", reconcile_s=0.5, hits_s=60, **config)
        point = EnforcementPoint(
            cfg,
            LogBackend(str(self.out)),
            bootstrap=self.bootstrap,
            rules_topic=self.rules,
            feedback_topic=self.feedback,
            metrics=EnforceMetrics(),
            never_block=GuardrailConfig(never_block=never_block).configured_networks(),
        )
        point.start()
        self.points.append(point)
        assert point.ready.wait(30), "the point did not finish rebuilding"
        return point

    def lines(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]


@pytest.fixture
def harness(kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path) -> Iterator[Harness]:
    rules = kafka_topic_factory(configs={"cleanup.policy": "compact"}, prefix="rules")
    feedback = kafka_topic_factory(prefix="feedback")
    h = Harness(kafka_bootstrap, rules, feedback, tmp_path / "actions.jsonl")
    yield h
    for p in h.points:
        p.stop()


def _wait(pred: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_apply_replace_withdraw_and_expire_are_printed_and_acknowledged(
    harness: Harness,
) -> None:
    topic = RulesTopic(harness.bootstrap, harness.rules)
    fb = FeedbackReader(harness.bootstrap, harness.feedback)
    try:
        harness.point()
        topic.publish(make_rule("r-a", action="throttle", rate_kbps=64))
        applied = fb.status("r-a", "applied")
        assert (applied["rule_version"], applied["enforcement_point"], applied["backend"]) == (
            1,
            "test-log",
            "log",
        )
        install = next(line for line in harness.lines() if line["rule_id"] == "r-a")
        assert (install["verdict"], install["rate_bytes_per_s"]) == ("limit", 8000)
        assert install["prefixes"] == ["198.51.100.0/24"]

        topic.publish(make_rule("r-a", version=2, mode="shadow"))
        fb.wait_for(lambda m: m["rule_id"] == "r-a" and m["rule_version"] == 2)
        assert harness.lines()[-1]["verdict"] == "count"

        topic.withdraw("r-a")
        removed = fb.status("r-a", "removed")
        assert removed["detail"] == "withdrawn"
        assert harness.lines()[-1] == {
            "action": "remove",
            "rule_id": "r-a",
            "version": 2,
            "at_ms": harness.lines()[-1]["at_ms"],
        }

        now = int(time.time() * 1000)
        topic.publish(make_rule("r-short", created_ms=now - 1000, expires_ms=now + 1500))
        fb.status("r-short", "applied")
        expired = fb.status("r-short", "expired")
        assert expired["observed_ms"] >= now + 1500
    finally:
        topic.close()
        fb.close()


def test_bad_rules_are_refused_counted_reported_and_the_point_keeps_going(
    harness: Harness,
) -> None:
    topic = RulesTopic(harness.bootstrap, harness.rules)
    fb = FeedbackReader(harness.bootstrap, harness.feedback)
    try:
        point = harness.point(never_block="198.51.100.0/25")
        future = make_rule("r-v2", version=3)
        future["schema"] = "rules.v2"
        topic.raw(b"r-v2", json.dumps(future).encode())
        bad_prefix = make_rule("r-bad", target={"prefixes": ["300.1.2.0/24"]})
        topic.raw(b"r-bad", json.dumps(bad_prefix).encode())
        topic.publish(make_rule("r-guard"))  # 198.51.100.0/24 covers the never-block /25
        topic.raw(b"r-junk", b"{not json")
        topic.publish(make_rule("r-good", target={"prefixes": ["203.0.113.0/24"]}))

        v2 = fb.status("r-v2", "failed")
        assert v2["rule_version"] == 3 and "schema_version" in v2["error"]
        assert "300.1.2.0/24" in fb.status("r-bad", "failed")["error"]
        assert "never-block" in fb.status("r-guard", "failed")["error"]
        assert fb.status("r-junk", "failed")["rule_version"] == 0
        fb.status("r-good", "applied")

        reg = point.metrics.registry
        for reason, n in {
            "schema_version": 1,
            "invalid": 1,
            "never_block": 1,
            "not_json": 1,
        }.items():
            got = reg.get_sample_value("voipflow_enforce_rules_refused_total", {"reason": reason})
            assert got == n, reason
        assert {line["rule_id"] for line in harness.lines()} == {"r-good"}
        assert not point.done.is_set()
    finally:
        topic.close()
        fb.close()


def test_a_new_point_rebuilds_exactly_the_rules_in_force(harness: Harness) -> None:
    topic = RulesTopic(harness.bootstrap, harness.rules)
    fb = FeedbackReader(harness.bootstrap, harness.feedback)
    try:
        now = int(time.time() * 1000)
        topic.publish(make_rule("r-1"))
        topic.publish(make_rule("r-2"))
        topic.publish(make_rule("r-2", version=2, target={"prefixes": ["203.0.113.0/24"]}))
        topic.publish(make_rule("r-3"))
        topic.withdraw("r-3")
        topic.publish(make_rule("r-old", created_ms=now - 10_000, expires_ms=now - 5_000))
        raw = make_rule("r-4")
        topic.raw(b"r-4", encode_rule(raw))
        topic.raw(b"r-5", b"{junk")  # refused, then superseded: history, not news
        topic.publish(make_rule("r-5", target={"prefixes": ["192.0.2.0/24"]}))
        topic.raw(b"r-6", b"{junk")  # refused and still the latest: reported
        harness.point()
        fb.status("r-4", "applied")
        fb.status("r-6", "failed")
        assert not [m for m in fb.seen if m["rule_id"] == "r-5" and m["status"] == "failed"]
        installs = [line for line in harness.lines() if line["action"] == "install"]
        assert sorted((i["rule_id"], i["version"]) for i in installs) == [
            ("r-1", 1),
            ("r-2", 2),
            ("r-4", 1),
            ("r-5", 1),
        ]
        assert all(line["action"] == "install" for line in harness.lines())
    finally:
        topic.close()
        fb.close()
