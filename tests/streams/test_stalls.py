"""Stalled flows partitions: records wait and the group's committed offset stands still."""

from __future__ import annotations

import time
import uuid

import pytest

from voipflow.streams.stalls import KafkaReader, StallTracker, StallWatch
from voipflow.topics import ensure_topics


def test_a_backlog_under_a_committed_offset_that_stands_still_is_a_stall() -> None:
    t = StallTracker("flows.v1", stall_after_s=5.0)
    # Partition 0 works (its committed offset moves), 1 waits, 2 is caught up,
    # 3 has no committed offset yet.
    assert t.observe({0: 100, 1: 50, 2: 30, 3: 10}, {0: 90, 1: 20, 2: 30, 3: None}, 0.0) == set()
    assert t.observe({0: 120, 1: 60, 2: 30, 3: 10}, {0: 110, 1: 20, 2: 30}, 4.9) == set()
    stalled = t.observe({0: 130, 1: 70, 2: 30, 3: 10}, {0: 125, 1: 20, 2: 30, 3: -1}, 5.0)
    assert stalled == {"flows.v1:1", "flows.v1:3"}
    assert t.stalled == stalled
    # Partition 1 is taken again: its offset moves, and the stall ends at once.
    assert t.observe({0: 140, 1: 80, 2: 30, 3: 10}, {0: 135, 1: 21, 2: 30}, 6.0) == {"flows.v1:3"}
    # Caught up while standing still is not a stall (its exporters stopped).
    assert t.observe({0: 140, 1: 80, 2: 30, 3: 10}, {0: 140, 1: 80, 2: 30, 3: 10}, 60.0) == set()


def test_a_partition_stuck_for_longer_than_the_hold_stops_holding_windows() -> None:
    t = StallTracker("flows.v1", stall_after_s=5.0, max_hold_s=60.0)
    t.observe({0: 10}, {0: 0}, 0.0)
    assert t.observe({0: 12}, {0: 0}, 59.0) == {"flows.v1:0"}
    assert t.observe({0: 14}, {0: 0}, 60.0) == set()
    # It moves again, and a new stall holds again.
    t.observe({0: 14}, {0: 1}, 61.0)
    assert t.observe({0: 15}, {0: 1}, 66.0) == {"flows.v1:0"}


def test_a_partition_that_went_away_is_forgotten() -> None:
    t = StallTracker("flows.v1", stall_after_s=1.0)
    t.observe({0: 10, 1: 10}, {0: 0, 1: 0}, 0.0)
    assert t.observe({0: 10, 1: 10}, {0: 0, 1: 0}, 2.0) == {"flows.v1:0", "flows.v1:1"}
    assert t.observe({0: 10}, {0: 0}, 3.0) == {"flows.v1:0"}


def test_a_failed_reading_keeps_the_last_answer_and_is_counted() -> None:
    readings = [({0: 10}, {0: 0}), ({0: 10}, {0: 0}), None]
    errors: list[int] = []

    def read() -> tuple[dict[int, int], dict[int, int | None]]:
        got = readings.pop(0)
        if got is None:
            raise ConnectionError("broker gone")
        return got

    watch = StallWatch(
        StallTracker("flows.v1", stall_after_s=0.0), read, on_error=lambda: errors.append(1)
    )
    watch.poll_once()
    watch.poll_once()
    assert watch.stalled() == {"flows.v1:0"}
    watch.poll_once()
    assert (watch.stalled(), errors) == ({"flows.v1:0"}, [1])


@pytest.mark.kafka
def test_the_watch_reads_a_real_group_and_sees_its_stall_end(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = f"stalls-{uuid.uuid4().hex[:8]}", f"stalls-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, {topic: 2})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(5):
        producer.send(topic, value=b"x", partition=i % 2)
    producer.flush()
    producer.close()
    # The group has taken partition 0 entirely and partition 1 up to 1 of 2.
    committer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    committer.commit({tp0: OffsetAndMetadata(3, "", -1), tp1: OffsetAndMetadata(1, "", -1)})

    reader = KafkaReader(kafka_bootstrap, group, topic, {})
    watch = StallWatch(StallTracker(topic, stall_after_s=0.5), reader, interval_s=0.1)
    try:
        assert reader() == ({0: 3, 1: 2}, {0: 3, 1: 1})
        watch.start()
        deadline = time.monotonic() + 30
        while watch.stalled() != {f"{topic}:1"} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watch.stalled() == {f"{topic}:1"}
        committer.commit({tp1: OffsetAndMetadata(2, "", -1)})
        while watch.stalled() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watch.stalled() == frozenset()
    finally:
        watch.stop()
        committer.close()
