"""The publisher against the session's real Kafka broker, including a broker restart."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.collectors.consume import consume
from voipflow.broker import LocalBroker
from voipflow.collectors.publisher import Publisher, PublisherConfig, PublisherError

pytestmark = pytest.mark.kafka


def test_messages_arrive_keyed_in_order_with_latency_observed(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    topic = kafka_topic_factory(partitions=2)
    seen: list[float] = []
    pub = Publisher(
        PublisherConfig(bootstrap=kafka_bootstrap), on_latency=lambda _t, s: seen.append(s)
    )
    pub.start()
    try:
        for i in range(60):
            key = b"192.0.2.%d" % (i % 3)
            assert pub.publish(topic, key, b"value-%03d" % i, records=10, headers=[("a", b"b")])
        assert pub.flush(20)
    finally:
        pub.stop()
    assert pub.counters.delivered_messages == 60
    assert pub.counters.delivered_records == 600
    assert pub.counters.dropped_messages == 0
    assert pub.buffered_bytes == 0
    assert len(seen) == 60 and all(s >= 0 for s in seen)
    msgs = consume(kafka_bootstrap, topic, expect=60)
    assert len(msgs) == 60
    by_key: dict[bytes, list[bytes]] = {}
    for m in msgs:
        by_key.setdefault(m.key, []).append(m.value)
        assert m.headers == [("a", b"b")]
    for k, values in by_key.items():
        n = int(k.rsplit(b".", 1)[1])
        assert values == [b"value-%03d" % i for i in range(n, 60, 3)]


def test_unreachable_broker_fails_at_start_naming_it() -> None:
    pub = Publisher(PublisherConfig(bootstrap="127.0.0.1:9", connect_timeout_ms=1500))
    with pytest.raises(PublisherError, match=r"127\.0\.0\.1:9"):
        pub.start()


@pytest.mark.slow
def test_broker_restart_loses_nothing_that_fit_and_drops_oldest_beyond(
    kafka_broker: LocalBroker, kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    topic = kafka_topic_factory(partitions=1)
    size = 10_000
    pub = Publisher(
        PublisherConfig(
            bootstrap=kafka_bootstrap,
            # Room for 20 messages; one at a time in flight.
            buffer_max_bytes=20 * (size + 4),
            inflight_max_bytes=size,
            retry_backoff_ms=100,
            retry_backoff_max_ms=1000,
        )
    )
    pub.start()
    try:
        assert pub.publish(topic, b"k", b"%06d" % 0 + b"x" * (size - 6), records=1)
        assert pub.flush(20)
        kafka_broker.stop()
        # While the broker is down: 30 more messages, 10 more than fit.
        for i in range(1, 31):
            pub.publish(topic, b"k", b"%06d" % i + b"x" * (size - 6), records=1)
            time.sleep(0.02)
        assert pub.counters.dropped_messages == 10
        assert pub.counters.dropped_records == 10
        assert pub.pending == 20
        kafka_broker.start()
        assert pub.flush(90), "the buffer did not drain after the broker came back"
    finally:
        pub.stop()
    values = [m.value[:6] for m in consume(kafka_bootstrap, topic, expect=21, timeout_s=60)]
    # Message 1 was already in flight when the buffer filled; 2..11 were the
    # oldest waiting ones and were dropped; 12..30 fit and arrive, in order.
    expected = [b"%06d" % i for i in [0, 1, *range(12, 31)]]
    assert sorted(set(values)) == expected
    assert values == sorted(values)
