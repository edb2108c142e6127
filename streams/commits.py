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

The fix
-------
:class:`DeliveredBuffer` replaces the producer's buffer: it keeps the future of
every record put in it until the broker acknowledged it, and its ``flush()``
(the one Faust runs before every commit) waits for all of them, raising
:class:`DeliveryFailed` instead of letting the commit go ahead when one
failed. The agents iterate with acks off (``stream.noack()``) and ack an
event themselves only after the records it produced were delivered, so an
event whose work failed is never acked and its offset never committed.

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
