"""Thin Faust agents: move bytes between topics and call :mod:`streams.pipeline`.

Bad messages (another schema version, a truncated batch, a malformed partial)
are counted by topic and reason, logged at a bounded rate and skipped; an
agent never stops on input.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from schemas.flowbatch import BatchError, BatchVersionError
from streams.app import WorkerApp
from streams.config import WorkerConfig
from streams.metrics import (
    BAD_MESSAGES,
    BATCH_SECONDS,
    BATCHES,
    OPEN_WINDOWS,
    RECORDS,
    REDELIVERED,
)
from streams.pipeline import CityStates, ExporterStates, FlowPipeline, PartialError

log = logging.getLogger(__name__)


def install_agents(w: WorkerApp, config: WorkerConfig, pipeline: FlowPipeline) -> None:
    """Register the flow, city and exporter agents and the idle timer on ``w.app``."""
    states = CityStates(config)
    exporter_states = ExporterStates(config)
    open_windows: dict[str, int] = {}  # city -> windows not yet closed, for OPEN_WINDOWS
    flows_name = w.flows.get_topic_name()

    @w.app.agent(w.flows, name="flows")
    async def flow_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            source = f"{msg.topic}:{msg.partition}"
            started = time.process_time()
            try:
                out = pipeline.process(event.value, source, msg.offset)
            except BatchError as exc:
                reason = "version" if isinstance(exc, BatchVersionError) else type(exc).__name__
                BAD_MESSAGES.labels(flows_name, reason).inc()
                log.warning(
                    "bad flow batch skipped",
                    extra={
                        "source": source,
                        "offset": msg.offset,
                        "reason": reason,
                        "error": str(exc),
                    },
                )
                continue
            BATCH_SECONDS.observe(time.process_time() - started)
            BATCHES.labels(flows_name).inc()
            RECORDS.labels(flows_name).inc(out.records)
            for city, data in out.voip_flows.items():
                await w.voip_flows.send(key=city, value=data, headers={"schema": b"voip-flows.v1"})
            for city, data in out.partials.items():
                await w.partials.send(key=city, value=data)
            for exporter, data in out.traffic.items():
                await w.exporter_partials.send(key=exporter, value=data)

    async def apply_keyed(
        event: Any,
        topic: str,
        table: Any,
        handler: CityStates | ExporterStates,
        out_topic: Any,
        schema: bytes,
    ) -> tuple[str, dict[str, Any]] | None:
        """Apply one partial or tick to the key's state; (key, new state) once written."""
        key = event.key
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if not key:
            BAD_MESSAGES.labels(topic, "no_key").inc()
            return None
        raw = table.get(key)
        try:
            state = json.loads(raw) if raw else None
            state, closed, outcome = handler.handle(key, state, event.value)
        except (PartialError, ValueError) as exc:
            BAD_MESSAGES.labels(topic, "partial").inc()
            log.warning(
                "bad partial skipped", extra={"key": key, "topic": topic, "error": str(exc)}
            )
            return None
        if outcome == "duplicate":
            REDELIVERED.labels(topic).inc()
            return None
        # Publish before the state that forgets the windows is written: a
        # crash in between publishes them again (same values), never not.
        for out_key, data in closed:
            await out_topic.send(key=out_key, value=data, headers={"schema": schema})
        table[key] = json.dumps(state, separators=(",", ":")).encode()
        return key, state

    @w.app.agent(w.partials, name="cities")
    async def city_agent(stream: Any) -> None:
        async for event in stream.events():
            done = await apply_keyed(
                event, w.partials_topic, w.city_state, states, w.usage, b"voip-usage.v1"
            )
            if done is not None:
                city, state = done
                open_windows[city] = len(state.get("win", ()))
                OPEN_WINDOWS.set(sum(open_windows.values()))

    @w.app.agent(w.exporter_partials, name="exporters")
    async def exporter_agent(stream: Any) -> None:
        async for event in stream.events():
            await apply_keyed(
                event,
                w.exporter_partials_topic,
                w.exporter_state,
                exporter_states,
                w.traffic,
                b"traffic.v1",
            )

    async def tick_idle(table: Any, topic: Any) -> None:
        # Tables can only be written from their agent: ask it, per idle key.
        now = int(time.time() * 1000)
        for key, raw in list(table.items()):
            try:
                state = json.loads(raw)
                touched, has_open = int(state.get("touched", now)), bool(state.get("win"))
            except (ValueError, AttributeError, TypeError):
                continue
            if has_open and now - touched >= config.idle_close_s * 1000:
                await topic.send(key=key, value=json.dumps({"tick": now}).encode())

    @w.app.timer(interval=config.close_interval_s)
    async def idle_keys() -> None:
        await tick_idle(w.city_state, w.partials)
        await tick_idle(w.exporter_state, w.exporter_partials)
