"""Exact commits in the worker: an offset is committed only after everything the agents
produced for the messages before it has been delivered.

Where Faust 0.15 could commit early
-----------------------------------
Faust commits, every ``broker_commit_interval``, the offsets its streams have
acked, after ``producer.flush()``. Two things made that commit able to run
before the agent's work for those offsets had reached Kafka:

1. **Table writes.** ``table[key] = value`` sends the changelog record through
   Faust's producer buffer, and ``ProducerBuffer.flush()`` gives up after
   0.1 s without progress and returns with records still queued (or one
   still being handed to the client, which the queue size does not count).
   A commit at that moment moved the city-partials offset past a state change
   that was not in the changelog yet: a worker SIGKILLed right then came back
   with the older state and never saw the partial again.
2. **Acks on failure.** A stream acks the event it handed out when the agent
   asks for the next one, and also when the agent's loop dies by an
   exception (the generator's ``finally``); Faust then commits
   (``on_task_error``). An output that could not be delivered therefore
   committed its input anyway.

3. **Commits past an unacked head.** Faust commits the end of the first run
   of consecutive acked offsets of a partition, and checks that the run starts
   right at the committed offset only when that offset is known and not 0
   (``if committed_offset``), and then one offset too late (``min(acked) -
   committed > 1``). So the first message of a partition without a committed
   offset, or the message at the committed offset, could be passed over: if
   it was not acked (its work lost in a failover or a rebalance) while the
   ones after it were, the commit moved past it and no one ever processed it.
   A chaos run lost the first message of a flows.v1 partition (130 flows)
   this way.

The fix
-------
:class:`DeliveredBuffer` replaces the producer's buffer: it keeps the future of
every record put in it until the broker acknowledged it, and its ``flush()``
(the one Faust runs before every commit) waits for all of them, raising
:class:`DeliveryFailed` instead of letting the commit go ahead when one
failed. The agents iterate with acks off (``stream.noack()``) and ack an
event themselves only after the records it produced were delivered, so an
event whose work failed is never acked and its offset never committed.
:func:`guard_commit_head` makes the consumer commit a partition only from
its committed offset on (the partition's earliest offset when it has none):
while the message there is not acked, nothing of that partition is
committed, and whoever owns it next starts from that message
(:func:`committable_offset`).

Fault injection: ``VOIPFLOW_WORKER_FAULT_KILL_AFTER_BATCHES=N`` makes the flow
agent, after its N-th batch, force a commit and SIGKILL the worker the moment
the commit returns: the point where anything committed but not delivered
would be lost for good.

Errors::

    CommitError
     +-- DeliveryFailed    a record the agents produced was not delivered
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import types
from collections.abc import Iterable
from typing import Any

from faust.transport.producer import ProducerBuffer

log = logging.getLogger(__name__)


class CommitError(Exception):
    """Base class of the worker's commit errors."""


class DeliveryFailed(CommitError):
    """A produced record was not delivered; offsets must not be committed past it."""


class DeliveredBuffer(ProducerBuffer):
    """A producer buffer whose ``flush()`` returns only when every record it took was
    acknowledged by the broker."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.undelivered: set[asyncio.Future[Any]] = set()

    def put(self, fut: Any) -> None:
        self.undelivered.add(fut)
        fut.add_done_callback(self.undelivered.discard)
        super().put(fut)

    async def flush(self) -> None:
        await super().flush()
        while self.undelivered:
            done, _ = await asyncio.wait(list(self.undelivered), timeout=1.0)
            for fut in done:
                if fut.cancelled():
                    raise DeliveryFailed("a changelog record was cancelled before delivery")
                exc = fut.exception()
                if exc is not None:
                    raise DeliveryFailed(f"a changelog record was not delivered: {exc}") from exc


def use_delivered_buffer(producer: Any) -> None:
    """Give a Faust producer (before it starts) a :class:`DeliveredBuffer`."""
    old = producer.buffer
    new = DeliveredBuffer(loop=producer.loop, beacon=producer.beacon)
    new.app = old.app
    if hasattr(old, "threaded_producer"):
        new.threaded_producer = old.threaded_producer
    producer.buffer = new


async def deliver(pending: list[Any]) -> None:
    """Wait until every record in ``pending`` (what ``topic.send()`` returned) is
    acknowledged; raises what a failed one raised."""
    for delivery in pending:
        await delivery


async def kill_after_commit(app: Any, batches: int) -> None:
    """Fault injection: commit what is acked, then SIGKILL this process at once."""
    await app.consumer.commit()
    log.critical(
        "fault injection: killing the worker right after an offset commit",
        extra={"batches": batches},
    )
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


def committable_offset(
    acked: list[int], committed: int | None, gaps: Iterable[tuple[int, int]] = ()
) -> int | None:
    """The offset to commit for one partition, or None when nothing may be.

    ``acked`` are the acked offsets not committed yet (sorted), ``committed``
    the partition's committed offset (the next one to process), ``gaps``
    ranges ``[begin, end)`` of offsets that hold no message (compacted away,
    transaction markers). The commit covers the run of consecutive offsets
    (acked or gaps) that starts at ``committed``; if ``committed`` itself is
    neither acked nor a gap, nothing is committed.
    """
    if not acked or committed is None:
        return None
    done = set(acked)
    for begin, end in gaps:
        done.update(range(max(begin, committed), min(end, acked[-1] + 1)))
    offset = committed
    while offset in done:
        offset += 1
    return offset if offset > committed else None


#: Seconds a partition's head may stay unacked before it is logged (once per interval).
HEAD_WAIT_LOG_S = 30.0


def guard_commit_head(consumer: Any) -> None:
    """Make a Faust consumer commit each partition only from its committed offset on.

    Wraps the consumer's ``perform_seek`` (after which a partition without a
    committed offset gets its earliest offset as the start) and replaces
    ``_new_offset`` by :func:`committable_offset` without Faust's gaps.
    """
    seek = consumer.perform_seek
    waiting_since: dict[Any, float] = {}

    async def perform_seek(self: Any) -> None:
        await seek()
        unknown = [tp for tp in self.assignment() if self._committed_offset.get(tp) is None]
        if unknown:
            earliest = await self.earliest_offsets(*unknown)
            for tp in unknown:
                if self._committed_offset.get(tp) is None and earliest.get(tp) is not None:
                    self._committed_offset[tp] = int(earliest[tp])

    def guarded_new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        acked.sort()
        committed = self._committed_offset[tp]
        # No gaps: Faust records offsets its fetcher passed over as holding no
        # message, and its own rule commits across them. The worker's topics
        # have no holes (no transactions, no compaction), so a passed-over
        # offset is a message not processed yet (streams.order fetches it
        # again), never one to commit past.
        offset = committable_offset(acked, committed)
        if offset is None:
            now = time.monotonic()
            since = waiting_since.setdefault(tp, now)
            if committed is not None and now - since >= HEAD_WAIT_LOG_S:
                waiting_since[tp] = now
                log.warning(
                    f"commits of {tp.topic}:{tp.partition} wait for its unacked first message"
                    f" at offset {committed} ({len(acked)} acked after it, from {acked[0]})",
                    extra={"partition": str(tp), "offset": committed, "acked_after": len(acked)},
                )
            return None
        waiting_since.pop(tp, None)
        # What Faust's own _new_offset does with what it commits.
        covered = [o for o in acked if o < offset]
        del acked[: len(covered)]
        self._acked_index[tp].difference_update(covered)
        if self._gap[tp]:
            self._gap[tp].chop(0, offset)
        return offset

    consumer.perform_seek = types.MethodType(perform_seek, consumer)
    consumer._new_offset = types.MethodType(guarded_new_offset, consumer)
