"""Reading a topic back in tests: every message, with a deadline."""

from __future__ import annotations

import time

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord


def consume(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout_s: float = 30.0,
    quiet_s: float = 3.0,
) -> list[ConsumerRecord]:
    """All messages of ``topic`` from the beginning.

    Stops when ``expect`` messages were read, or when nothing new came for
    ``quiet_s`` (after at least one poll), or at ``timeout_s``.
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=500,
    )
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            got = consumer.poll(timeout_ms=500)
            n = sum(len(v) for v in got.values())
            for records in got.values():
                out.extend(records)
            if n:
                last_new = time.monotonic()
            if expect is not None and len(out) >= expect:
                break
            if expect is None and out and time.monotonic() - last_new > quiet_s:
                break
            if expect is not None and time.monotonic() - last_new > max(quiet_s, timeout_s):
                break
    finally:
        consumer.close()
    return out
