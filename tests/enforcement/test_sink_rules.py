"""rules.v1 and rule-events.v1 through the real sink into chdb: every rule version a
row of ``rules``, every event once in ``rule_events``, tombstones not bad messages."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.enforcement.helpers import evaluator, policy, rule_feedback, usage
from tests.storage.sinkdata import committed, wait_until
from voipflow.enforcement.evaluator import Event, Publish
from voipflow.enforcement.history import list_rules, show_rule
from voipflow.enforcement.kafka_io import COMPACTED
from voipflow.enforcement.ledger import Ledger, Record
from voipflow.schemas.rule_events import encode_rule_event
from voipflow.schemas.rules import encode_rule
from voipflow.schemas.topics import KafkaConfig
from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions
from voipflow.storage.config import ClickHouseConfig, SinkConfig
from voipflow.storage.sink import Sink

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _send(bootstrap: str, topic: str, items: list[tuple[bytes, bytes | None]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in items:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def test_rules_and_events_land_once(
    kafka_bootstrap: str, kafka_topic_factory: Any, chdb: Any, tmp_path: Path
) -> None:
    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    kafka = KafkaConfig(
        rules_topic=kafka_topic_factory(2, configs=COMPACTED, prefix="sink-rules"),
        rule_events_topic=kafka_topic_factory(2, prefix="sink-events"),
    )
    now = int(time.time() * 1000) // 60_000 * 60_000
    ev = evaluator([policy("sunk", windows=1, ttl="10m", apps="[teams, zoom]")])
    rules: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    led = Ledger(feedback_timeout_ms=60_000, max_republish=1)
    windows = [usage("Berlin", "teams", m, call_seconds=500) for m in range(7)]
    windows.append(usage("Hamburg", "zoom", 0, call_seconds=500))
    for w in windows:
        w = {**w, "window_start_ms": w["window_start_ms"] - windows[0]["window_start_ms"] + now}
        for out in ev.on_usage(w, now):
            if isinstance(out, Publish):
                rules.append(out.rule)
                events += [o.event for o in led.on_rule(out.rule, now) if isinstance(o, Record)]
            elif isinstance(out, Event):
                events.append(out.event)
    assert [(r["match"]["cities"][0], r["version"]) for r in rules] == [
        ("Berlin", 1),
        ("Berlin", 2),  # renewed
        ("Hamburg", 1),
    ]
    fb = rule_feedback(rules[1], "hits", "ep-1", now + 1000, hit_packets=7)
    events += [o.event for o in led.on_feedback(fb, now) if isinstance(o, Record)]
    key = rules[0]["rule_id"].encode()
    _send(
        kafka_bootstrap,
        kafka.rules_topic,
        [
            *[(r["rule_id"].encode(), encode_rule(r)) for r in rules],
            (b"junk", b"{not json"),
            (rules[2]["rule_id"].encode(), None),  # Hamburg's rule withdrawn
            (key, encode_rule(rules[1])),  # the ledger republished version 2
        ],
    )
    encoded = [(e["rule_id"].encode(), encode_rule_event(e)) for e in events]
    _send(kafka_bootstrap, kafka.rule_events_topic, encoded)
    _send(kafka_bootstrap, kafka.rule_events_topic, encoded[:3])  # published again

    config = SinkConfig(
        group_id="sink-rules-" + os.urandom(4).hex(),
        topics=f"{kafka.rules_topic},{kafka.rule_events_topic}",
        batch_delay_s=0.3,
    )
    sink = Sink(config, kafka, ClickHouseConfig(), tmp_path, bootstrap=kafka_bootstrap, ch=chdb)
    sink.start()
    try:

        def done() -> bool:
            for topic, total in (
                (kafka.rules_topic, 6),
                (kafka.rule_events_topic, len(events) + 3),
            ):
                offsets = committed(kafka_bootstrap, config.group_id, topic)
                if sum(o.offset for o in offsets.values() if o is not None) < total:
                    return False
            return True

        wait_until(done, 90, "every message committed")
    finally:
        sink.stop()
    rows = chdb.query(
        "SELECT rule_id, version, city, app, policy, mode, target_kind FROM rules "
        "ORDER BY rule_id, version"
    ).rows
    # ReplacingMergeTree(version): versions of one rule collapse to the latest when
    # parts merge (the history of versions stays in rule_events, one published each)
    assert {(r[0], r[1]) for r in rows} <= {(r["rule_id"], r["version"]) for r in rules}
    final = chdb.query("SELECT rule_id, version FROM rules FINAL ORDER BY rule_id").rows
    assert sorted(final) == sorted([(rules[1]["rule_id"], 2), (rules[2]["rule_id"], 1)])
    assert {r[4:] for r in rows} == {("sunk", "enforce", "subscriber_prefixes")}
    published = chdb.query(
        "SELECT rule_version FROM rule_events WHERE event = 'published' ORDER BY ts, rule_version"
    ).rows
    assert sorted(r[0] for r in published) == [1, 1, 2]
    got = chdb.query("SELECT event_id FROM rule_events").rows
    assert sorted(r[0] for r in got) == sorted(e["event_id"] for e in events)  # each once
    # what `voipflow rules list/show` read from these rows
    listed = {r["rule_id"]: r for r in list_rules(chdb, all_rules=True)}
    assert listed[rules[1]["rule_id"]]["version"] == 2
    assert listed[rules[1]["rule_id"]]["state"] == "applied"
    info = show_rule(chdb, rules[1]["rule_id"])
    assert info is not None and info["rule"]["version"] == 2
    assert info["enforcement_points"][0]["hits"] == 7
