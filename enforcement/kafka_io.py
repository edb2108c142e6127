"""The Kafka plumbing the evaluator and the ledger share.

* :func:`read_table` reads a compacted topic from its start to its current
  end and keeps the latest value per key (``None`` for a tombstone): how a
  restarted process gets back its state and the rules in force.
Both connect with the ``[kafka]`` TLS/SASL settings (:mod:`voipflow.schemas.kafka_security`).

* :func:`make_producer` a producer that waits for all replicas
  (``acks=all``), so a flushed message survives a broker failover.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from voipflow.enforcement.errors import EnforcementError
from voipflow.schemas.kafka_security import KafkaSecurity, kafka_client_options
from voipflow.schemas.topics import COMPACTED_TOPIC
from voipflow.storage.sink.assignment import AssignmentWatch, no_auto_create

#: Topic configs of the compacted topics (rules.v1 and the state topics).
log = logging.getLogger(__name__)

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


def subscribe_group(
    bootstrap: str,
    group_id: str,
    client_id: str,
    topics: list[str],
    security: KafkaSecurity | None = None,
    listener: Any = None,
    session_timeout_s: float | None = None,
) -> tuple[Any, AssignmentWatch]:
    """A consumer in ``group_id`` subscribed to ``topics``, and the watch its loop checks.

    Like the sink's: it never creates topics, and the watch rejoins the
    group when the consumer sits without partitions beside a backlog. Offsets
    are committed by the loop once its outputs are written.
    """
    from kafka import KafkaConsumer

    timeouts: dict[str, int] = {}
    if session_timeout_s is not None:  # how soon a dead member's partitions move on
        ms = int(session_timeout_s * 1000)
        timeouts = {"session_timeout_ms": ms, "heartbeat_interval_ms": max(500, ms // 4)}
    consumer = KafkaConsumer(
        **_options(security),
        **timeouts,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
    )
    no_auto_create(consumer)
    consumer.subscribe(topics, listener=listener)
    return consumer, AssignmentWatch(
        consumer, topics, listener, component=client_id.removeprefix("voipflow-")
    )


def read_table(
    bootstrap: str,
    topic: str,
    security: KafkaSecurity | None = None,
    timeout_s: float = 60.0,
    partitions: list[int] | None = None,
) -> dict[str, bytes | None]:
    """Latest value per key of ``topic`` (of its ``partitions``, default all) up to
    its end at the time of the call."""
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
        if partitions is not None:
            parts = set(parts) & set(partitions)
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


def tail_topic(
    bootstrap: str,
    topic: str,
    client_id: str,
    since_ms: int,
    security: KafkaSecurity | None = None,
) -> Any:
    """A consumer outside any group on every partition of ``topic``, from ``since_ms`` on.

    For side input every process needs whole (the evaluator's observed peers):
    nothing is committed, and a restarted process reads back what it needs.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **_options(security),
        bootstrap_servers=bootstrap,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=200,
    )
    no_auto_create(consumer)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    if tps:
        found = consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends = consumer.end_offsets(tps)
        for tp in tps:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else ends[tp])
    return consumer


def partition_count(bootstrap: str, topic: str, security: KafkaSecurity | None = None) -> int:
    """How many partitions ``topic`` has (0 when it does not exist)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        **_options(security), bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    no_auto_create(consumer)
    try:
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close(autocommit=False)


class LoopProcess:
    """A Kafka loop run in a thread: the component shape the evaluator and ledger share.

    A subclass sets ``name``, prepares its state in ``start()`` before calling
    :meth:`_start_loop`, and implements ``_run()``, which returns when
    ``_stop`` is set (or when idle). ``done`` is set when the loop ends, and
    ``failure`` holds what ended it, if anything did.
    """

    name = "loop"

    def __init__(self) -> None:
        self.done = threading.Event()
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._consumer: Any = None

    def _start_loop(self) -> None:
        self._thread = threading.Thread(target=self._guarded, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None

    def _run(self) -> None:
        raise NotImplementedError

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.failure = exc
            log.exception("%s stopped", self.name)
        finally:
            self.done.set()
