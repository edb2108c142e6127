"""Bad messages on the topics the evaluator and the ledger consume: counted, logged, skipped.

The sink's topics (tests/storage/test_sink.py), the worker's flows topic
(tests/streams/test_worker_kafka.py and test_worker_bad_input.py) and the
enforcement points' rules topic (tests/enforcement/points/test_log_point.py)
have their own tests. Here, on the real broker:

* ``voipflow policy run`` reads voip-usage.v1 windows and voip-flows.v1
  batches: garbage, another schema version, a truncated window and a window
  without its fields come before the good windows, and garbage and a
  truncated Arrow batch on the flows topic. Each is counted in
  ``voipflow_enforcement_bad_messages_total`` under its topic, logged, and the
  good windows still make their rule.
* ``voipflow ledger`` reads rules.v1 and rules-feedback.v1: garbage, another
  schema version and truncated messages on both, then a good rule and its
  feedback, which the ledger records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from tests.enforcement.helpers import evaluator, policy, usage
from tests.fixtures.paths import REPO
from voipflow.children import scrape
from voipflow.endpoints import endpoint_url
from voipflow.enforcement.evaluator import Publish
from voipflow.enforcement.kafka_io import COMPACTED
from voipflow.enforcement.policy import parse_policies
from voipflow.enforcement.targets import load_city_prefixes
from voipflow.schemas import voipflows
from voipflow.schemas.rule_events import decode_rule_event
from voipflow.schemas.rules import encode_feedback, encode_rule, feedback_key, rule_key
from voipflow.schemas.usage import encode_usage, usage_key

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

CITIES_CSV = REPO / "data" / "cities" / "demo-cities.csv"
POLICY = """\
policies:
  - name: hot-calls
    match: {apps: [teams]}
    condition: {metric: call_seconds, threshold: 100, for: 2}
    action: block
    target: subscriber_prefixes
    ttl: 1d
    mode: shadow
  - name: peers
    match: {apps: [zoom]}
    condition: {metric: subscribers, threshold: 5, for: 2}
    action: alert
    target: observed_peers
    ttl: 1d
"""
BAD_METRIC = "voipflow_enforcement_bad_messages_total"


def _send(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in items:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def _values(bootstrap: str, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        return [m.value for m in consumer if m.value is not None]
    finally:
        consumer.close()


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "voipflow", *command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _bad_counts(proc: subprocess.Popen[str], data_dir: Path, component: str) -> dict[str, float]:
    """The process's bad-message counters by topic ({} while it does not answer)."""
    url = endpoint_url(data_dir, component, proc.pid)
    if not url:
        return {}
    try:
        m = scrape(url)
    except OSError:
        return {}
    prefix = f"{BAD_METRIC}{{topic="
    return {k[len(prefix) : -1]: v for k, v in m.items() if k.startswith(prefix)}


def _wait(
    check: Any, proc: subprocess.Popen[str], what: str, timeout_s: float = 120, ok: Any = bool
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if ok(got):
            return got
        if proc.poll() is not None:
            pytest.fail(f"{what}: the process exited\n{proc.communicate()[0][-3000:]}")
        if time.monotonic() > deadline:
            out = _stop(proc)
            pytest.fail(f"{what} within {timeout_s:.0f} s; last {got!r}\n{out[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=60)
    return out


def _base_env(tmp_path: Path, bootstrap: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        VOIPFLOW_DATA_DIR=str(tmp_path / "var"),
        VOIPFLOW_KAFKA_BOOTSTRAP=bootstrap,
        VOIPFLOW_METRICS_LISTEN="127.0.0.1:0",
    )
    return env


def test_evaluator_counts_logs_and_skips_bad_windows_and_batches(
    kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path
) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICY)
    topics = {
        "usage": kafka_topic_factory(partitions=1, prefix="bad-usage"),
        "flows": kafka_topic_factory(partitions=1, prefix="bad-flows"),
        "rules": kafka_topic_factory(partitions=1, configs=COMPACTED, prefix="bad-rules"),
        "events": kafka_topic_factory(partitions=1, prefix="bad-events"),
        "state": kafka_topic_factory(partitions=1, configs=COMPACTED, prefix="bad-state"),
    }
    env = _base_env(tmp_path, kafka_bootstrap)
    env.update(
        VOIPFLOW_KAFKA_USAGE_TOPIC=topics["usage"],
        VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC=topics["flows"],
        VOIPFLOW_KAFKA_RULES_TOPIC=topics["rules"],
        VOIPFLOW_KAFKA_RULE_EVENTS_TOPIC=topics["events"],
        VOIPFLOW_EVALUATOR_STATE_TOPIC=topics["state"],
        VOIPFLOW_EVALUATOR_GROUP_ID=f"bad-{topics['usage']}",
        # the evaluator's internal scopes topic gets as many partitions as its state topic
        VOIPFLOW_KAFKA_PARTITIONS="1",
        VOIPFLOW_EVALUATOR_POLICIES=str(policies),
        VOIPFLOW_EVALUATOR_PREFIX_TABLE=str(CITIES_CSV),
    )
    minute = (int(time.time()) - 20 * 60) // 60 * 60_000
    good = [
        usage("Berlin", "teams", 0, call_seconds=500.0) | {"window_start_ms": minute + m * 60_000}
        for m in range(3)
    ]
    first = encode_usage(good[0])
    other_version = json.dumps({**json.loads(first), "schema": "voip-usage.v2"}).encode()
    key = usage_key("Berlin", "teams", minute).encode()
    _send(
        kafka_bootstrap,
        topics["usage"],
        [
            (key, b"\x00\xff garbage"),
            (key, other_version),
            (key, first[: len(first) // 2]),
            (key, b'{"schema": "voip-usage.v1"}'),
            *[(key, encode_usage(w)) for w in good],
        ],
    )
    batch = voipflows.encode(_voip_flows_batch(minute))
    _send(kafka_bootstrap, topics["flows"], [(b"x", b"junk"), (b"x", batch[: len(batch) // 3])])

    proc = _start(["policy", "run"], env)
    try:
        counts = _wait(
            lambda: (
                (c := _bad_counts(proc, tmp_path / "var", "evaluator"))
                and c.get("usage") == 4
                and c.get("voip-flows") == 2
                and c
            ),
            proc,
            "four bad windows and two bad batches counted",
        )
        rules = _wait(lambda: _values(kafka_bootstrap, topics["rules"]), proc, "a rule")
    finally:
        out = _stop(proc)
    assert counts == {"usage": 4, "voip-flows": 2}, counts
    assert out.count("bad usage window skipped") == 4, out[-3000:]
    assert out.count("bad voip-flows batch skipped") == 2, out[-3000:]
    # The good windows after the bad ones made the rule the pure evaluator makes.
    want = _reference(good)
    assert want, "the reference evaluator fires on the good windows"
    got = [json.loads(v) for v in rules]
    assert [(r["policy"], r["match"]["cities"]) for r in got] == [
        (r["policy"], r["match"]["cities"]) for r in want
    ]


def _reference(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules the pure evaluator publishes on the good windows alone."""
    ev = evaluator(
        list(parse_policies(POLICY).policies), city_prefixes=load_city_prefixes(CITIES_CSV)
    )
    now = int(time.time() * 1000)
    return [o.rule for w in windows for o in ev.on_usage(w, now) if isinstance(o, Publish)]


def _voip_flows_batch(t_ms: int) -> Any:
    n = 4
    return voipflows.make_voip_batch(
        {
            "flow_end_ms": np.full(n, t_ms, dtype=np.int64),
            "city": np.array(["Berlin"] * n, dtype=object),
            "app": np.array(["teams"] * n, dtype=object),
        }
    )


def test_ledger_counts_logs_and_skips_bad_rules_and_feedback(
    kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path
) -> None:
    topics = {
        "rules": kafka_topic_factory(partitions=1, configs=COMPACTED, prefix="badl-rules"),
        "feedback": kafka_topic_factory(partitions=1, prefix="badl-fb"),
        "events": kafka_topic_factory(partitions=1, prefix="badl-events"),
        "state": kafka_topic_factory(partitions=1, configs=COMPACTED, prefix="badl-state"),
    }
    env = _base_env(tmp_path, kafka_bootstrap)
    env.update(
        VOIPFLOW_KAFKA_RULES_TOPIC=topics["rules"],
        VOIPFLOW_KAFKA_FEEDBACK_TOPIC=topics["feedback"],
        VOIPFLOW_KAFKA_RULE_EVENTS_TOPIC=topics["events"],
        VOIPFLOW_LEDGER_STATE_TOPIC=topics["state"],
        VOIPFLOW_LEDGER_GROUP_ID=f"badl-{topics['rules']}",
        VOIPFLOW_LEDGER_TICK_S="0.2",
    )
    now = int(time.time() * 1000)
    ev = evaluator([policy("answered", windows=1, ttl="1h")])
    minute = now // 60_000 * 60_000
    window = usage("Berlin", "teams", 0, call_seconds=500) | {"window_start_ms": minute - 60_000}
    rule = next(o.rule for o in ev.on_usage(window, now) if isinstance(o, Publish))
    good_rule = encode_rule(rule)
    rkey = rule_key(rule["rule_id"])
    feedback = {
        "schema": "rules-feedback.v1",
        "rule_id": rule["rule_id"],
        "rule_version": rule["version"],
        "enforcement_point": "ep-test",
        "backend": "log",
        "status": "applied",
        "mode": rule["mode"],
        "observed_ms": now,
        "hit_packets": 0,
        "hit_bytes": 0,
    }
    good_fb = encode_feedback(feedback)
    fkey = feedback_key(rule["rule_id"], "ep-test")
    _send(
        kafka_bootstrap,
        topics["rules"],
        [
            (b"r-junk", b"{not json"),
            (b"r-v9", json.dumps({**rule, "schema": "rules.v9", "rule_id": "r-v9"}).encode()),
            (b"r-cut", good_rule[:40]),
            (rkey, good_rule),
        ],
    )
    _send(
        kafka_bootstrap,
        topics["feedback"],
        [
            (fkey, b"\x00\x01\x02"),
            (fkey, json.dumps({**feedback, "schema": "rules-feedback.v2"}).encode()),
            (fkey, good_fb[: len(good_fb) - 5]),
            (fkey, good_fb),
        ],
    )

    def recorded() -> list[dict[str, Any]]:
        evs = [decode_rule_event(v) for v in _values(kafka_bootstrap, topics["events"])]
        return [e for e in evs if e["event"] == "feedback" and e["rule_id"] == rule["rule_id"]]

    proc = _start(["ledger"], env)
    try:
        counts = _wait(
            lambda: (
                (c := _bad_counts(proc, tmp_path / "var", "ledger"))
                and c.get("rules") == 3
                and c.get("feedback") == 3
                and c
            ),
            proc,
            "three bad rules and three bad feedback messages counted",
        )
        events = _wait(recorded, proc, "the good feedback recorded")
    finally:
        out = _stop(proc)
    assert counts == {"rules": 3, "feedback": 3}, counts
    assert out.count("bad rule skipped") == 3, out[-3000:]
    assert out.count("bad feedback skipped") == 3, out[-3000:]
    assert len(events) == 1 and events[0]["state"] == "applied", events
