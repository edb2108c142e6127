"""Which flows.v1 partitions have records waiting that no worker is taking.

Why
---
A key's windows close on event time: on its slowest source partition heard
recently (:func:`voipflow.streams.aggregate.closing_watermark`), and, once no
record has come for ``idle_close_s``, on the wall clock (an idle tick). Both
guess from silence, and silence has two causes: the exporters stopped, or the
partition that carries them is not being processed (its worker died and the
group has not given it to another yet, or the new owner is still restoring
its tables). An exporter's traffic windows hear from one partition only, so
a failover longer than ``idle_close_s`` plus the lateness closed them, and
the replayed records were late (292 flows in a loaded chaos run).

How
---
:class:`StallWatch` asks Kafka every ``interval_s`` for each flows.v1
partition's end offset and the worker group's committed offset. A partition
is *stalled* while it has records beyond the committed offset and that offset
has not moved for ``stall_after_s``: the group commits every second while
it works, so a committed offset that stands still beside a backlog means
nobody is working on it. A key does not close windows on silence while one
of its sources is stalled (``_WindowStates.handle``); the records come when
the partition moves again and find their windows open.

A partition stalled for longer than ``max_hold_s`` stops holding them, so
that one stuck partition cannot freeze its keys' figures for ever. The watch
only ever holds windows longer; if it cannot reach Kafka it keeps
its last answer (counted and logged at a bounded rate), and at start, before
its first answer, it reports nothing stalled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between two warnings about the watch's own Kafka errors.
ERROR_LOG_S = 60.0


class StallTracker:
    """The pure part: stalled partitions from successive (end, committed) readings."""

    def __init__(self, topic: str, stall_after_s: float, max_hold_s: float = 900.0) -> None:
        self.topic = topic
        self.stall_after_s = stall_after_s
        #: A partition stalled for this long stops holding windows: a stuck
        #: partition must not freeze its keys' figures for ever (its records
        #: count as late when they come).
        self.max_hold_s = max_hold_s
        # partition -> (committed offset, when it was first seen at that offset)
        self._since: dict[int, tuple[int, float]] = {}
        self._stalled: frozenset[str] = frozenset()

    def observe(
        self, ends: Mapping[int, int], committed: Mapping[int, int | None], now: float
    ) -> frozenset[str]:
        """Update from one reading; returns the stalled sources (``"topic:partition"``).

        A partition without a committed offset counts from 0 (nothing of it
        was processed); the worker seeks such a partition to its earliest
        offset, which a reading cannot tell from 0 without another request,
        so a partition whose early records were deleted may count as stalled
        until its first commit: that only holds windows longer.
        """
        stalled = set()
        for partition, end in ends.items():
            done = committed.get(partition)
            done = 0 if done is None or done < 0 else int(done)
            prev = self._since.get(partition)
            if prev is None or prev[0] != done:
                self._since[partition] = (done, now)
                since = now
            else:
                since = prev[1]
            if end > done and self.stall_after_s <= now - since < self.max_hold_s:
                stalled.add(f"{self.topic}:{partition}")
        for partition in list(self._since):
            if partition not in ends:
                del self._since[partition]
        became, ended = stalled - self._stalled, self._stalled - stalled
        if became:
            log.warning(
                "flows partitions stalled: records wait and no worker commits them; "
                "their keys' windows stay open until they move",
                extra={"partitions": sorted(became)},
            )
        if ended:
            log.warning(
                "flows partitions no longer hold windows (moving again, or stalled for"
                f" longer than {self.max_hold_s:.0f} s: their late records will be counted)",
                extra={"partitions": sorted(ended)},
            )
        self._stalled = frozenset(stalled)
        return self._stalled

    @property
    def stalled(self) -> frozenset[str]:
        return self._stalled


#: Reads ({partition: end offset}, {partition: committed offset or None}).
Reader = Callable[[], tuple[dict[int, int], dict[int, int | None]]]


class StallWatch:
    """A thread that keeps a :class:`StallTracker` current from Kafka.

    ``stalled()`` is what the window states call; it never blocks.
    """

    def __init__(
        self,
        tracker: StallTracker,
        reader: Reader,
        interval_s: float = 2.0,
        on_reading: Callable[[frozenset[str]], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.tracker = tracker
        self.reader = reader
        self.interval_s = interval_s
        self._on_reading = on_reading
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error_log = -ERROR_LOG_S

    def stalled(self) -> frozenset[str]:
        return self.tracker.stalled

    def poll_once(self) -> None:
        try:
            ends, committed = self.reader()
        except Exception as exc:  # the broker may be gone; keep the last answer
            if self._on_error is not None:
                self._on_error()
            now = time.monotonic()
            if now - self._last_error_log >= ERROR_LOG_S:
                self._last_error_log = now
                log.warning(
                    "cannot read the flows partitions' offsets; windows keep the last answer",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
            return
        stalled = self.tracker.observe(ends, committed, time.monotonic())
        if self._on_reading is not None:
            self._on_reading(stalled)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()


class KafkaReader:
    """A :data:`Reader` of one topic's partitions for one group, over kafka-python.

    The clients are made at the first reading (and again after one failed),
    so a broker that is down when the worker starts only delays the first
    answer.
    """

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topic: str,
        client_options: Mapping[str, Any],
        timeout_ms: int = 5000,
    ) -> None:
        self.servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
        self.group = group
        self.topic = topic
        self.client_options = dict(client_options)
        self.timeout_ms = timeout_ms
        self._clients: tuple[Any, Any] | None = None

    def _connect(self) -> tuple[Any, Any]:
        from kafka import KafkaAdminClient, KafkaConsumer

        common = dict(
            bootstrap_servers=self.servers,
            client_id=f"{self.group}-stall-watch",
            **self.client_options,
        )
        admin = KafkaAdminClient(request_timeout_ms=self.timeout_ms, **common)
        try:
            consumer = KafkaConsumer(
                enable_auto_commit=False, request_timeout_ms=self.timeout_ms + 1000, **common
            )
        except Exception:
            admin.close()
            raise
        return admin, consumer

    def __call__(self) -> tuple[dict[int, int], dict[int, int | None]]:
        from kafka import TopicPartition

        if self._clients is None:
            self._clients = self._connect()
        admin, consumer = self._clients
        try:
            parts = sorted(consumer.partitions_for_topic(self.topic) or ())
            tps = [TopicPartition(self.topic, p) for p in parts]
            if not tps:
                return {}, {}
            ends = consumer.end_offsets(tps, timeout_ms=self.timeout_ms)
            offsets = admin.list_group_offsets({self.group: tps}).get(self.group, {})
        except Exception:
            self.close()
            raise
        committed = {
            tp.partition: (om.offset if om is not None else None) for tp, om in offsets.items()
        }
        return {tp.partition: int(end) for tp, end in ends.items()}, committed

    def close(self) -> None:
        clients, self._clients = self._clients, None
        for client in clients or ():
            try:
                client.close()
            except Exception:  # closing a client of a dead broker may raise
                log.debug("stall watch client close failed", exc_info=True)
