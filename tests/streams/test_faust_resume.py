"""The worker's Faust app delivers every message of its partitions when flow resumes.

When Faust's table recovery ends it seeks the stream partitions to their
committed offsets and then resumes flow. The stock flow control empties the
agents' buffers at that resume, while the fetcher's read offsets have already
moved past the buffered messages, so their re-fetched copies are discarded
and the agent never sees them (the cause of the intermittent loss in the
worker kill test). This test replays that end of recovery on the real broker,
in-process, against an agent that is behind the fetcher (a full buffer), and
checks that :class:`voipflow.streams.app.WorkerFaustApp` still hands every offset to
the agent. Run with ``faust.App`` instead, the same test loses the buffered
messages.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import faust
import pytest
from kafka import KafkaProducer

from tests.fixtures.faust_apps import small_app, until
from tests.fixtures.kafka import TopicFactory
from voipflow.streams.app import KeepBuffersOnResume, WorkerFaustApp

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MESSAGES = 400


async def resume_behind_the_fetcher(
    app_cls: type[faust.App], bootstrap: str, topic_name: str, datadir: Path
) -> tuple[set[int], int, type]:
    """Offsets the agent saw, messages buffered at the resume, the flow control's type."""
    app = small_app(app_cls, "vf-resume", bootstrap, datadir)
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)
    seen: list[int] = []

    @app.agent(topic)
    async def slow(stream: Any) -> None:
        async for event in stream.events():
            seen.append(event.message.offset)
            await asyncio.sleep(0.005)

    await app.start()
    try:
        await until(lambda: len(seen) >= MESSAGES // 4, 60, lambda: f"agent saw {len(seen)}")
        # What faust.tables.recovery.Recovery.on_recovery_completed does last.
        await app.consumer.perform_seek()
        buffered = sum(q.qsize() for q in app.flow_control._queues)
        app.flow_control.resume()
        app.consumer.resume_flow()
        last = (-1, time.monotonic())
        while time.monotonic() - last[1] < 3.0:  # until nothing new for 3 s
            if len(seen) != last[0]:
                last = (len(seen), time.monotonic())
            await asyncio.sleep(0.05)
        return set(seen), buffered, type(app.flow_control)
    finally:
        await app.stop()


def test_worker_app_keeps_buffered_messages_when_flow_resumes(
    kafka_bootstrap: str, kafka_topic_factory: TopicFactory, tmp_path: Path
) -> None:
    name = kafka_topic_factory(partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    for i in range(MESSAGES):
        producer.send(name, key=b"k", value=str(i).encode())
    producer.flush()
    producer.close()
    seen, buffered, flow_control = asyncio.run(
        resume_behind_the_fetcher(WorkerFaustApp, kafka_bootstrap, name, tmp_path / "faust")
    )
    assert flow_control is KeepBuffersOnResume
    assert buffered > 0, "the agent was not behind the fetcher: nothing exercised"
    assert sorted(set(range(MESSAGES)) - seen) == []
