"""All traffic per exporter x observation domain x window: pure functions, mergeable partials.

Operators need coverage that the per-city usage cannot give: how much each
exporter sent, how much of it was placed in a city, how much was VoIP. The
design is that of :mod:`voipflow.streams.aggregate`:

1. :func:`batch_traffic` turns one enriched, classified flow batch into one
   *partial* per exporter: per (window, observation domain) the counters of
   :data:`voipflow.schemas.traffic.COUNTERS`. Vectorised: one sort over a combined
   (exporter, domain, window) key and one ``numpy.add.reduceat`` over a
   ``uint64`` matrix of all counters (exact, unlike float ``bincount`` weights).
2. :func:`apply_traffic` merges a partial into the exporter's state (a
   JSON-able dict kept in a Faust table keyed by exporter) and
   :func:`close_traffic` turns the windows the exporter's watermark has passed
   (plus the lateness allowance) into ``traffic.v1`` messages.

Idempotence: a partial carries the source position (topic, partition, offset)
of its flow batch; the state keeps the last offset applied per source
partition and skips re-deliveries (:func:`voipflow.streams.aggregate.claim_source`).

Windows are of *reception* time (``time_received_ms``, the collector's clock;
``flow_end_ms`` only where a producer left it 0), not of flow end time as the
usage windows are: this table audits exporters, so a wrong exporter clock or
a replayed capture must not hide traffic in another minute, and its minutes
line up with the exporter-health reports. The watermark is the newest
reception time seen, so windows close on event time all the same and do not
depend on how fast, or in which worker, batches were processed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from voipflow.schemas.flowbatch import FlowBatch, addr_to_text
from voipflow.schemas.traffic import COUNTERS
from voipflow.schemas.traffic import SCHEMA_NAME as TRAFFIC_SCHEMA
from voipflow.streams.aggregate import claim_source, count_if_late, pop_due_windows
from voipflow.streams.classify import Classification
from voipflow.streams.enrich import SOURCE_NONE, Enrichment
from voipflow.streams.grouping import group_codes, same_or_unique, stable_order

STATE_VERSION = 1
N_COUNTERS = len(COUNTERS)


def window_key(start_ms: int, domain: int) -> str:
    """State and partial key of one window of one observation domain."""
    return f"{int(start_ms)}|{int(domain)}"


def split_window_key(key: str) -> tuple[int, int]:
    start, _, domain = key.partition("|")
    return int(start), int(domain)


@dataclass(slots=True)
class ExporterPartial:
    """What one flow batch adds to one exporter: window key -> counters."""

    exporter: str
    max_received_ms: int
    windows: dict[str, list[int]]

    def to_json(self, source: str, offset: int) -> dict[str, Any]:
        return {
            "src": source,
            "off": int(offset),
            "exporter": self.exporter,
            "max_ms": int(self.max_received_ms),
            "win": self.windows,
        }


def record_counters(batch: FlowBatch, enr: Enrichment, result: Classification) -> list[np.ndarray]:
    """Per record, the counters of :data:`COUNTERS`: one uint64 column each."""
    u8 = np.uint64
    rate = np.maximum(batch["sampling_rate"].astype(u8), u8(1))
    # RFC 5103 biflows carry the other direction too: it is traffic the exporter saw.
    pk = batch["packets"].astype(u8) + batch["reverse_packets"].astype(u8)
    by = batch["bytes"].astype(u8) + batch["reverse_bytes"].astype(u8)
    placed = enr.home & (enr.city_source != SOURCE_NONE)
    voip = result.is_voip & enr.home
    by_rated = by * rate
    return [
        np.ones(len(batch), dtype=u8),
        pk,
        by,
        pk * rate,
        by_rated,
        placed.astype(u8),
        (enr.home & ~placed).astype(u8),
        (~enr.home).astype(u8),
        voip.astype(u8),
        np.where(voip, by_rated, u8(0)),
    ]


def group_sums(columns: list[np.ndarray], code: np.ndarray, groups: int) -> np.ndarray:
    """Exact uint64 sums of each column per group (``code``: each record's
    group, below ``groups``), as a ``(groups, len(columns))`` matrix.

    One contiguous pass per column: a batch is most often one group (one
    exporter, domain and window), and otherwise the records are put in group
    order once (a radix sort of the codes) for all columns."""
    out = np.empty((groups, len(columns)), dtype=np.uint64)
    if groups == 1:
        for c, col in enumerate(columns):
            out[0, c] = col.sum(dtype=np.uint64)
        return out
    order = stable_order(code, groups)
    starts = np.searchsorted(code[order], np.arange(groups))
    for c, col in enumerate(columns):
        out[:, c] = np.add.reduceat(col[order], starts)
    return out


def reception_ms(batch: FlowBatch) -> np.ndarray:
    """Reception time per record (flow end where a producer did not set it), int64 ms."""
    recv = batch["time_received_ms"].astype(np.int64)
    out: np.ndarray = np.where(recv > 0, recv, batch["flow_end_ms"].astype(np.int64))
    return out


def batch_traffic(
    batch: FlowBatch, enr: Enrichment, result: Classification, window_s: int
) -> dict[str, ExporterPartial]:
    """Per-exporter partial traffic counters of one batch (every record counts once)."""
    n = len(batch)
    if not n:
        return {}
    w_ms = np.int64(window_s * 1000)
    recv = reception_ms(batch)
    window = (recv // w_ms) * w_ms
    exporters, exp_idx = same_or_unique(batch["exporter_addr"])
    domains, dom_idx = same_or_unique(batch["observation_domain_id"].astype(np.int64))
    w_min = window.min()
    w_idx = (window - w_min) // w_ms
    n_w = int(w_idx.max()) + 1
    n_d = len(domains)
    key = (exp_idx.astype(np.int64) * n_d + dom_idx) * n_w + w_idx
    groups, code = group_codes(key)
    sums = group_sums(record_counters(batch, enr, result), code, len(groups))
    g_win = (groups % n_w) * w_ms + w_min
    g_dom = domains[(groups // n_w) % n_d]
    g_exp = groups // n_w // n_d
    newest = np.full(len(exporters), -1, dtype=np.int64)
    np.maximum.at(newest, exp_idx, recv)
    out: dict[str, ExporterPartial] = {}
    names = [addr_to_text(bytes(e)) for e in exporters]  # per exporter, not per record
    for g in range(len(groups)):  # per group: exporters x domains x windows
        e = int(g_exp[g])
        part = out.get(names[e])
        if part is None:
            part = out[names[e]] = ExporterPartial(names[e], int(newest[e]), {})
        part.windows[window_key(int(g_win[g]), int(g_dom[g]))] = [int(v) for v in sums[g]]
    return out


# -- exporter state (the Faust table value) -----------------------------------


def new_traffic_state() -> dict[str, Any]:
    return {
        "v": STATE_VERSION,
        "src": {},  # "topic:partition" -> last offset applied
        "wm": 0,  # watermark: newest reception time seen, ms
        "closed": 0,  # windows starting before this are closed
        "late": 0,  # records that arrived for closed windows
        "win": {},  # "start_ms|domain" -> counters (COUNTERS order)
    }


def apply_traffic(state: dict[str, Any], partial: dict[str, Any]) -> str:
    """Merge one partial (``ExporterPartial.to_json``) into an exporter state, in place.

    Returns ``"applied"``, or ``"duplicate"`` when the partial's source offset
    was applied already (an at-least-once re-delivery).
    """
    windows = partial["win"]
    for key, counters in windows.items():  # validate before anything changes
        split_window_key(key)
        if len(counters) != N_COUNTERS or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counters
        ):
            raise ValueError(f"expected {N_COUNTERS} counters, got {counters!r}")
    max_ms = int(partial["max_ms"])
    if not claim_source(state, partial):
        return "duplicate"
    state["wm"] = max(int(state["wm"]), max_ms)
    for key, counters in windows.items():
        start, _ = split_window_key(key)
        if count_if_late(state, start, counters[0]):
            continue
        have = state["win"].get(key)
        if have is None:
            state["win"][key] = list(counters)
        else:
            state["win"][key] = [a + b for a, b in zip(have, counters, strict=True)]
    return "applied"


def close_traffic(
    state: dict[str, Any],
    exporter: str,
    window_s: int,
    lateness_s: int,
    watermark_ms: int | None = None,
    produced_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Close the windows the watermark passed (end + lateness) and return their messages."""
    produced = int(time.time() * 1000) if produced_ms is None else produced_ms
    out = []
    windows = pop_due_windows(state, window_s, lateness_s, watermark_ms, split_window_key)
    for key, start, counters in windows:
        msg: dict[str, Any] = {
            "schema": TRAFFIC_SCHEMA,
            "window_start_ms": start,
            "window_s": window_s,
            "exporter": exporter,
            "observation_domain_id": split_window_key(key)[1],
        }
        msg.update(zip(COUNTERS, (int(v) for v in counters), strict=True))
        msg["produced_ms"] = produced
        out.append(msg)
    return out
