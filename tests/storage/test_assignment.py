"""No idle consumers: consumers started before and while their topics are created get
partitions and drain the backlog, round after round, on the session's real broker."""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest

from tests.storage.sinkdata import flow_batch, wait_until
from voipflow.schemas.topics import KafkaConfig
from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions
from voipflow.storage.config import ClickHouseConfig, SinkConfig
from voipflow.storage.sink import Sink
from voipflow.storage.sink.assignment import AssignmentWatch, no_auto_create
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


@pytest.mark.parametrize("metadata_creates_topics", [False, True], ids=["explicit", "auto"])
def test_consumers_started_before_and_during_topic_creation_get_partitions(
    kafka_bootstrap: str, metadata_creates_topics: bool
) -> None:
    """Each round: fresh topics, a consumer subscribed 0-2 s before they are created,
    then a backlog; the consumer must hold every partition and read all of it.

    ``auto``: the consumer's own metadata requests create the topics (the
    broker allows it, as Kafka does by default) while it joins its group, the
    race that left a consumer in a rebalance that nothing drove forward.
    ``explicit``: only ``ensure_topics`` creates them, with their partitions.
    """
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
            allow_auto_create_topics=metadata_creates_topics,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_500,
        )
        if not metadata_creates_topics:
            no_auto_create(consumer)
        consumer.subscribe(topics)
        watch = AssignmentWatch(consumer, topics, component="test")
        try:
            delay = rng.uniform(0.0, 2.0)
            started = time.monotonic()
            while time.monotonic() - started < delay:
                consumer.poll(timeout_ms=100)
                watch.check()
            have = ensure_topics(kafka_bootstrap, {t: PARTITIONS for t in topics})
            if not metadata_creates_topics:
                assert have == dict.fromkeys(topics, PARTITIONS), have
            _produce(kafka_bootstrap, topics, b"x")
            got = 0
            deadline = time.monotonic() + 60
            while got < TOPICS * PER_TOPIC and time.monotonic() < deadline:
                got += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
                watch.check()
            held = len(consumer.assignment())
            if got != TOPICS * PER_TOPIC or held != sum(have.values()):
                failures.append(f"round {n}: read {got}, holds {held} of {sum(have.values())}")
            rejoins += watch.rejoins
        finally:
            consumer.close(autocommit=False)
    print(f"{ROUNDS} rounds, {rejoins} forced rejoins")
    assert not failures, failures


def test_a_consumer_rightly_idle_rejoins_rarely_and_takes_over_when_the_holder_leaves(
    kafka_bootstrap: str, kafka_topic_factory
) -> None:
    """More consumers than partitions: the idle one rejoins with growing pauses (it
    does not rebalance the group again and again), keeps its rebalance listener, and
    takes the partition with its backlog once the holder leaves."""
    from kafka import ConsumerRebalanceListener, KafkaConsumer

    topic = kafka_topic_factory(1)
    group = f"idle-{uuid.uuid4().hex[:8]}"
    assigned: list[set[tuple[str, int]]] = []

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: object) -> None:
            pass

        def on_partitions_assigned(self, partitions: object) -> None:
            assigned.append({(tp.topic, tp.partition) for tp in partitions})  # type: ignore[attr-defined]

    def consumer(client_id: str) -> KafkaConsumer:
        c = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            client_id=client_id,  # member ids sort by it: range assignment favours "a-"
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        no_auto_create(c)
        return c

    holder = consumer("a-holder")
    holder.subscribe([topic])
    wait_until(lambda: holder.poll(timeout_ms=200) == {} and holder.assignment(), 60, "holder")
    idle = consumer("b-idle")
    listener = Listener()
    idle.subscribe([topic], listener=listener)
    watch = AssignmentWatch(idle, [topic], listener, component="test", grace_s=1.0)
    try:
        watched_until = time.monotonic() + 12
        while time.monotonic() < watched_until:
            idle.poll(timeout_ms=100)
            holder.poll(timeout_ms=100)
            watch.check()
        # Rejoins 1 s, 3 s and 7 s after it went idle, then 15 s: at most 3 here.
        assert 1 <= watch.rejoins <= 3, watch.rejoins
        assert holder.assignment() and not idle.assignment()
        _produce(kafka_bootstrap, [topic], b"y")
        holder.close(autocommit=False)
        got = 0
        deadline = time.monotonic() + 60
        while got < PER_TOPIC and time.monotonic() < deadline:
            got += sum(len(r) for r in idle.poll(timeout_ms=200).values())
            watch.check()
        assert got == PER_TOPIC, got
        assert assigned and assigned[-1] == {(topic, 0)}, assigned
    finally:
        idle.close(autocommit=False)


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
