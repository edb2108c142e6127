"""Every offset of a partition reaches an agent once and in order, or is fetched again.

Why
---
The window states skip a partial whose source offset is at or below the last
one they applied from that source (:func:`voipflow.streams.aggregate.claim_source`),
which is right only if an agent processes a partition's messages in offset
order. Faust's fetcher can pass a message over around a rebalance (it records
the offsets it skipped as a gap, or drops a message whose hand-over to the
stream a flow suspension cancelled) and hand the agent the ones after it. The
skipped message was then processed never (its commit waited forever, the
stall watch held its keys' windows, nothing closed) or after the later ones
(its partials skipped as already applied): a chaos run lost one flows.v1
message, 130 flows, from every stage.

How
---
:class:`OffsetGate` keeps, per partition, the next offset the agent must see:
one past the last it processed, or the partition's committed offset if that
is further on (another worker processed up to there). A message below it was
processed already (a re-delivery: acked again and skipped); a message above
it means the next one was passed over: it is not processed, and the
partition is sought back to the missing offset, so the fetcher hands over
the missing message and everything after it again, in order (its read
offset pinned there, :class:`PinnedReadOffsets`, until the agent has it). Offsets that
the partition no longer holds (deleted by retention before anyone processed
them) cannot come back; from the partition's earliest offset on, the gate
goes on, and counts the loss.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from voipflow.streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

Verdict = Literal["next", "seen", "ahead"]

#: Seconds between two seeks back of one partition (the first is at once).
RESEEK_EVERY_S = 5.0


class PinnedReadOffsets(defaultdict[Any, "int | None"]):
    """Faust's read offsets (the last offset its fetcher handed on, per partition),
    which can be pinned at an offset that must be fetched again.

    Faust's fetcher drops a fetched message below the read offset as read
    already, and sets the read offset after every message it hands on. A
    seek back to a missing offset is therefore undone by the next message of
    the batch in hand, and the re-fetched missing message is then dropped.
    While a partition is pinned, its read offset never passes the pin.
    """

    def __init__(
        self, current: Mapping[Any, int | None] | None = None, pins: dict[Any, int] | None = None
    ) -> None:
        super().__init__(lambda: None, current or {})
        self.pins: dict[Any, int] = pins if pins is not None else {}

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        pin = self.pins.get(tp)
        if pin is not None and (offset is None or offset > pin):
            offset = pin
        super().__setitem__(tp, offset)


class OffsetGate:
    """Per partition, the next offset an agent must process."""

    def __init__(
        self, committed: Callable[[Any], int | None], pins: dict[Any, int] | None = None
    ) -> None:
        #: The consumer's committed offset of a partition (None if unknown).
        self.committed = committed
        #: The read-offset pins of the consumer (:class:`PinnedReadOffsets`).
        self.pins = pins if pins is not None else {}
        self._next: dict[Any, int] = {}
        self._reseek_at: dict[Any, float] = {}

    def expected(self, tp: Any) -> int | None:
        """The next offset to process, or None before anything is known."""
        mine = self._next.get(tp)
        theirs = self.committed(tp)
        if mine is None:
            return theirs
        if theirs is None:
            return mine
        return max(mine, theirs)

    def check(self, tp: Any, offset: int) -> Verdict:
        """``next`` to process, ``seen`` for a re-delivery, ``ahead`` past a missing offset."""
        want = self.expected(tp)
        if want is None or offset == want:
            return "next"
        return "seen" if offset < want else "ahead"

    def done(self, tp: Any, offset: int) -> None:
        """The agent finished ``offset`` (its outputs delivered, the event acked)."""
        self._next[tp] = offset + 1
        self._reseek_at.pop(tp, None)
        pin = self.pins.get(tp)
        if pin is not None and offset >= pin:
            del self.pins[tp]

    def skip_to(self, tp: Any, offset: int) -> None:
        """Offsets before ``offset`` cannot come back (the partition starts there)."""
        self._next[tp] = offset
        self._reseek_at.pop(tp, None)

    def reseek_due(self, tp: Any, now: float) -> bool:
        """True (and the next one scheduled) when ``tp`` should be sought back now."""
        if now < self._reseek_at.get(tp, 0.0):
            return False
        self._reseek_at[tp] = now + RESEEK_EVERY_S
        return True


async def hold_back(app: Any, gate: OffsetGate, event: Any, on_lost: Callable[[int], None]) -> bool:
    """Handle an ``ahead`` event: seek its partition back to the missing offset.

    Returns True if the event should be processed after all (the missing
    offsets are gone from the partition; ``on_lost`` got their number),
    False if it is to be dropped unprocessed and unacked (it comes again).
    """
    consumer = app.consumer
    msg = event.message
    tp = msg.tp
    want = gate.expected(tp)
    assert want is not None  # "ahead" needs a known next offset
    earliest = (await consumer.earliest_offsets(tp)).get(tp)
    if earliest is not None and msg.offset <= int(earliest):
        # Retention deleted [want, earliest) before anyone processed it.
        on_lost(int(earliest) - want)
        log.error(
            f"{tp.topic}:{tp.partition}: offsets {want} to {int(earliest) - 1} were deleted"
            " before they were processed; going on from the earliest one",
        )
        gate.skip_to(tp, msg.offset)
        return True
    # Faust's stream counts the event as in flight until acked; it will come
    # again, so it must not hold a rebalance up.
    consumer._unacked_messages.discard(msg)
    if gate.reseek_due(tp, time.monotonic()):
        log.warning(
            f"{tp.topic}:{tp.partition}: offset {msg.offset} arrived while {want} was expected;"
            f" fetching again from {want}",
        )
        gate.pins[tp] = want
        await consumer.seek(tp, want)
    return False


def gate_for(app: Any) -> OffsetGate:
    """An :class:`OffsetGate` over a Faust app's consumer: its committed offsets
    (set when a partition is assigned) and its read-offset pins."""

    def committed(tp: Any) -> int | None:
        offset: int | None = app.consumer._committed_offset.get(tp)
        return offset

    return OffsetGate(committed, read_offset_pins(app))


async def admit(
    app: Any,
    gate: OffsetGate,
    event: Any,
    seen: Callable[[Any], Awaitable[None]],
    metrics: WorkerMetrics,
) -> bool:
    """True if ``event`` is the next of its partition, to be processed now.

    A re-delivery goes to ``seen`` (which acks it once its first copy's work
    is acked) and is counted; a message past a missing offset is held back
    (:func:`hold_back`) and counted.
    """
    msg = event.message
    verdict = gate.check(msg.tp, msg.offset)
    if verdict == "next":
        return True
    if verdict == "seen":
        metrics.redelivered.labels(msg.topic).inc()
        await seen(event)
        return False
    metrics.refetched.labels(msg.topic).inc()
    return await hold_back(app, gate, event, metrics.deleted_unprocessed.labels(msg.topic).inc)


def pin_read_offsets(consumer: Any, pins: dict[Any, int]) -> None:
    """Give a Faust consumer (before its fetcher starts) :class:`PinnedReadOffsets`
    with ``pins`` (shared with the agents' :class:`OffsetGate`)."""
    consumer._read_offset = PinnedReadOffsets(consumer._read_offset, pins)


def read_offset_pins(app: Any) -> dict[Any, int]:
    """The pins of a :class:`~voipflow.streams.app.WorkerFaustApp` (none for another app)."""
    pins: dict[Any, int] = getattr(app, "read_offset_pins", {})
    return pins
