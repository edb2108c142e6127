"""The sink on a real Kafka broker and chdb: batching, first copies, bad messages, stops."""

from __future__ import annotations

import os
import time
from collections import defaultdict

import pytest

from tests.storage.sinkdata import (
    APPS,
    CITIES,
    committed,
    flow_batch,
    health_message,
    produce,
    traffic_message,
    usage_message,
    wait_until,
)
from voipflow.schemas.topics import KafkaConfig
from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions
from voipflow.storage.config import ClickHouseConfig, SinkConfig
from voipflow.storage.sink import Sink

pytestmark = pytest.mark.kafka


def _topics(kafka_topic_factory, partitions: int = 2) -> KafkaConfig:
    return KafkaConfig(
        voip_flows_topic=kafka_topic_factory(partitions, prefix="voip-flows"),
        usage_topic=kafka_topic_factory(partitions, prefix="usage"),
        health_topic=kafka_topic_factory(1, prefix="health"),
        traffic_topic=kafka_topic_factory(partitions, prefix="traffic"),
    )


def _sink(kafka_bootstrap, kafka: KafkaConfig, chdb, tmp_path, **cfg: object) -> Sink:
    settings: dict[str, object] = {
        "group_id": "sink-" + os.urandom(4).hex(),
        "batch_delay_s": 0.3,
        "retry_initial_s": 0.2,
        "retry_max_s": 1.0,
        **cfg,
    }
    config = SinkConfig(**settings)  # type: ignore[arg-type]
    return Sink(config, kafka, ClickHouseConfig(), tmp_path, bootstrap=kafka_bootstrap, ch=chdb)


def _count(chdb, sql: str) -> int:
    return int(chdb.query(sql).scalar())


def test_all_topics_land_once_and_bad_messages_are_skipped(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path
) -> None:
    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    kafka = _topics(kafka_topic_factory)
    batches = [flow_batch(500, base=k * 1000) for k in range(12)]
    good = flow_batch(3, base=10**9)
    produce(
        kafka_bootstrap,
        kafka.voip_flows_topic,
        [*batches[:6], good[: len(good) // 2], b"junk", *batches[6:]],
    )
    minute = (int(time.time()) // 60 - 30) * 60 * 1000
    windows = []
    expected_hashes: dict[tuple[str, str], set[int]] = defaultdict(set)
    expected_flows: dict[tuple[str, str], int] = defaultdict(int)
    for w in range(4):
        for c, city in enumerate(CITIES):
            for a, app in enumerate(APPS):
                hashes = [1000 * c + 10 * a + w, 1000 * c + 10 * a + w + 1]
                windows.append(usage_message(minute + w * 60_000, city, app, 1 + w, hashes))
                expected_hashes[(city, app)].update(hashes)
                expected_flows[(city, app)] += 1 + w
    # A worker that crashed re-publishes some closed windows with the same values.
    republished = windows[:5]
    produce(
        kafka_bootstrap,
        kafka.usage_topic,
        [*windows[:20], b"{oops", usage_message(minute, "X", "y", 1, [1])[:-9], *windows[20:]],
    )
    produce(kafka_bootstrap, kafka.usage_topic, republished + windows[30:33])
    now_ms = int(time.time() * 1000)
    produce(
        kafka_bootstrap,
        kafka.health_topic,
        [health_message(now_ms + k, "192.0.2.1", k) for k in range(5)]
        + [health_message(now_ms, "nonsense", 1)],
    )
    traffic = [
        traffic_message(minute + w * 60_000, exporter, domain, flows=10 * w + domain + 1)
        for w in range(3)
        for exporter in ("192.0.2.1", "192.0.2.0", "2001:db8::7")
        for domain in (0, 256)
    ]
    # Re-published windows (a worker crash) and a message of another schema.
    produce(kafka_bootstrap, kafka.traffic_topic, [*traffic[:10], b'{"schema": "x"}'])
    produce(kafka_bootstrap, kafka.traffic_topic, [*traffic[3:7], *traffic[10:], traffic[0]])

    sink = _sink(kafka_bootstrap, kafka, chdb, tmp_path)
    sink.start()
    try:
        wait_until(
            lambda: (
                _count(chdb, "SELECT count() FROM flows_voip") >= 6000
                and _count(chdb, "SELECT count() FROM voip_usage_1m") >= len(windows)
                and _count(chdb, "SELECT count() FROM exporter_health") >= 5
                and _count(chdb, "SELECT count() FROM exporter_traffic_1m") >= len(traffic)
            ),
            60,
            "all rows",
        )

        # Offsets move past the bad messages: nothing is left uncommitted.
        def all_committed() -> bool:
            for topic, total in (
                (kafka.voip_flows_topic, 14),
                (kafka.usage_topic, len(windows) + 2 + 8),
                (kafka.health_topic, 6),
                (kafka.traffic_topic, len(traffic) + 6),
            ):
                offs = committed(kafka_bootstrap, sink.config.group_id, topic)
                if sum(o.offset for o in offs.values() if o is not None) != total:
                    return False
            return True

        wait_until(all_committed, 30, "offsets committed")
    finally:
        sink.stop()
    assert sink.failure is None

    flows = chdb.query("SELECT count(), uniqExact(bytes), sum(bytes) FROM flows_voip").rows[0]
    expected_bytes = sum(int(k * 1000 * 500 + 499 * 500 // 2) for k in range(12))
    assert flows == (6000, 6000, expected_bytes)
    cities = chdb.query("SELECT city, count() FROM flows_voip GROUP BY city ORDER BY city")
    assert dict(cities.rows) == {"Bergen": 2004, "Oslo": 2004, "Tromsø": 1992}

    assert _count(chdb, "SELECT count() FROM voip_usage_1m") == len(windows)
    hourly = chdb.query(
        "SELECT city, app, sum(flows), uniqMerge(subscribers_state), sum(minutes) "
        "FROM voip_usage_1h GROUP BY city, app"
    )
    for city, app, flows_sum, subs, minutes in hourly.rows:
        assert flows_sum == expected_flows[(city, app)]
        assert subs == len(expected_hashes[(city, app)])
        assert minutes == 4
    daily = chdb.query("SELECT sum(flows) FROM voip_usage_1d").scalar()
    assert daily == sum(expected_flows.values())

    health = chdb.query(
        "SELECT count(), sum(records), toString(any(exporter)) FROM exporter_health"
    ).rows[0]
    assert health == (5, 10, "::ffff:192.0.2.1")

    # First copy per (window, exporter, domain): the re-published ones are left out.
    rows = chdb.query(
        "SELECT toString(exporter), observation_domain_id, count(), sum(flows) "
        "FROM exporter_traffic_1m GROUP BY 1, 2 ORDER BY 1, 2"
    ).rows
    want: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for w in range(3):
        for exporter in ("::ffff:192.0.2.1", "::ffff:192.0.2.0", "2001:db8::7"):
            for domain in (0, 256):
                want[(exporter, domain)][0] += 1
                want[(exporter, domain)][1] += 10 * w + domain + 1
    assert rows == sorted((*k, *v) for k, v in want.items())

    assert sink.bad_messages == {
        (kafka.voip_flows_topic, "truncated"): 2,
        (kafka.usage_topic, "bad_json"): 2,
        (kafka.health_topic, "bad_value"): 1,
        (kafka.traffic_topic, "wrong_schema"): 1,
    }


def test_schema_mismatch_stops_with_one_clear_message(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path
) -> None:
    chdb.execute(
        "CREATE TABLE flows_bad (time_received DateTime64(3, 'UTC'), city UInt32, bytes UInt64) "
        "ENGINE = MergeTree ORDER BY time_received "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    kafka = _topics(kafka_topic_factory, partitions=1)
    produce(kafka_bootstrap, kafka.voip_flows_topic, [flow_batch(10, base=0)])
    sink = _sink(
        kafka_bootstrap,
        kafka,
        chdb,
        tmp_path,
        flows_table="flows_bad",
        topics=kafka.voip_flows_topic,
    )
    sink.start()
    try:
        assert sink.wait(60), "the sink kept retrying a permanent error"
    finally:
        sink.stop()
    assert sink.failure is not None
    text = str(sink.failure)
    assert f"{chdb.database}.flows_bad" in text
    assert "not committed" in text
    assert _count(chdb, "SELECT count() FROM flows_bad") == 0
    offs = committed(kafka_bootstrap, sink.config.group_id, kafka.voip_flows_topic)
    # Only the intent was committed: the position is still the batch's start.
    assert offs[0] is not None and offs[0].offset == 0 and "pending" in offs[0].metadata


def test_missing_table_refused_at_start(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path
) -> None:
    from voipflow.storage.sink import SinkStopped

    kafka = _topics(kafka_topic_factory, partitions=1)
    sink = _sink(kafka_bootstrap, kafka, chdb, tmp_path, topics=kafka.health_topic)
    with pytest.raises(SinkStopped, match="voipflow db migrate"):
        sink.start()
    sink.stop()


def _leave_intent(kafka_bootstrap, kafka: KafkaConfig, chdb) -> str:
    """What a sink that died after its insert leaves behind, in a new group (returned).

    Five messages of 100 flows on the topic; the rows of offsets 0-2 in
    ClickHouse under their token, and the intent committed at offset 0.
    """
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata, TopicPartition

    from voipflow.storage.sink.tables import combine, parse_voip_flows

    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    produce(
        kafka_bootstrap, kafka.voip_flows_topic, [flow_batch(100, base=k * 100) for k in range(5)]
    )
    group = "sink-" + os.urandom(4).hex()
    cols, _ = combine([parse_voip_flows(flow_batch(100, base=k * 100)) for k in range(3)])
    chdb.insert("flows_voip", cols, dedup_token=f"flows_voip/{kafka.voip_flows_topic}/0/0-2")
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    consumer.commit(
        {TopicPartition(kafka.voip_flows_topic, 0): OffsetAndMetadata(0, '{"pending": [0, 2]}', -1)}
    )
    consumer.close(autocommit=False)
    return group


def _intent_sink(kafka_bootstrap, kafka: KafkaConfig, chdb, tmp_path, group: str) -> Sink:
    return Sink(
        SinkConfig(group_id=group, batch_delay_s=0.3, topics=kafka.voip_flows_topic),
        kafka,
        ClickHouseConfig(),
        tmp_path,
        bootstrap=kafka_bootstrap,
        ch=chdb,
    )


def _all_committed(kafka_bootstrap, group: str, topic: str) -> None:
    wait_until(
        lambda: (committed(kafka_bootstrap, group, topic)[0] or (0,))[0] == 5,
        60,
        "all offsets committed",
    )


def test_replayed_intent_is_deduplicated_by_token(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path
) -> None:
    """A batch inserted but not committed (intent left) is rebuilt and dropped by its token."""
    kafka = _topics(kafka_topic_factory, partitions=1)
    group = _leave_intent(kafka_bootstrap, kafka, chdb)
    sink = _intent_sink(kafka_bootstrap, kafka, chdb, tmp_path, group)
    sink.start()
    try:
        _all_committed(kafka_bootstrap, group, kafka.voip_flows_topic)
    finally:
        sink.stop()
    res = chdb.query("SELECT count(), uniqExact(bytes) FROM flows_voip").rows[0]
    assert res == (500, 500)
    assert sink.rows_inserted["flows_voip"] == 500  # the replay was sent whole, then dropped


def test_records_wait_while_the_committed_offset_cannot_be_read(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path
) -> None:
    """The sink's first 3 reads of the committed offset (and so the intent) time out:
    the partition's records are fetched again later instead of batched past the intent.

    Counted in calls, not seconds: on a loaded machine the sink may first ask
    after any fixed time has passed, and then nothing would have been injected.
    """
    from kafka.errors import KafkaTimeoutError

    kafka = _topics(kafka_topic_factory, partitions=1)
    group = _leave_intent(kafka_bootstrap, kafka, chdb)
    sink = _intent_sink(kafka_bootstrap, kafka, chdb, tmp_path, group)
    make_consumer = sink._make_consumer
    failures: list[float] = []

    def consumer_whose_coordinator_is_slow() -> object:
        consumer = make_consumer()
        real_committed = consumer.committed

        def committed_after_a_while(*args: object, **kwargs: object) -> object:
            if len(failures) < 3:
                failures.append(time.monotonic())
                raise KafkaTimeoutError("committed offsets not answered (injected)")
            return real_committed(*args, **kwargs)

        consumer.committed = committed_after_a_while
        return consumer

    sink._make_consumer = consumer_whose_coordinator_is_slow  # type: ignore[method-assign]
    sink.start()
    try:
        _all_committed(kafka_bootstrap, group, kafka.voip_flows_topic)
    finally:
        sink.stop()
    assert len(failures) == 3
    res = chdb.query("SELECT count(), uniqExact(bytes) FROM flows_voip").rows[0]
    assert res == (500, 500)
    assert sink.rows_inserted["flows_voip"] == 500


def test_dead_letters_and_pipeline_stats(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path
) -> None:
    from kafka import KafkaConsumer

    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    kafka = _topics(kafka_topic_factory, partitions=1)
    dead = kafka_topic_factory(1, prefix="dead")
    now_ms = int(time.time() * 1000)
    produce(
        kafka_bootstrap,
        kafka.health_topic,
        [health_message(now_ms, "192.0.2.9", 4), b"\xff not json", health_message(now_ms, "x", 1)],
    )
    sink = _sink(
        kafka_bootstrap,
        kafka,
        chdb,
        tmp_path,
        topics=kafka.health_topic,
        dead_letter_topic=dead,
        stats_interval_s=0.5,
    )
    sink.start()
    try:
        wait_until(
            lambda: (
                _count(chdb, "SELECT count() FROM pipeline_stats WHERE metric = 'rows_inserted'")
                > 0
            ),
            60,
            "pipeline stats",
        )
    finally:
        sink.stop()
    consumer = KafkaConsumer(
        dead,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    letters = list(consumer)
    consumer.close()
    assert [m.value for m in letters] == [b"\xff not json", health_message(now_ms, "x", 1)]
    headers = [dict(m.headers) for m in letters]
    assert [h["reason"] for h in headers] == [b"bad_json", b"bad_value"]
    assert {h["topic"] for h in headers} == {kafka.health_topic.encode()}
    assert [h["offset"] for h in headers] == [b"1", b"2"]
    stats = chdb.query(
        "SELECT metric, labels, argMax(value, ts) FROM pipeline_stats "
        "WHERE component = 'sink' GROUP BY metric, labels ORDER BY metric, labels"
    ).rows
    assert ("rows_inserted", '{"table": "exporter_health"}', 1.0) in stats
    bad = [r for r in stats if r[0] == "bad_messages"]
    assert sorted(r[2] for r in bad) == [1.0, 1.0]


def test_exit_when_idle_waits_for_partitions_then_idles_on_empty_topics(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path
) -> None:
    """Empty topics are not drained before the sink has its partitions and saw their ends;
    only then does the idle time start, so what arrives soon after still lands."""
    from kafka import KafkaConsumer, KafkaProducer

    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    kafka = _topics(kafka_topic_factory, partitions=1)
    group = "sink-" + os.urandom(4).hex()
    idle_s, hold_s = 5.0, 8.0
    # Another member of the group (the first to join: it assigns, and range
    # assignment gives it the only partition) holds the partition for a while.
    holder = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    assert holder.partitions_for_topic(kafka.voip_flows_topic) == {0}
    holder.subscribe([kafka.voip_flows_topic])
    wait_until(lambda: holder.poll(timeout_ms=200) == {} and holder.assignment(), 30, "holder")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.partitions_for(kafka.voip_flows_topic)  # connected before it is needed
    config = SinkConfig(
        group_id=group,
        topics=kafka.voip_flows_topic,
        batch_delay_s=0.3,
        exit_when_idle_s=idle_s,
        session_timeout_s=6.0,
    )
    sink = Sink(config, kafka, ClickHouseConfig(), tmp_path, bootstrap=kafka_bootstrap, ch=chdb)
    sink.start()
    try:
        # Longer than the idle time: without partitions the sink keeps waiting.
        held_until = time.monotonic() + hold_s
        while time.monotonic() < held_until:
            holder.poll(timeout_ms=200)
        assert holder.assignment() and not sink.assigned, (holder.assignment(), sink.assigned)
        assert not sink.done.is_set(), sink.failure
        holder.close()
        wait_until(lambda: sink.assigned or sink.done.is_set(), 30, "the partition")
        got_it = time.monotonic()
        assert not sink.done.is_set(), f"exited as soon as it got its partition ({sink.failure})"
        time.sleep(0.5)  # well inside the idle time
        producer.send(kafka.voip_flows_topic, flow_batch(50, base=0)).get(timeout=30)
        sent = time.monotonic() - got_it
        assert sink.wait(60), "the sink did not exit once idle"
        assert sink.failure is None, sink.failure
        rows = _count(chdb, "SELECT count() FROM flows_voip")
        assert rows == 50, f"{rows} rows; the batch was sent {sent:.1f} s after the assignment"
    finally:
        producer.close(timeout=10)
        sink.stop()


def test_a_partition_the_client_stopped_fetching_is_fetched_again(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path, monkeypatch
) -> None:
    """A partition with messages whose position does not move is sought where it stands.

    The stall is made inside kafka-python the way its 3.x releases have stalled
    on their own: the partition waits for an offset validation that is never
    allowed to run, so ``poll()`` skips it while the broker holds its messages.
    """
    from kafka.structs import TopicPartition

    from voipflow.storage.sink import loop

    monkeypatch.setattr(loop, "PROGRESS_CHECK_S", 1.0)
    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    kafka = _topics(kafka_topic_factory, partitions=1)
    sink = _sink(kafka_bootstrap, kafka, chdb, tmp_path, topics=kafka.voip_flows_topic)
    tp = TopicPartition(kafka.voip_flows_topic, 0)

    def restarts() -> float:
        return (
            sink.metrics.registry.get_sample_value(
                "voipflow_sink_fetch_restarts_total", {"topic": kafka.voip_flows_topic}
            )
            or 0.0
        )

    before = restarts()
    sink.start()
    try:
        produce(kafka_bootstrap, kafka.voip_flows_topic, [flow_batch(40, base=0)])
        wait_until(lambda: sink.rows_inserted.get("flows_voip") == 40, 60, "the first batch")
        state = sink._consumer._subscription.assignment[tp]
        state._awaiting_validation = True
        state.next_allowed_retry_time = time.monotonic() + 3600
        assert not state.is_fetchable()
        produce(kafka_bootstrap, kafka.voip_flows_topic, [flow_batch(60, base=1000)])
        wait_until(lambda: sink.rows_inserted.get("flows_voip") == 100, 60, "the batch after")
    finally:
        sink.stop()
    assert _count(chdb, "SELECT count() FROM flows_voip") == 100
    assert restarts() - before >= 1


def test_a_commit_that_times_out_replays_the_same_batch_once(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path
) -> None:
    """The commit after an insert times out while more messages arrive behind the batch:
    the replay is cut at the same offsets, so its token matches and ClickHouse drops it."""
    from kafka.errors import KafkaTimeoutError

    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    kafka = _topics(kafka_topic_factory, partitions=1)
    produce(
        kafka_bootstrap, kafka.voip_flows_topic, [flow_batch(30, base=k * 100) for k in range(3)]
    )
    sink = _sink(kafka_bootstrap, kafka, chdb, tmp_path, topics=kafka.voip_flows_topic)
    real_commit = sink._commit
    failed: list[int] = []

    def commit_once_timing_out(tp, offset) -> None:
        if offset.offset > 0 and not failed:  # the commit after the first insert
            failed.append(offset.offset)
            produce(
                kafka_bootstrap,
                kafka.voip_flows_topic,
                [flow_batch(30, base=k * 100) for k in range(3, 5)],
            )
            raise KafkaTimeoutError("commit timed out (injected)")
        real_commit(tp, offset)

    sink._commit = commit_once_timing_out  # type: ignore[method-assign]
    sink.start()
    try:
        _all_committed(kafka_bootstrap, sink.config.group_id, kafka.voip_flows_topic)
    finally:
        sink.stop()
    (first_batch,) = failed  # messages 0 .. first_batch - 1 went in before the timeout
    res = chdb.query("SELECT count(), uniqExact(bytes) FROM flows_voip").rows[0]
    assert res == (150, 150)
    # The first batch was sent twice, and dropped the second time by its token.
    assert sink.rows_inserted["flows_voip"] == 150 + 30 * first_batch


def test_closed_windows_are_inserted_without_waiting_for_the_flows_delay(
    kafka_bootstrap, kafka_topic_factory, chdb, tmp_path
) -> None:
    """Usage rows (closed windows) go in after ``window_batch_delay_s``; a partial
    batch of flow records waits for ``batch_delay_s`` (here a minute, so it is
    still waiting when the usage rows are in)."""
    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    kafka = _topics(kafka_topic_factory, partitions=1)
    produce(kafka_bootstrap, kafka.voip_flows_topic, [flow_batch(50, base=7 * 10**9)])
    minute = (int(time.time()) // 60 - 90) * 60 * 1000
    produce(
        kafka_bootstrap,
        kafka.usage_topic,
        [usage_message(minute, CITIES[0], APPS[0], 3, [11, 12])],
    )
    sink = _sink(
        kafka_bootstrap,
        kafka,
        chdb,
        tmp_path,
        batch_delay_s=60.0,
        window_batch_delay_s=0.2,
        topics=f"{kafka.voip_flows_topic},{kafka.usage_topic}",
    )
    sink.start()
    try:
        wait_until(lambda: sink.rows_inserted.get("voip_usage_in", 0) == 1, 30, "usage row in")
        assert sink.rows_inserted.get("flows_voip", 0) == 0
    finally:
        sink.stop()
