"""The Kafka plumbing the evaluator and the ledger share.

* :func:`read_table` reads a compacted topic from its start to its current
  end and keeps the latest value per key (``None`` for a tombstone): how a
  restarted process gets back its state and the rules in force.
Both connect with the ``[kafka]`` TLS/SASL settings (:mod:`voipflow.schemas.kafka_security`).

* :func:`make_producer` a producer that waits for all replicas
  (``acks=all``), so a flushed message survives a broker failover.
"""

from __future__ import annotations

import time
from typing import Any

from voipflow.enforcement.errors import EnforcementError
from voipflow.schemas.kafka_security import KafkaSecurity, kafka_client_options
from voipflow.schemas.topics import COMPACTED_TOPIC

#: Topic configs of the compacted topics (rules.v1 and the state topics).
COMPACTED = COMPACTED_TOPIC


def _options(security: KafkaSecurity | None) -> dict[str, Any]:
    return kafka_client_options(security) if security is not None else {}


def make_producer(bootstrap: str, client_id: str, security: KafkaSecurity | None = None) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        **_options(security),
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=5,
        max_in_flight_requests_per_connection=1,  # keep a key's messages in order on retries
    )


def read_table(
    bootstrap: str,
    topic: str,
    security: KafkaSecurity | None = None,
    timeout_s: float = 60.0,
) -> dict[str, bytes | None]:
    """Latest value per key of ``topic`` up to its end at the time of the call."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **_options(security),
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    table: dict[str, bytes | None] = {}
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return table
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise EnforcementError(f"{topic}: could not read to its end in {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.key is not None:
                        table[rec.key.decode("utf-8", "replace")] = rec.value
    finally:
        consumer.close(autocommit=False)
    return table
