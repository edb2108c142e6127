"""The worker's producer buffer: the flush that precedes every offset commit returns only
once each record handed to it (table changelog writes) was delivered, on the real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest

from voipflow.broker import LocalBroker
from voipflow.schemas.topics import KafkaConfig
from voipflow.streams.app import build_app
from voipflow.streams.commits import DeliveredBuffer
from voipflow.streams.config import WorkerConfig
from voipflow.topics import ensure_topics

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def test_flush_waits_for_a_record_still_being_handed_to_the_client(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    """The broker is stopped (SIGSTOP) while a changelog-style record (``send_soon``) goes
    to a topic the producer has no metadata for yet: the hand-off to the client blocks.
    Faust's own buffer flush returned at once in that state (the record is no longer
    queued, and not yet in the client), so the commit after it went ahead; this flush
    must come back only after the broker acknowledged the record."""
    bootstrap = kafka_broker.bootstrap
    tag = uuid.uuid4().hex[:8]
    topic = f"commits-{tag}"
    ensure_topics(bootstrap, {topic: 1})
    worker = WorkerConfig(app_id=f"commits-{tag}")
    w = build_app(KafkaConfig(), worker, bootstrap, tmp_path)
    pid = kafka_broker.pid
    assert pid is not None

    async def run() -> tuple[bool, BaseException | None]:
        producer = w.app.producer
        assert isinstance(producer.buffer, DeliveredBuffer)
        await producer.start()
        try:
            os.kill(pid, signal.SIGSTOP)
            try:
                fut = w.app.topic(topic, value_serializer="raw").send_soon(value=b"state")
                flushing = asyncio.ensure_future(producer.flush())
                await asyncio.sleep(2.0)  # the hand-off is blocked meanwhile
            finally:
                os.kill(pid, signal.SIGCONT)
            await asyncio.wait_for(flushing, 90)
            return fut.done(), (fut.exception() if fut.done() else None)
        finally:
            os.kill(pid, signal.SIGCONT)
            await producer.stop()

    done, error = asyncio.run(run())
    assert done, "flush returned before the record was delivered"
    assert error is None, error

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    try:
        assert [m.value for m in consumer] == [b"state"]
    finally:
        consumer.close()
