"""Thin Faust agents: move bytes between topics and call :mod:`voipflow.streams.pipeline`.

Bad messages (another schema version, a truncated batch, a malformed partial)
are counted by topic and reason, logged at a bounded rate and skipped; an
agent never stops on input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from voipflow.schemas import voipflows
from voipflow.schemas.flowbatch import BatchError, BatchVersionError
from voipflow.streams.app import EXPORTER_KEY_PREFIX, WorkerApp
from voipflow.streams.commits import deliver, kill_after_commit
from voipflow.streams.config import WorkerConfig
from voipflow.streams.order import admit, gate_for
from voipflow.streams.pipeline import (
    BUNDLE_KEY,
    CityStates,
    ExporterStates,
    FlowPipeline,
    PartialError,
    bundle_by_partition,
    decode_bundle,
)
from voipflow.streams.statecache import DecodedStates, PendingStates

log = logging.getLogger(__name__)

#: Headers of every voip-flows message: the contract version its payload carries
#: (each also gets its source position, :func:`voipflows.position_headers`).
VOIP_FLOWS_HEADERS = {"schema": voipflows.SCHEMA_NAME.encode()}

#: The keyed agent writes its changed states to the table (the changelog) and
#: acks their events after this many events ...
PENDING_MAX_EVENTS = 2000
#: ... or this many seconds after the oldest. One flow batch sends one partial
#: to each of its cities, so only a burst longer than a batch's partials
#: writes a city once for several batches; half the commit interval keeps
#: the commits going.
PENDING_MAX_S = 0.5


def _city(message: tuple[str, bytes]) -> str:
    return message[0]


def install_agents(
    w: WorkerApp,
    config: WorkerConfig,
    pipeline: FlowPipeline,
    stalled: Callable[[], Collection[str]] = frozenset,
) -> None:
    """Register the flow agent, the keyed (city and exporter) agent and the idle timer.

    ``stalled`` names the flows partitions that no worker is taking
    (:class:`~voipflow.streams.stalls.StallWatch`); their keys' windows wait.
    """
    m = pipeline.metrics
    states = CityStates(config, m, stalled)
    exporter_states = ExporterStates(config, m, stalled)
    decoded = DecodedStates()  # the table's JSON values, decoded once
    open_windows: dict[str, int] = {}  # city -> windows not yet closed, for m.open_windows
    open_traffic: dict[str, int] = {}  # exporter key -> the same, for m.open_traffic_windows
    flows_name = w.flows.get_topic_name()
    # This thread's CPU only: the consumer's thread runs beside the agents.
    step_cpu = m.cpu_seconds.labels("flow_step")
    window_cpu = m.cpu_seconds.labels("window_states")
    write_cpu = m.cpu_seconds.labels("state_writes")

    batches_done = 0

    flow_gate = gate_for(w.app)

    def partition_of(key: str) -> int:
        """The partials partition the producer's partitioner gives ``key``:
        where a tick for that key goes too."""
        return int(w.app.producer.key_partition(w.partials_topic, key.encode()).partition)

    async def send_partials(parts: dict[str, bytes]) -> list[Any]:
        """Send one flow batch's partials: a bundle per partition of the
        internal topic rather than a message per key (a batch's dozen cities
        and its exporter cost a dozen produce calls, and as many events for
        the keyed agent, otherwise)."""
        if not parts:
            return []
        try:
            bundles = bundle_by_partition(parts, partition_of)
        except (TypeError, KeyError, AssertionError, ZeroDivisionError):
            # No metadata for the topic yet (the first batch after a start),
            # or metadata that lists no partitions (the partitioner divides
            # by their number): one message per key, which fetches it; same
            # partitions.
            return [await w.partials.send(key=key, value=data) for key, data in parts.items()]
        return [
            await w.partials.send(key=BUNDLE_KEY, value=data, partition=partition)
            for partition, data in bundles.items()
        ]

    @w.app.agent(w.flows, name="flows")
    async def flow_agent(stream: Any) -> None:
        nonlocal batches_done
        # Acked by hand once its outputs are delivered (see streams.commits),
        # in offset order (streams.order).
        async for event in stream.noack().events():
            # A re-delivery was processed and acked already: ack the copy too.
            if not await admit(w.app, flow_gate, event, stream.ack, m):
                continue
            msg = event.message
            source = f"{msg.topic}:{msg.partition}"
            started = time.process_time()
            thread_started = time.thread_time()
            try:
                out = pipeline.process(event.value, source, msg.offset)
            except BatchError as exc:
                reason = "version" if isinstance(exc, BatchVersionError) else type(exc).__name__
                m.bad_messages.labels(flows_name, reason).inc()
                log.warning(
                    "bad flow batch skipped",
                    extra={
                        "source": source,
                        "offset": msg.offset,
                        "reason": reason,
                        "error": str(exc),
                    },
                )
                await stream.ack(event)
                flow_gate.done(msg.tp, msg.offset)
                continue
            step_cpu.inc(time.thread_time() - thread_started)
            m.batch_seconds.observe(time.process_time() - started)
            m.batches.labels(flows_name).inc()
            m.records.labels(flows_name).inc(out.records)
            # Each carries its source position; a worker that processes this
            # input again (this one died before the commit) gives every message
            # the same one, in the same order (by city name, then chunk), and
            # the sink drops the copies (storage.sink.sources).
            pending = [
                await w.voip_flows.send(
                    key=city,
                    value=data,
                    headers={
                        **VOIP_FLOWS_HEADERS,
                        **voipflows.position_headers(msg.topic, msg.partition, msg.offset, i),
                    },
                )
                for i, (city, data) in enumerate(sorted(out.voip_flows, key=_city))
            ]
            pending += await send_partials(
                {
                    **out.partials,
                    **{EXPORTER_KEY_PREFIX + e: data for e, data in out.traffic.items()},
                }
            )
            await deliver(pending)
            await stream.ack(event)
            flow_gate.done(msg.tp, msg.offset)
            batches_done += 1
            if batches_done == config.fault_kill_after_batches:
                await kill_after_commit(w.app, batches_done)

    # The keyed agent's states applied but not yet in the table, and their
    # events; written by a burst's last event or by the timer below.
    pending = PendingStates()
    pending_lock = asyncio.Lock()
    keyed_stream: Any = None

    async def write_pending() -> None:
        """Write every pending state to the table, then ack their events (lock held)."""
        table = w.city_state
        started = time.thread_time()
        for key, state, partition in pending.items():
            raw = decoded.written(key, state)
            # ``table[key] = raw`` would take the changelog partition from the
            # current event, which need not be this key's: name it instead.
            table.send_changelog(partition, key, raw)
            table.data[key] = raw
            opened = open_traffic if key.startswith(EXPORTER_KEY_PREFIX) else open_windows
            opened[key] = len(state.get("win", ()))
        m.open_windows.set(sum(open_windows.values()))
        m.open_traffic_windows.set(sum(open_traffic.values()))
        write_cpu.inc(time.thread_time() - started)
        for event in pending.events:
            await keyed_stream.ack(event)
        pending.clear()

    async def handle_partial(event: Any) -> None:
        """Apply one partial, bundle of partials or tick to its keys' states (in
        ``pending``), publish what closed."""
        pending.add_event(event, time.monotonic())
        key = event.key
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if not key:
            m.bad_messages.labels(w.partials_topic, "no_key").inc()
            return
        if key != BUNDLE_KEY:
            await handle_key(event, key, event.value)
            return
        try:
            parts = decode_bundle(event.value)
        except PartialError as exc:
            m.bad_messages.labels(w.partials_topic, "partial").inc()
            log.warning("bad partials bundle skipped", extra={"error": str(exc)})
            return
        for part_key, msg in parts:
            await handle_key(event, part_key, msg)

    async def handle_key(event: Any, key: str, value: bytes | dict[str, Any]) -> None:
        """Apply one key's partial or tick (raw, or parsed from a bundle)."""
        exporter = key.startswith(EXPORTER_KEY_PREFIX)
        name = key[len(EXPORTER_KEY_PREFIX) :] if exporter else key
        handler: CityStates | ExporterStates = exporter_states if exporter else states
        try:
            state = pending.get(key)
            if state is None:
                state = decoded.take(key, w.city_state.get(key))
            # A bad partial raises before it changes the state (apply_partial
            # and apply_traffic check first), so a pending state stays valid.
            started = time.thread_time()
            if isinstance(value, dict):
                state, closed, outcome = handler.handle_message(name, state, value)
            else:
                state, closed, outcome = handler.handle(name, state, value)
            window_cpu.inc(time.thread_time() - started)
        except (PartialError, ValueError) as exc:
            m.bad_messages.labels(w.partials_topic, "partial").inc()
            log.warning("bad partial skipped", extra={"key": name, "error": str(exc)})
            return
        if outcome == "duplicate":
            m.redelivered.labels(w.partials_topic).inc()
            return
        # Publish before the state that forgets the windows is written: a
        # crash in between publishes them again (same values), never not.
        # "Before" means delivered: the changelog partition may live on
        # another broker than the output partition, and a record handed to
        # the producer is not yet written.
        out_topic, schema = (w.traffic, b"traffic.v1") if exporter else (w.usage, b"voip-usage.v1")
        sent = [
            await out_topic.send(key=out_key, value=data, headers={"schema": schema})
            for out_key, data in closed
        ]
        await deliver(sent)
        pending.put(key, state, event.message.partition)

    @w.app.agent(w.partials, name="cities")
    async def keyed_agent(stream: Any) -> None:
        # One agent, one table: cities and (prefixed) exporters share them.
        # Acked by hand after the table write; the commit waits for the
        # changelog record (streams.commits.DeliveredBuffer). States are
        # written once per burst: after PENDING_MAX_EVENTS events, or by the
        # timer PENDING_MAX_S after the burst's first.
        nonlocal keyed_stream
        keyed_stream = stream
        pending.clear()  # a restarted agent gets its unacked events again
        # Handled is not yet acked here (states are written in bursts), so a
        # restarted agent starts its order afresh, from the committed offsets.
        gate = gate_for(w.app)

        async def seen(event: Any) -> None:
            # Its first copy's state may still be pending: ack with it.
            pending.add_event(event, time.monotonic())

        async for event in stream.noack().events():
            if not await admit(w.app, gate, event, seen, m):
                continue
            async with pending_lock:
                await handle_partial(event)
                gate.done(event.message.tp, event.message.offset)
                if len(pending.events) >= PENDING_MAX_EVENTS:
                    await write_pending()

    @w.app.timer(interval=PENDING_MAX_S / 2)
    async def write_late_pending() -> None:
        # Also what lets a rebalance go on: it waits for these acks.
        if keyed_stream is None or pending.age(time.monotonic()) < PENDING_MAX_S:
            return
        async with pending_lock:
            if pending.events:
                await write_pending()

    @w.app.timer(interval=config.close_interval_s)
    async def idle_keys() -> None:
        # Tables can only be written from their agent: ask it, per idle key.
        now = int(time.time() * 1000)
        for key, raw in list(w.city_state.items()):
            try:
                state = decoded.peek(key, raw)
                touched, has_open = int(state.get("touched", now)), bool(state.get("win"))
            except (ValueError, AttributeError, TypeError):
                continue
            if has_open and now - touched >= config.idle_close_s * 1000:
                await w.partials.send(key=key, value=json.dumps({"tick": now}).encode())
