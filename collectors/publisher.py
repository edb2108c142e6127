"""Kafka publishing of encoded messages with a bounded buffer that outlives outages.

kafka-python's producer is the transport; this module adds what a collector
needs around it:

* **A bounded buffer.** Every message stays counted in the buffer
  (``buffer_max_bytes``) from :meth:`Publisher.publish` until the broker
  acknowledged it (acks=all). At most ``inflight_max_bytes`` of it is handed
  to the Kafka client at once; the rest waits here, in order.
* **Drop oldest when full.** A new message that does not fit evicts the
  oldest messages *not yet handed to the Kafka client* until it fits; only if
  everything buffered is already in flight is the new message dropped
  itself. Oldest first because after a long outage fresh flows are the ones
  the stream processing can still place in an open window (older ones
  arrive past its lateness allowance anyway), and because what is dropped is
  then one contiguous stretch per exporter. Every drop is counted (messages,
  records, bytes).
* **Retry with backoff.** A message the client could not deliver (the
  broker was gone for longer than ``delivery_timeout_ms``, or send refused)
  goes back to the head of the buffer in its original order and is sent
  again after an exponential backoff (``retry_backoff_ms`` ..
  ``retry_backoff_max_ms``). The client itself is idempotent with unlimited
  retries inside that timeout: a batch it sends again after a broker died
  or a leader moved carries its producer id and sequence, and the partition
  leader drops it if it already has it. So a broker restart within the
  timeout (five minutes by default) is invisible here and duplicates
  nothing. Beyond it, delivery is at least once: the client gives up and
  starts a new producer id (kafka-python does so for an expired batch that
  was sent), and a message whose first send was written after all is
  written twice. Every such failure is counted (``kafka_errors`` by error).

All calls are made from the collector's thread; the Kafka client's
callbacks run on its I/O thread and only touch state under a lock.

Errors::

    PublisherError             the producer cannot be created (no broker
                               answered at the bootstrap address in time)
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class PublisherError(Exception):
    """The Kafka producer could not be created; ``str()`` is one line."""


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    """What the publisher needs from the Kafka and collector settings."""

    bootstrap: str
    compression: str = "lz4"
    buffer_max_bytes: int = 256 * 1024 * 1024
    inflight_max_bytes: int = 16 * 1024 * 1024
    max_message_bytes: int = 1_000_000
    delivery_timeout_ms: int = 300000
    retry_backoff_ms: int = 200
    retry_backoff_max_ms: int = 5000
    #: How long creating the producer waits for a broker to answer.
    connect_timeout_ms: int = 10000
    client_id: str = "voipflow-collector"
    #: TLS and SASL keyword arguments of kafka-python
    #: (``schemas.kafka_security.kafka_client_options``); empty: PLAINTEXT.
    client_options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Message:
    """One Kafka message waiting to be delivered."""

    seq: int
    topic: str
    key: bytes
    value: bytes | memoryview
    headers: list[tuple[str, bytes]]
    records: int = 0
    sent_at: float = 0.0
    #: Bytes the message holds in the buffer (value and key).
    size: int = 0


@dataclass(slots=True)
class PublisherCounters:
    """Totals since start (read by metrics; never reset)."""

    delivered_messages: int = 0
    delivered_records: int = 0
    delivered_bytes: int = 0
    dropped_messages: int = 0
    dropped_records: int = 0
    dropped_bytes: int = 0
    retried_messages: int = 0
    errors: dict[str, int] = field(default_factory=dict)


#: Called with (topic, seconds from hand-over to acknowledgement) for each delivery.
LatencyHook = Callable[[str, float], None]


def _servers(bootstrap: str) -> list[str]:
    return [s.strip() for s in bootstrap.split(",") if s.strip()]


def probe(bootstrap: str, timeout_s: float) -> str | None:
    """None if one of the bootstrap servers accepts a TCP connection, else why not.

    Checked before the Kafka client is built: a client whose constructor
    fails leaves its sockets to the garbage collector.
    """
    reasons = []
    deadline = time.monotonic() + timeout_s
    for server in _servers(bootstrap):
        host, _, port = server.rpartition(":")
        try:
            left = max(0.1, deadline - time.monotonic())
            with socket.create_connection((host.strip("[]"), int(port)), timeout=left):
                return None
        except (OSError, ValueError) as exc:
            reasons.append(f"{server}: {getattr(exc, 'strerror', None) or exc}")
    return "; ".join(reasons) or "no server given"


def _compression(name: str) -> str | None:
    return None if name in ("", "none") else name


class Publisher:
    """Publishes messages through kafka-python with a bounded, retrying buffer."""

    name = "kafka-publisher"

    def __init__(
        self,
        config: PublisherConfig,
        *,
        on_latency: LatencyHook | None = None,
        producer_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.config = config
        self.counters = PublisherCounters()
        self._on_latency = on_latency
        self._factory = producer_factory
        self._producer: Any = None
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._queue: deque[Message] = deque()
        self._failed: list[Message] = []
        self._inflight_bytes = 0
        self._inflight_count = 0
        self._buffered_bytes = 0
        self._failures = 0
        self._retry_at = 0.0

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Create the producer; raise :class:`PublisherError` if no broker answers."""
        from kafka import KafkaProducer
        from kafka import errors as kafka_errors

        cfg = self.config
        factory = self._factory or KafkaProducer
        why = probe(cfg.bootstrap, cfg.connect_timeout_ms / 1000.0)
        if why is not None:
            raise PublisherError(f"no Kafka broker answered at {cfg.bootstrap!r} ({why})")
        request_timeout = max(1000, min(30000, cfg.delivery_timeout_ms - 500))
        try:
            self._producer = factory(
                bootstrap_servers=_servers(cfg.bootstrap),
                client_id=cfg.client_id,
                acks="all",
                enable_idempotence=True,
                compression_type=_compression(cfg.compression),
                linger_ms=5,
                # One message is one flow batch; each is its own record batch.
                batch_size=max(16384, min(cfg.max_message_bytes, 1 << 20)),
                max_request_size=cfg.max_message_bytes + 65536,
                delivery_timeout_ms=cfg.delivery_timeout_ms,
                request_timeout_ms=request_timeout,
                # Never block the receiving thread for long: the buffer here
                # bounds what is handed over.
                max_block_ms=2000,
                retry_backoff_ms=cfg.retry_backoff_ms,
                reconnect_backoff_max_ms=cfg.retry_backoff_max_ms,
                bootstrap_timeout_ms=cfg.connect_timeout_ms,
                **cfg.client_options,
            )
        except kafka_errors.KafkaError as exc:
            raise PublisherError(
                f"no Kafka broker answered at {cfg.bootstrap!r}: {type(exc).__name__}"
            ) from exc

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Deliver what is buffered (up to ``timeout_s``), then close.

        Returns True when everything was delivered; what was not is counted
        as dropped (reason: stopped).
        """
        done = self.flush(timeout_s)
        if self._producer is not None:
            try:
                self._producer.close(timeout=1.0 if not done else 5.0)
            except Exception as exc:  # closing must not hide the flush result
                log.warning("closing the Kafka producer failed", extra={"error": repr(exc)})
            self._producer = None
        if not done:
            with self._lock:
                lost = list(self._queue) + self._failed
                self._queue.clear()
                self._failed.clear()
                for msg in lost:
                    self._count_drop(msg)
            log.warning("stopped with undelivered messages", extra={"messages": len(lost)})
        return done

    # -- publishing ---------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged (waiting or in flight)."""
        with self._lock:
            return len(self._queue) + len(self._failed) + self._inflight_count

    def publish(
        self,
        topic: str,
        key: bytes,
        value: bytes | memoryview,
        *,
        records: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> bool:
        """Queue one message; False when it had to be dropped (buffer full)."""
        size = len(key) + (value.nbytes if isinstance(value, memoryview) else len(value))
        msg = Message(next(self._seq), topic, key, value, headers or [], records, size=size)
        with self._lock:
            limit = self.config.buffer_max_bytes
            while self._buffered_bytes + size > limit and self._queue:
                self._count_drop(self._queue.popleft())
            if self._buffered_bytes + size > limit:
                self._count_drop(msg, buffered=False)
                return False
            self._queue.append(msg)
            self._buffered_bytes += size
        self.pump()
        return True

    def _count_drop(self, msg: Message, *, buffered: bool = True) -> None:
        c = self.counters
        c.dropped_messages += 1
        c.dropped_records += msg.records
        c.dropped_bytes += msg.size
        if buffered:
            self._buffered_bytes -= msg.size

    def pump(self) -> None:
        """Hand waiting messages to the client as far as the in-flight bound allows."""
        producer = self._producer
        if producer is None:
            return
        now = time.monotonic()
        with self._lock:
            if self._failed:
                # In-flight messages were taken from the head of the queue, so
                # every failed one is older than everything still queued.
                self._failed.sort(key=lambda m: m.seq)
                self._queue.extendleft(reversed(self._failed))
                self._failed.clear()
            if now < self._retry_at:
                return
            batch: list[Message] = []
            room = self.config.inflight_max_bytes - self._inflight_bytes
            # The bound may be passed by the last message handed over.
            while self._queue and room > 0:
                msg = self._queue.popleft()
                room -= msg.size
                self._inflight_bytes += msg.size
                self._inflight_count += 1
                batch.append(msg)
        for i, msg in enumerate(batch):
            msg.sent_at = time.monotonic()
            try:
                future = producer.send(msg.topic, value=msg.value, key=msg.key, headers=msg.headers)
            except Exception as exc:  # refused before it was queued: retry them all later
                for rest in batch[i:]:
                    self._failure(rest, exc)
                return
            future.add_callback(self._delivered, msg)
            future.add_errback(self._failure, msg)

    def _delivered(self, msg: Message, _metadata: Any) -> None:
        latency = time.monotonic() - msg.sent_at
        with self._lock:
            self._inflight_bytes -= msg.size
            self._inflight_count -= 1
            self._buffered_bytes -= msg.size
            c = self.counters
            c.delivered_messages += 1
            c.delivered_records += msg.records
            c.delivered_bytes += msg.size
            self._failures = 0
        if self._on_latency is not None:
            self._on_latency(msg.topic, latency)

    def _failure(self, msg: Message, exc: BaseException) -> None:
        name = type(exc).__name__
        with self._lock:
            self._inflight_bytes -= msg.size
            self._inflight_count -= 1
            self._failed.append(msg)
            c = self.counters
            c.errors[name] = c.errors.get(name, 0) + 1
            c.retried_messages += 1
            self._failures += 1
            backoff = min(
                self.config.retry_backoff_max_ms,
                self.config.retry_backoff_ms * 2 ** min(self._failures - 1, 16),
            )
            self._retry_at = time.monotonic() + backoff / 1000.0
        log.warning("kafka delivery failed, will retry", extra={"error": name, "topic": msg.topic})

    def flush(self, timeout_s: float) -> bool:
        """Push and wait until nothing is pending or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.pump()
            if self.pending == 0:
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self._producer is None:
                return False
            try:
                self._producer.flush(timeout=min(left, 0.5))
            except Exception:  # a flush timeout only means "not yet"
                time.sleep(min(left, 0.05))
