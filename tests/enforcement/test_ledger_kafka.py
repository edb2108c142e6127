"""The ledger process on the real broker: feedback, republication, escalation, expiry,
and a SIGKILL with restart that records nothing twice.

Rules come from the pure evaluator; the feedback an enforcement point would
send is produced by the test on rules-feedback.v1 (the enforcement points
are their own processes and have their own tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.enforcement.helpers import evaluator, policy, read_all, usage
from tests.fixtures.paths import REPO
from voipflow.enforcement.evaluator import Publish
from voipflow.enforcement.kafka_io import COMPACTED, read_table
from voipflow.schemas.rule_events import decode_rule_event
from voipflow.schemas.rules import encode_feedback, encode_rule, feedback_key, rule_key

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def _rules(now_ms: int) -> dict[str, dict[str, Any]]:
    """Three rules: one applied, one nobody answers, one that expires soon."""
    pols = [
        policy("answered", windows=1, ttl="1h"),
        policy("ignored", windows=1, ttl="1h", apps="[zoom]"),
        policy("short", windows=1, ttl="90s", apps="[sip]"),
    ]
    ev = evaluator(pols)
    minute = now_ms // 60_000 * 60_000  # the window ending then closed last
    out = {}
    for app in ("teams", "zoom", "sip"):
        w = usage("Berlin", app, 0, call_seconds=500) | {"window_start_ms": minute - 60_000}
        for o in ev.on_usage(w, now_ms):
            if isinstance(o, Publish):
                out[o.rule["policy"]] = o.rule
    return out


def _send(bootstrap: str, topic: str, items: list[tuple[bytes, bytes | None]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in items:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def _feedback(rule: dict[str, Any], status: str, at: int, packets: int = 0) -> tuple[bytes, bytes]:
    msg = {
        "schema": "rules-feedback.v1",
        "rule_id": rule["rule_id"],
        "rule_version": rule["version"],
        "enforcement_point": "ep-test",
        "backend": "log",
        "status": status,
        "mode": rule["mode"],
        "observed_ms": at,
        "hit_packets": packets,
        "hit_bytes": packets * 200,
    }
    return feedback_key(rule["rule_id"], "ep-test"), encode_feedback(msg)


def test_ledger_follows_rules_and_survives_sigkill(
    kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path
) -> None:
    topics = {
        "rules": kafka_topic_factory(partitions=2, configs=COMPACTED, prefix="led-rules"),
        "feedback": kafka_topic_factory(partitions=2, prefix="led-fb"),
        "events": kafka_topic_factory(partitions=2, prefix="led-events"),
        "state": kafka_topic_factory(partitions=1, configs=COMPACTED, prefix="led-state"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        VOIPFLOW_DATA_DIR=str(tmp_path / "var"),
        VOIPFLOW_KAFKA_BOOTSTRAP=kafka_bootstrap,
        VOIPFLOW_KAFKA_RULES_TOPIC=topics["rules"],
        VOIPFLOW_KAFKA_FEEDBACK_TOPIC=topics["feedback"],
        VOIPFLOW_KAFKA_RULE_EVENTS_TOPIC=topics["events"],
        VOIPFLOW_LEDGER_STATE_TOPIC=topics["state"],
        VOIPFLOW_LEDGER_GROUP_ID=f"led-{topics['rules']}",
        VOIPFLOW_LEDGER_FEEDBACK_TIMEOUT_S="2",
        VOIPFLOW_LEDGER_MAX_REPUBLISH="1",
        VOIPFLOW_LEDGER_TICK_S="0.2",
        VOIPFLOW_METRICS_LISTEN="",
    )
    now = int(time.time() * 1000)
    rules = _rules(now)
    assert set(rules) == {"answered", "ignored", "short"}
    _send(
        kafka_bootstrap,
        topics["rules"],
        [(rule_key(r["rule_id"]), encode_rule(r)) for r in rules.values()],
    )
    a = rules["answered"]
    _send(
        kafka_bootstrap,
        topics["feedback"],
        [_feedback(a, "applied", now), _feedback(a, "hits", now + 1000, 40)],
    )

    def start(**extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "voipflow", "ledger"],
            cwd=REPO,
            env={**env, **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def events() -> list[dict[str, Any]]:
        return [decode_rule_event(v) for _, v in read_all(kafka_bootstrap, topics["events"]) if v]

    proc = start()
    try:
        # wait until the ledger recorded the first feedback, then kill it
        deadline = time.monotonic() + 120
        while not any(e["event"] == "feedback" for e in events()):
            assert time.monotonic() < deadline, "the ledger recorded no feedback in 120 s"
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        _send(kafka_bootstrap, topics["feedback"], [_feedback(a, "hits", now + 2000, 100)])
        proc = start()

        # the short rule expires 90 s after its window: wait for its expiry, and
        # for the report sent while the ledger was down
        def done() -> bool:
            evs = events()
            return any(e["event"] == "expired" for e in evs) and any(
                e["ts_ms"] == now + 2000 for e in evs
            )

        deadline = time.monotonic() + 240
        while not done():
            assert time.monotonic() < deadline, "no expiry recorded in 240 s"
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-3000:]
        assert "rule escalated: ignored-" in out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    evs = events()
    ids = [e["event_id"] for e in evs]
    assert len(ids) == len(set(ids)), "an event was recorded twice"
    by = {p: [e for e in evs if e["rule_id"] == r["rule_id"]] for p, r in rules.items()}
    ans = by["answered"]
    assert [e["event"] for e in ans] == ["published", "feedback", "feedback", "feedback"]
    assert [e["hits"] for e in ans] == [0, 0, 40, 60]  # cumulative 40, 100 -> deltas
    assert ans[-1]["state"] == "applied"
    ign = [e["event"] for e in by["ignored"]]
    assert ign[:3] == ["published", "republished", "escalated"]
    short = [(e["event"], e["state"]) for e in by["short"]]
    assert short[0] == ("published", "published") and ("expired", "expired") in short
    # the expired rule is withdrawn: a reader of the compacted topic no longer has it
    table = read_table(kafka_bootstrap, topics["rules"])
    assert table[rules["short"]["rule_id"]] is None
    assert table[a["rule_id"]] is not None
