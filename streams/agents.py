"""Thin Faust agents: move bytes between topics and call :mod:`voipflow.streams.pipeline`.

Bad messages (another schema version, a truncated batch, a malformed partial)
are counted by topic and reason, logged at a bounded rate and skipped; an
agent never stops on input.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from voipflow.schemas import voipflows
from voipflow.schemas.flowbatch import BatchError, BatchVersionError
from voipflow.streams.app import EXPORTER_KEY_PREFIX, WorkerApp
from voipflow.streams.commits import deliver, kill_after_commit
from voipflow.streams.config import WorkerConfig
from voipflow.streams.pipeline import CityStates, ExporterStates, FlowPipeline, PartialError

log = logging.getLogger(__name__)

#: Headers of every voip-flows message: the contract version its payload carries.
VOIP_FLOWS_HEADERS = {"schema": voipflows.SCHEMA_NAME.encode()}


def install_agents(w: WorkerApp, config: WorkerConfig, pipeline: FlowPipeline) -> None:
    """Register the flow agent, the keyed (city and exporter) agent and the idle timer."""
    m = pipeline.metrics
    states = CityStates(config, m)
    exporter_states = ExporterStates(config, m)
    open_windows: dict[str, int] = {}  # city -> windows not yet closed, for m.open_windows
    flows_name = w.flows.get_topic_name()

    batches_done = 0

    @w.app.agent(w.flows, name="flows")
    async def flow_agent(stream: Any) -> None:
        nonlocal batches_done
        # Acked by hand once its outputs are delivered (see streams.commits).
        async for event in stream.noack().events():
            msg = event.message
            source = f"{msg.topic}:{msg.partition}"
            started = time.process_time()
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
                continue
            m.batch_seconds.observe(time.process_time() - started)
            m.batches.labels(flows_name).inc()
            m.records.labels(flows_name).inc(out.records)
            pending = [
                await w.voip_flows.send(key=city, value=data, headers=VOIP_FLOWS_HEADERS)
                for city, data in out.voip_flows
            ]
            pending += [
                await w.partials.send(key=city, value=data) for city, data in out.partials.items()
            ]
            pending += [
                await w.partials.send(key=EXPORTER_KEY_PREFIX + exporter, value=data)
                for exporter, data in out.traffic.items()
            ]
            await deliver(pending)
            await stream.ack(event)
            batches_done += 1
            if batches_done == config.fault_kill_after_batches:
                await kill_after_commit(w.app, batches_done)

    @w.app.agent(w.partials, name="cities")
    async def keyed_agent(stream: Any) -> None:
        # One agent, one table: cities and (prefixed) exporters share them.
        # Acked by hand after the table write; the commit waits for the
        # changelog record (streams.commits.DeliveredBuffer).
        async for event in stream.noack().events():
            key = event.key
            if isinstance(key, bytes):
                key = key.decode("utf-8", "replace")
            if not key:
                m.bad_messages.labels(w.partials_topic, "no_key").inc()
                await stream.ack(event)
                continue
            exporter = key.startswith(EXPORTER_KEY_PREFIX)
            name = key[len(EXPORTER_KEY_PREFIX) :] if exporter else key
            handler: CityStates | ExporterStates = exporter_states if exporter else states
            raw = w.city_state.get(key)
            try:
                state = json.loads(raw) if raw else None
                state, closed, outcome = handler.handle(name, state, event.value)
            except (PartialError, ValueError) as exc:
                m.bad_messages.labels(w.partials_topic, "partial").inc()
                log.warning("bad partial skipped", extra={"key": name, "error": str(exc)})
                await stream.ack(event)
                continue
            if outcome == "duplicate":
                m.redelivered.labels(w.partials_topic).inc()
                await stream.ack(event)
                continue
            # Publish before the state that forgets the windows is written: a
            # crash in between publishes them again (same values), never not.
            # "Before" means delivered: the changelog partition may live on
            # another broker than the output partition, and a record handed to
            # the producer is not yet written.
            out_topic, schema = (
                (w.traffic, b"traffic.v1") if exporter else (w.usage, b"voip-usage.v1")
            )
            sent = [
                await out_topic.send(key=out_key, value=data, headers={"schema": schema})
                for out_key, data in closed
            ]
            await deliver(sent)
            w.city_state[key] = json.dumps(state, separators=(",", ":")).encode()
            await stream.ack(event)
            if not exporter:
                open_windows[key] = len(state.get("win", ()))
                m.open_windows.set(sum(open_windows.values()))

    @w.app.timer(interval=config.close_interval_s)
    async def idle_keys() -> None:
        # Tables can only be written from their agent: ask it, per idle key.
        now = int(time.time() * 1000)
        for key, raw in list(w.city_state.items()):
            try:
                state = json.loads(raw)
                touched, has_open = int(state.get("touched", now)), bool(state.get("win"))
            except (ValueError, AttributeError, TypeError):
                continue
            if has_open and now - touched >= config.idle_close_s * 1000:
                await w.partials.send(key=key, value=json.dumps({"tick": now}).encode())
