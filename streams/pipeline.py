"""One flow batch in, everything the worker publishes out: the agents' plain core.

:class:`FlowPipeline` decodes a ``flows.v1`` message, enriches, classifies and
aggregates it, and returns what to publish: per city a ``voip-flows.v2``
sub-batch (VoIP records only, with both verdicts: app and role) and one
partial aggregate (JSON) for the internal per-city topic, and per exporter
one partial of all its traffic for the internal per-exporter topic.
:class:`CityStates` applies partials and ticks to the per-city state and
yields closed windows as ``voip-usage.v1`` messages; :class:`ExporterStates`
does the same for ``traffic.v1``. No Kafka here: the Faust agents in
:mod:`voipflow.streams.agents` only move bytes.

Errors: a message that is not a valid batch raises
:class:`voipflow.schemas.flowbatch.BatchError` (the agent counts and skips it);
a partial or tick that cannot be applied raises :class:`PartialError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.schemas import flowbatch as fb
from voipflow.schemas import voipflows as vf
from voipflow.schemas.traffic import encode_traffic, traffic_key
from voipflow.schemas.usage import encode_usage, usage_key
from voipflow.streams.aggregate import (
    apply_partial,
    batch_partials,
    close_windows,
    closing_watermark,
    new_state,
    note_source,
)
from voipflow.streams.classify import Classification, Classifier
from voipflow.streams.config import WorkerConfig
from voipflow.streams.enrich import Enricher, Enrichment
from voipflow.streams.metrics import WorkerMetrics
from voipflow.streams.providers import load_providers
from voipflow.streams.roles import ROLE_NAMES
from voipflow.streams.traffic import apply_traffic, batch_traffic, close_traffic, new_traffic_state


class PartialError(ValueError):
    """A message on the internal per-city topic that cannot be applied."""


#: Rows of one voip-flows.v2 message at most. A row takes about 110 bytes
#: before compression, so a message stays near 450 KB, well under the broker's
#: default ``message.max.bytes`` (1 MB), however many of a collector batch's
#: flows fall in one city.
VOIP_FLOWS_MAX_ROWS = 4096


@dataclass(slots=True)
class BatchOutput:
    """What one flow batch makes the worker publish, keyed by city (traffic: by exporter)."""

    #: (city, message) pairs; a city with many VoIP flows in one batch gets
    #: several messages of at most :data:`VOIP_FLOWS_MAX_ROWS` rows each.
    voip_flows: list[tuple[str, bytes]] = field(default_factory=list)
    partials: dict[str, bytes] = field(default_factory=dict)
    traffic: dict[str, bytes] = field(default_factory=dict)
    records: int = 0
    voip_records: int = 0


#: The key of a partials bundle: the partials of one flow batch whose keys
#: share a partition of the internal topic, in one message (a SOH, which no
#: city name or exporter key holds). Ticks, and partials of workers before
#: bundles, still come one key per message.
BUNDLE_KEY = "\x01bundle"


def encode_bundle(parts: list[tuple[str, bytes]]) -> bytes:
    """One message of several keys' partials (each already JSON):
    ``{"bundle": [[key, partial], ...]}``, spliced without parsing them again."""
    body = b",".join(b"[" + json.dumps(key).encode() + b"," + data + b"]" for key, data in parts)
    return b'{"bundle":[' + body + b"]}"


def decode_bundle(value: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (key, partial) pairs of a bundle; :class:`PartialError` if it is not one.

    A bundle is checked whole before any of it is applied: a broken one
    changes no state."""
    try:
        msg = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PartialError(f"not a bundle: {exc}") from exc
    items = msg.get("bundle") if isinstance(msg, dict) else None
    if not isinstance(items, list):
        raise PartialError('not a bundle: expected {"bundle": [[key, partial], ...]}')
    out = []
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not item[0]
            or not isinstance(item[1], dict)
        ):
            raise PartialError(f"not a bundle: bad part {str(item)[:80]!r}")
        out.append((item[0], item[1]))
    return out


def bundle_by_partition(
    parts: dict[str, bytes], partition_of: Callable[[str], int]
) -> dict[int, bytes]:
    """The bundles of one flow batch's partials, one per partition their keys
    hash to (``partition_of``: the producer's partitioner for a key), keys in
    order within each."""
    grouped: dict[int, list[tuple[str, bytes]]] = {}
    for key in sorted(parts):
        grouped.setdefault(partition_of(key), []).append((key, parts[key]))
    return {partition: encode_bundle(items) for partition, items in sorted(grouped.items())}


def voip_flow_batch(
    batch: fb.FlowBatch,
    enr: Enrichment,
    result: Classification,
    rows: np.ndarray,
    cities: list[tuple[str, str, str]],
    version: str,
) -> vf.VoipFlowBatch:
    """The voip-flows.v2 batch of the given rows, seen from the subscriber.

    Built once for all the rows of a flow batch (its messages are slices of
    it): every column is one gather, the geography and the verdicts'
    names dictionary decodes, so nothing runs per city or per record."""
    n = len(rows)
    city_ids = enr.city_id[rows]
    return vf.make_voip_batch(
        {
            "time_received_ms": batch["time_received_ms"][rows],
            "flow_start_ms": batch["flow_start_ms"][rows],
            "flow_end_ms": batch["flow_end_ms"][rows],
            "exporter_addr": batch["exporter_addr"][rows],
            "observation_domain_id": batch["observation_domain_id"][rows],
            "ip_version": batch["ip_version"][rows],
            "subscriber_addr": enr.subscriber_addr[rows],
            "peer_addr": enr.peer_addr[rows],
            "subscriber_port": enr.subscriber_port[rows],
            "peer_port": enr.peer_port[rows],
            "protocol": batch["protocol"][rows],
            "direction": enr.direction[rows],
            "packets": batch["packets"][rows],
            "bytes": batch["bytes"][rows],
            "reverse_packets": batch["reverse_packets"][rows],
            "reverse_bytes": batch["reverse_bytes"][rows],
            "sampling_rate": batch["sampling_rate"][rows],
            "city": _names(city_ids, tuple(c[0] for c in cities)),
            "region": _names(city_ids, tuple(c[1] for c in cities)),
            "country": _names(city_ids, tuple(c[2] for c in cities)),
            "peer_asn": enr.peer_asn[rows],
            "app": _names(result.app_code[rows], result.apps),
            "role": _names(result.role[rows], ROLE_NAMES),
            "is_voip": result.is_voip[rows].astype(np.uint8),
            "confidence": result.confidence[rows],
            "evidence": result.evidence[rows],
            "classifier_version": _repeated(version, n),
        }
    )


def _names(codes: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    """Codes -> their names as an Arrow string array (one take from the names,
    no Python per record)."""
    return pa.array(names, pa.string()).take(pa.array(codes))


def _repeated(text: str, n: int) -> pa.Array:
    """``n`` copies of ``text`` as an Arrow string array, built from its buffers
    (a column of Python strings converted one by one costs 60 times more)."""
    raw = text.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(raw))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


class FlowPipeline:
    """Enrich, classify and pre-aggregate flow batches (one instance per worker)."""

    def __init__(
        self,
        config: WorkerConfig,
        metrics: WorkerMetrics | None = None,
        arrow_compression: str | None = None,
    ) -> None:
        self.config = config
        #: Arrow IPC body compression of voip-flows.v1 messages (None: plain).
        self.arrow_compression = arrow_compression
        #: Counters of this worker (a fresh registry unless one is given).
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.enricher = Enricher(config, metrics=self.metrics)
        self.classifier: Classifier | None = None

    def start(self) -> None:
        self.enricher.start()
        self.classifier = Classifier(
            load_providers(self.config.provider_dir), self.config.voip_threshold
        )
        # Decoding a batch the first time imports pandas (pyarrow's to_numpy
        # does, lazily): about a second that would otherwise delay the first
        # batch after every start, and show in its latency.
        fb.decode(fb.encode(fb.make_batch({})))

    def stop(self) -> None:
        self.enricher.stop()

    def process(self, value: bytes, source: str, offset: int) -> BatchOutput:
        """One flows.v1 message; raises BatchError for a bad one."""
        from voipflow.streams.classify import CLASSIFIER_VERSION

        assert self.classifier is not None, "start() first"
        batch = fb.decode(value)
        out = BatchOutput(records=len(batch))
        if not len(batch):
            return out
        enr = self.enricher.enrich(batch)
        result = self.classifier.classify(batch)
        cities = [(c.name, c.region, c.country) for c in self.enricher.registry.cities]
        for city, part in batch_partials(batch, enr, result, cities, self.config.window_s).items():
            out.partials[city] = json.dumps(part.to_json(source, offset)).encode()
        for exporter, tpart in batch_traffic(batch, enr, result, self.config.window_s).items():
            out.traffic[exporter] = json.dumps(tpart.to_json(source, offset)).encode()
        voip = result.is_voip & enr.home
        out.voip_records = int(np.count_nonzero(result.is_voip))
        if out.voip_records:
            counts = np.bincount(result.app_code[result.is_voip], minlength=len(result.apps))
            for code in np.flatnonzero(counts):
                self.metrics.voip_records.labels(result.apps[code]).inc(int(counts[code]))
        if self.config.publish_voip_flows and voip.any():
            compression = self.arrow_compression
            rows = np.flatnonzero(voip)
            order = rows[np.argsort(enr.city_id[rows], kind="stable")]
            whole = voip_flow_batch(batch, enr, result, order, cities, CLASSIFIER_VERSION)
            records = whole.to_arrow()
            ids = enr.city_id[order]
            cuts = np.flatnonzero(np.diff(ids)) + 1
            ends = [*cuts.tolist(), len(order)]
            start = 0
            for end in ends:
                name = cities[int(ids[start])][0]
                for chunk in range(start, end, VOIP_FLOWS_MAX_ROWS):
                    rows_in = min(VOIP_FLOWS_MAX_ROWS, end - chunk)
                    data = vf.encode_record_batch(records.slice(chunk, rows_in), compression)
                    out.voip_flows.append((name, data))
                start = end
        return out


class _WindowStates:
    """Pure handling of one key's window state on an internal topic's messages.

    A message is a partial (applied once per source offset) or an idle tick
    ``{"tick": now_ms}``; after either, the windows the watermark passed are
    closed and returned as encoded messages with their Kafka keys. After a
    partial the watermark is the key's slowest live source
    (:func:`~voipflow.streams.aggregate.closing_watermark`); after a tick of a
    key idle for more than ``idle_close_s``, its newest event time plus the
    idle time beyond ``idle_close_s``. A source partition that is known to
    be stalled (``stalled``) holds the windows in both cases.
    """

    def __init__(
        self,
        config: WorkerConfig,
        metrics: WorkerMetrics | None = None,
        stalled: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        #: The source partitions with records that no worker is taking
        #: (:class:`~voipflow.streams.stalls.StallWatch`): they hold windows.
        self.stalled = stalled

    def _new(self) -> dict[str, Any]:
        raise NotImplementedError

    def _apply(self, state: dict[str, Any], msg: dict[str, Any]) -> str:
        raise NotImplementedError

    def _close(
        self, key: str, state: dict[str, Any], watermark: int | None, now_ms: int
    ) -> list[tuple[str, bytes]]:
        raise NotImplementedError

    def handle(
        self, key: str, state: dict[str, Any] | None, value: bytes, now_ms: int | None = None
    ) -> tuple[dict[str, Any], list[tuple[str, bytes]], str]:
        """Apply a partial or a tick; returns (new state, messages, outcome)."""
        try:
            msg = json.loads(value)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise PartialError(f"not a partial: {exc}") from exc
        return self.handle_message(key, state, msg, now_ms)

    def handle_message(
        self,
        key: str,
        state: dict[str, Any] | None,
        msg: dict[str, Any],
        now_ms: int | None = None,
    ) -> tuple[dict[str, Any], list[tuple[str, bytes]], str]:
        """:meth:`handle` of a message already parsed (a part of a bundle)."""
        state = state if state is not None else self._new()
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cfg = self.config
        watermark = None
        if "tick" in msg:
            # Idle key: from idle_close_s after its last record on, event time
            # follows the wall clock. Not from the last record itself: a key
            # whose input is stalled (a broker failover, a worker's partitions
            # waiting for the group) looks idle too, and its records must still
            # find their windows open when they come, for idle_close_s plus
            # the lateness.
            idle_ms = now_ms - int(state.get("touched", now_ms))
            idle_close_ms = int(cfg.idle_close_s * 1000)
            if idle_ms < idle_close_ms:
                return state, [], "tick"
            # Known stalled (records wait that no worker takes): not idle.
            stalled = self.stalled()
            if stalled and any(src in stalled for src in state.get("swm", ())):
                return state, [], "tick"
            watermark = int(state["wm"]) + idle_ms - idle_close_ms
            outcome = "tick"
        else:
            try:
                outcome = self._apply(state, msg)
                note_source(state, msg, now_ms)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise PartialError(f"malformed partial: {exc}") from exc
            state["touched"] = now_ms
            watermark = closing_watermark(state, now_ms, cfg.source_idle_s * 1000, self.stalled())
        return state, self._close(key, state, watermark, now_ms), outcome


class CityStates(_WindowStates):
    """Per-city usage windows -> ``voip-usage.v1`` messages."""

    def _new(self) -> dict[str, Any]:
        return new_state()

    def _apply(self, state: dict[str, Any], msg: dict[str, Any]) -> str:
        late_before = int(state["late"])
        outcome = apply_partial(state, msg)
        self.metrics.late_records.inc(int(state["late"]) - late_before)
        return outcome

    def _close(
        self, key: str, state: dict[str, Any], watermark: int | None, now_ms: int
    ) -> list[tuple[str, bytes]]:
        cfg = self.config
        closed = close_windows(
            state, key, cfg.window_s, cfg.lateness_s, watermark_ms=watermark, produced_ms=now_ms
        )
        out = [(usage_key(key, m["app"], m["window_start_ms"]), encode_usage(m)) for m in closed]
        self.metrics.windows_published.inc(len(out))
        return out


class ExporterStates(_WindowStates):
    """Per-exporter traffic windows -> ``traffic.v1`` messages."""

    def _new(self) -> dict[str, Any]:
        return new_traffic_state()

    def _apply(self, state: dict[str, Any], msg: dict[str, Any]) -> str:
        late_before = int(state["late"])
        outcome = apply_traffic(state, msg)
        self.metrics.late_traffic_records.inc(int(state["late"]) - late_before)
        return outcome

    def _close(
        self, key: str, state: dict[str, Any], watermark: int | None, now_ms: int
    ) -> list[tuple[str, bytes]]:
        cfg = self.config
        closed = close_traffic(
            state, key, cfg.window_s, cfg.lateness_s, watermark_ms=watermark, produced_ms=now_ms
        )
        out = [(traffic_key(key, m["window_start_ms"]), encode_traffic(m)) for m in closed]
        self.metrics.traffic_windows_published.inc(len(out))
        return out
