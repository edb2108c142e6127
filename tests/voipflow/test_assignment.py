"""No idle consumers: consumers started before and while their topics are created get
partitions and drain the backlog, round after round, on the session's real broker."""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest

from streams.clickhouse.migrations import Migrator, RenderOptions
from streams.config import ClickHouseConfig, KafkaConfig, SinkConfig
from streams.sink import Sink
from tests.streams.sinkdata import flow_batch, wait_until
from voipflow.assignment import AssignmentWatch, no_auto_create
from voipflow.topics import ensure_topics

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROUNDS = 20
TOPICS = 4
PARTITIONS = 2
PER_TOPIC = 10


def _produce(bootstrap: str, topics: list[str], value: bytes) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for topic in topics:
            for k in range(PER_TOPIC):
                producer.send(topic, value, key=str(k).encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def test_consumers_started_before_and_during_topic_creation_get_partitions(
    kafka_bootstrap: str,
) -> None:
    """Each round: fresh topics, a consumer subscribed 0-2 s before they are created
    (or while they are), then a backlog; the consumer must read all of it."""
    from kafka import KafkaConsumer

    rng = random.Random(12)
    failures: list[str] = []
    rejoins = 0
    for n in range(ROUNDS):
        tag = uuid.uuid4().hex[:8]
        topics = [f"idle-{n}-{tag}-{i}" for i in range(TOPICS)]
        consumer = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=f"idle-{tag}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            allow_auto_create_topics=False,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_500,
        )
        no_auto_create(consumer)
        consumer.subscribe(topics)
        watch = AssignmentWatch(consumer, topics, component="test")
        try:
            delay = rng.uniform(0.0, 2.0)
            started = time.monotonic()
            while time.monotonic() - started < delay:
                consumer.poll(timeout_ms=100)
                watch.check()
            ensure_topics(kafka_bootstrap, {t: PARTITIONS for t in topics})
            _produce(kafka_bootstrap, topics, b"x")
            got = 0
            deadline = time.monotonic() + 60
            while got < TOPICS * PER_TOPIC and time.monotonic() < deadline:
                got += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
                watch.check()
            held = len(consumer.assignment())
            if got != TOPICS * PER_TOPIC or held != TOPICS * PARTITIONS:
                failures.append(f"round {n}: read {got}, holds {held} partitions")
            rejoins += watch.rejoins
        finally:
            consumer.close(autocommit=False)
    print(f"{ROUNDS} rounds, {rejoins} forced rejoins")
    assert not failures, failures


def test_a_sink_started_before_its_topics_exist_inserts_the_backlog(
    kafka_bootstrap: str, chdb, tmp_path
) -> None:
    """The demo's failure: the sink subscribes first, the topics come a moment later."""
    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    rng = random.Random(7)
    for n in range(5):
        tag = uuid.uuid4().hex[:8]
        topic = f"idle-sink-{n}-{tag}"
        kafka = KafkaConfig(voip_flows_topic=topic)
        config = SinkConfig(group_id="sink-" + os.urandom(4).hex(), topics=topic, batch_delay_s=0.3)
        sink = Sink(config, kafka, ClickHouseConfig(), tmp_path, bootstrap=kafka_bootstrap, ch=chdb)
        before = int(chdb.query("SELECT count() FROM flows_voip").scalar())
        sink.start()
        try:
            time.sleep(rng.uniform(0.0, 2.0))
            ensure_topics(kafka_bootstrap, {topic: PARTITIONS})
            _produce(kafka_bootstrap, [topic], flow_batch(5, base=n * 1000))

            def landed(before: int = before, sink: Sink = sink) -> bool:
                now = int(chdb.query("SELECT count() FROM flows_voip").scalar())
                return now - before >= 5 * PER_TOPIC or sink.done.is_set()

            wait_until(landed, 90, f"round {n}: the backlog in flows_voip")
            assert sink.failure is None, sink.failure
            assert len(sink.assigned) == PARTITIONS, sink.assigned
            rows = int(chdb.query("SELECT count() FROM flows_voip").scalar()) - before
            assert rows == 5 * PER_TOPIC, f"round {n}: {rows} rows"
        finally:
            sink.stop()
