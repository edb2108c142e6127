"""``voipflow enforce --backend nftables`` as a process: Kafka, a router namespace, SIGKILL.

The point runs in the root namespace (it reaches the session's Kafka broker
on loopback) and installs its rules in the router namespace through
``VOIPFLOW_ENFORCE_NFT_NETNS``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.enforcement.points.netns import Lab, Media, require_netns
from tests.enforcement.points.pointproc import PointProcess
from tests.enforcement.points.rulesdata import FeedbackReader, RulesTopic, make_rule
from voipflow.endpoints import endpoint_url
from voipflow.enforcement.points.desired import handle_of

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_netns()
    lab = Lab().up()
    try:
        yield lab
    finally:
        lab.close()


def installed(lab: Lab) -> dict[str, Any]:
    """handle -> (comment of its counter rule, number of jumps to it) in the router."""
    doc = json.loads(lab.nft("-j", "list", "table", "inet", "voipflow").stdout)
    out: dict[str, Any] = {}
    for obj in doc["nftables"]:
        rule = obj.get("rule")
        if not rule:
            continue
        if rule["chain"].endswith("_a"):
            out.setdefault(rule["chain"][:-2], {"jumps": 0})["comment"] = rule.get("comment")
        for e in rule["expr"]:
            if "jump" in e and re.fullmatch(r"r[0-9a-f]{15}", e["jump"]["target"]):
                out.setdefault(e["jump"]["target"], {"jumps": 0})["jumps"] += 1
    return out


def test_rules_apply_survive_sigkill_and_restart_without_loss_doubles_or_stale(
    lab: Lab, kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path
) -> None:
    rules = kafka_topic_factory(configs={"cleanup.policy": "compact"}, prefix="rules")
    feedback = kafka_topic_factory(prefix="feedback")
    topic = RulesTopic(kafka_bootstrap, rules)
    fb = FeedbackReader(kafka_bootstrap, feedback)
    point = PointProcess(
        "nftables",
        kafka_bootstrap,
        rules,
        feedback,
        tmp_path,
        VOIPFLOW_ENFORCE_NFT_NETNS=lab.router,
        VOIPFLOW_GUARDRAILS_NEVER_BLOCK="192.0.2.0/24",
        VOIPFLOW_METRICS_LISTEN="127.0.0.1:0",
    )
    media = Media(lab, tmp_path)
    try:
        assert media.started()
        point.start()
        block = make_rule("r-block")
        topic.publish(block)
        fb.status("r-block", "applied", timeout_s=60)
        time.sleep(0.3)
        assert not media.flowing(), "media flows through an applied block"
        hits = fb.wait_for(
            lambda m: m["rule_id"] == "r-block" and m["status"] == "hits" and m["hit_packets"] > 0
        )
        assert hits["hit_bytes"] >= 172 * hits["hit_packets"]

        for i in range(2, 6):
            topic.publish(make_rule(f"r-{i}", target={"prefixes": [f"203.0.{i}.0/24"]}))
        topic.publish(make_rule("r-guard", target={"prefixes": ["192.0.2.0/25"]}))
        fb.status("r-5", "applied")
        assert "never-block" in fb.status("r-guard", "failed")["error"]
        assert point.proc is not None
        url = endpoint_url(tmp_path / "var", "enforce", point.proc.pid)
        assert url is not None, "the point wrote no metrics endpoint file"
        metrics = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'voipflow_enforce_rules_refused_total{reason="never_block"} 1.0' in metrics
        topic.withdraw("r-3")
        fb.status("r-3", "removed")
        assert point.alive()

        point.kill9()
        # While the point is down: a new rule, a withdrawal, a new version.
        topic.publish(make_rule("r-6", target={"prefixes": ["203.0.6.0/24"]}))
        topic.withdraw("r-2")
        topic.publish(make_rule("r-4", version=2, target={"prefixes": ["203.0.44.0/24"]}))
        assert not media.flowing(), "the block was lifted while the point was dead"

        point.start()
        fb.status("r-6", "applied", timeout_s=60)
        fb.wait_for(lambda m: m["rule_id"] == "r-4" and m["rule_version"] == 2)
        fb.wait_for(lambda m: m["rule_id"] == "r-2" and m["detail"] == "withdrawn")

        want = {handle_of(r): v for r, v in (("r-block", 1), ("r-4", 2), ("r-5", 1), ("r-6", 1))}
        have = installed(lab)
        assert set(have) == set(want), "installed rules differ from the rules in force"
        for handle, version in want.items():
            assert have[handle]["jumps"] == 1, "a rule is doubled or unreachable"
            assert f";v={version};" in have[handle]["comment"]
        assert not media.flowing()
        confirmed = fb.wait_for(
            lambda m: m["rule_id"] == "r-block" and m.get("detail", "").startswith("found")
        )
        assert confirmed["status"] == "applied"
        assert point.alive()
    finally:
        point.stop()
        topic.close()
        fb.close()
