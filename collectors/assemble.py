"""Collect data-set byte ranges of one decode call by template, then build columns.

The decoder walks packets and sets in Python and only *notes* where the
records of each data set are (:meth:`CallBatch.add_fixed`). At the end of the
call the ranges of each compiled template plan are joined and decoded by one
``numpy.frombuffer``; per-packet values (export time, sysUptime, exporter,
domain, sampling) become per-record columns with ``numpy.repeat``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collectors.plan import RecordMeta, RecordPlan
from collectors.templates import DomainOptions
from schemas.flowbatch import FLOW_COLUMNS, FlowBatch, empty_columns, make_batch

DomainKey = tuple[bytes, int]


@dataclass(slots=True)
class Chunk:
    """Where some records of one plan came from (one data set, one packet)."""

    count: int
    exporter: bytes
    domain: int
    received_ms: int
    export_ms: int
    uptime_ms: int
    header_sampling: int  # v5 header rate, 0 otherwise


@dataclass(slots=True)
class Group:
    plan: RecordPlan
    slices: list[Any] = field(default_factory=list)  # fixed: memoryviews
    recs: list[np.ndarray] = field(default_factory=list)  # variable: decoded records
    var: list[dict[int, list[bytes]]] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)


@dataclass(slots=True)
class Built:
    batch: FlowBatch
    #: (exporter, domain) -> (records, sampling rate of the last record)
    per_domain: dict[DomainKey, tuple[int, int]]


class CallBatch:
    """The records of one ``decode`` call, grouped by plan."""

    def __init__(self) -> None:
        self.groups: dict[int, Group] = {}

    def _group(self, plan: RecordPlan) -> Group:
        g = self.groups.get(id(plan))
        if g is None:
            g = self.groups[id(plan)] = Group(plan)
        return g

    def add_fixed(self, plan: RecordPlan, data: Any, chunk: Chunk) -> None:
        g = self._group(plan)
        g.slices.append(data)
        g.chunks.append(chunk)

    def add_decoded(
        self, plan: RecordPlan, rec: np.ndarray, var: dict[int, list[bytes]], chunk: Chunk
    ) -> None:
        g = self._group(plan)
        g.recs.append(rec)
        g.var.append(var)
        g.chunks.append(chunk)

    def build(
        self,
        options: Callable[[bytes, int], DomainOptions | None],
        override: dict[bytes, int] | Any,
    ) -> Built:
        parts: list[tuple[dict[str, Any], dict[str, pa.Array], int]] = []
        per_domain: dict[DomainKey, tuple[int, int]] = {}
        for g in self.groups.values():
            if not g.chunks:
                continue
            cols, extras, n = _build_group(g, options, override, per_domain)
            if n:
                parts.append((cols, extras, n))
        return Built(_concat(parts), per_domain)


def _build_group(
    g: Group,
    options: Callable[[bytes, int], DomainOptions | None],
    override: Any,
    per_domain: dict[DomainKey, tuple[int, int]],
) -> tuple[dict[str, Any], dict[str, pa.Array], int]:
    plan = g.plan
    if g.slices:
        buf = b"".join(g.slices)
        rec = np.frombuffer(buf, dtype=plan.dtype, count=len(buf) // plan.fixed_length)
        var: dict[int, list[bytes]] | None = None
    else:
        rec = np.concatenate(g.recs) if len(g.recs) > 1 else g.recs[0]
        var = {}
        for v in g.var:
            for k, vals in v.items():
                var.setdefault(k, []).extend(vals)
    chunks = g.chunks
    counts = np.fromiter((c.count for c in chunks), dtype=np.int64, count=len(chunks))
    n = int(counts.sum())
    if n != len(rec):  # cannot happen: counts are taken from the same slices
        raise AssertionError(f"record count {len(rec)} != chunk total {n}")
    if n == 0:
        return {}, {}, 0

    # Per-chunk values; options (sampling, system init) as known at the end
    # of the call, so options data later in the same call already applies.
    opts = [options(c.exporter, c.domain) for c in chunks]
    default_rate = []
    sys_init = []
    for c, o in zip(chunks, opts, strict=True):
        rate = override.get(c.exporter, 0) if override else 0
        forced = rate
        if not rate:
            rate = c.header_sampling or (o.default_rate() if o is not None else 0) or 1
        default_rate.append((rate, forced))
        sys_init.append(o.system_init_ms if o is not None else 0)

    def rep(values: list[Any] | np.ndarray, dtype: Any) -> np.ndarray:
        arr = np.asarray(values, dtype=dtype)
        return arr.repeat(counts) if len(chunks) > 1 else np.full(n, arr[0], dtype=dtype)

    meta = RecordMeta(
        export_ms=rep([c.export_ms for c in chunks], np.int64),
        uptime_ms=rep([c.uptime_ms for c in chunks], np.int64),
        system_init_ms=rep(sys_init, np.int64),
    )
    cols, extras = plan.columns(rec, meta, var)
    out = empty_columns(n)
    for name, col in cols.items():
        if name in out:
            out[name] = col
    out["time_received_ms"] = rep([c.received_ms for c in chunks], np.uint64)
    out["export_time_ms"] = meta.export_ms
    out["exporter_addr"] = rep([c.exporter for c in chunks], "S16")
    out["observation_domain_id"] = rep([c.domain for c in chunks], np.uint32)

    # Sampling: forced override > rate in the record > selector id > default.
    rate = rep([r for r, _ in default_rate], np.uint64)
    rec_rate = cols.get("x_record_sampling")
    if rec_rate is not None:
        rate = np.where(rec_rate > 0, rec_rate, rate)
    sel = plan.selector_ids(rec)
    if sel is not None:
        rate = _selector_rates(sel, chunks, counts, opts, rate)
    forced = rep([f for _, f in default_rate], np.uint64)
    rate = np.where(forced > 0, forced, rate)
    out["sampling_rate"] = np.minimum(np.maximum(rate, 1), 0xFFFFFFFF)

    if "application_id" in cols and "application_name" not in cols:
        out["application_name"] = _app_names(cols["application_id"], chunks, counts, opts)

    # per-domain figures (records and last rate)
    ends = np.cumsum(counts)
    for c, e in zip(chunks, ends, strict=True):
        key = (c.exporter, c.domain)
        prev = per_domain.get(key, (0, 1))
        per_domain[key] = (
            prev[0] + c.count,
            int(out["sampling_rate"][e - 1]) if c.count else prev[1],
        )
    return out, extras, n


def _selector_rates(
    sel: np.ndarray,
    chunks: list[Chunk],
    counts: np.ndarray,
    opts: list[DomainOptions | None],
    rate: np.ndarray,
) -> np.ndarray:
    rate = rate.copy()
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    seen: dict[int, tuple[DomainOptions, list[int]]] = {}
    for i, o in enumerate(opts):
        if o is not None and o.samplers:
            seen.setdefault(id(o), (o, []))[1].append(i)
    for o, idxs in seen.values():
        keys = np.fromiter(o.samplers.keys(), dtype=np.uint64, count=len(o.samplers))
        vals = np.fromiter(o.samplers.values(), dtype=np.uint64, count=len(o.samplers))
        order = np.argsort(keys)
        keys, vals = keys[order], vals[order]
        for i in idxs:
            a, b = starts[i], starts[i] + counts[i]
            s = sel[a:b]
            pos = np.searchsorted(keys, s)
            pos = np.minimum(pos, len(keys) - 1)
            hit = keys[pos] == s
            rate[a:b] = np.where(hit, vals[pos], rate[a:b])
    return rate


def _app_names(
    app_ids: np.ndarray, chunks: list[Chunk], counts: np.ndarray, opts: list[DomainOptions | None]
) -> pa.Array:
    n = len(app_ids)
    names = np.zeros(n, dtype=np.int64)  # index into the dictionary; 0 = ""
    dictionary = [""]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    for i, o in enumerate(opts):
        if o is None or not o.app_names:
            continue
        a, b = int(starts[i]), int(starts[i] + counts[i])
        uniq, inv = np.unique(app_ids[a:b], return_inverse=True)
        idx = []
        for u in uniq.tolist():
            name = o.app_names.get(int(u), "")
            if name:
                dictionary.append(name)
                idx.append(len(dictionary) - 1)
            else:
                idx.append(0)
        names[a:b] = np.asarray(idx, dtype=np.int64)[inv.reshape(-1)]
    return pc.take(pa.array(dictionary, type=pa.string()), pa.array(names))


def _concat(parts: list[tuple[dict[str, Any], dict[str, pa.Array], int]]) -> FlowBatch:
    if not parts:
        return make_batch({})
    if len(parts) == 1:
        cols, extras, _ = parts[0]
        return make_batch(cols, extras)
    cols = {}
    for name in FLOW_COLUMNS:
        pieces = [p[0][name] for p in parts]
        if isinstance(pieces[0], pa.Array) or any(isinstance(x, pa.Array) for x in pieces):
            cols[name] = pa.concat_arrays(
                [x if isinstance(x, pa.Array) else pa.array(x, pa.string()) for x in pieces]
            )
        else:
            cols[name] = np.concatenate(pieces)
    names = sorted({k for p in parts for k in p[1]})
    extras = {}
    for k in names:
        extras[k] = pa.concat_arrays(
            [p[1][k] if k in p[1] else pa.nulls(p[2], pa.binary()) for p in parts]
        )
    return make_batch(cols, extras)
