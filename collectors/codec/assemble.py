"""Collect data-set byte ranges of one decode call by template, then build columns.

The decoder walks the packets it decodes one by one in Python and only
*notes* where the records of each data set are (:meth:`CallBatch.add_fixed`);
plain packets decoded in bulk arrive as records already gathered, with their
per-packet values as arrays (:meth:`CallBatch.add_bulk`). At the end of the
call the ranges of each compiled template plan are joined and decoded by one
``numpy.frombuffer``, put back in the order the datagrams came in, and
per-packet values (export time, sysUptime, exporter, domain, sampling) become
per-record columns with ``numpy.repeat``. Nothing here runs per record or per
packet in Python; options (sampling, application names) are looked up once
per exporter and domain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from voipflow.collectors.codec import core
from voipflow.collectors.codec.frame import Frame, gather_records, raw_dtype
from voipflow.collectors.codec.plan import RecordMeta, RecordPlan
from voipflow.collectors.codec.templates import DomainKey, DomainOptions
from voipflow.schemas import flowbatch
from voipflow.schemas.flowbatch import FLOW_COLUMNS, FlowBatch, make_batch


@dataclass(slots=True)
class Chunk:
    """Where some records of one plan came from (one data set, one packet)."""

    exporter: bytes
    domain: int
    received_ms: int
    export_ms: int
    uptime_ms: int
    header_sampling: int  # v5 header rate, 0 otherwise


#: The per-chunk columns of a group: position of the datagram in the call,
#: records, (exporter, domain) index, receive time, export time, sysUptime,
#: v5 header sampling.
_CHUNK_COLUMNS = 7


@dataclass(slots=True)
class Group:
    plan: RecordPlan
    slices: list[Any] = field(default_factory=list)  # fixed: memoryviews
    recs: list[np.ndarray] = field(default_factory=list)  # variable: decoded records
    var: list[dict[int, list[bytes]]] = field(default_factory=list)
    #: chunks added one at a time: rows of the chunk columns
    rows: list[tuple[int, int, int, int, int, int, int]] = field(default_factory=list)
    #: fixed-length records still in the call's frame
    #: (:class:`voipflow.collectors.codec.frame.Frame`),
    #: gathered at build: rows (index, start in the frame, then the chunk
    #: columns but the first two) added one at a time, or as arrays in bulk
    frame_rows: list[tuple[int, ...]] = field(default_factory=list)
    frame_bulk: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    #: (position in the call of the first datagram that gave records, number
    #: of the add): groups are built in this order, so that the batch's rows
    #: are in the same order however the datagrams were decoded
    first: tuple[int, int] = (1 << 62, 0)


@dataclass(slots=True)
class Built:
    batch: FlowBatch
    #: (exporter, domain) -> (records, sampling rate of the last record)
    per_domain: dict[DomainKey, tuple[int, int]]


class CallBatch:
    """The records of one ``decode`` call, grouped by plan.

    Records keep the order of the datagrams they came from (``index``, set by
    the decoder before each datagram), however they were added.
    """

    def __init__(self, frame: Frame | None = None) -> None:
        #: the call's datagrams in one buffer, when decoding in bulk
        self.frame = frame
        self.groups: dict[int, Group] = {}
        self.domains: list[DomainKey] = []
        self._domain_ids: dict[DomainKey, int] = {}
        #: position in the call of the datagram being decoded
        self.index = 0
        #: gather records out of the frame with the compiled core
        self.compiled = False
        self._adds = 0

    def domain_id(self, exporter: bytes, domain: int) -> int:
        key = (exporter, domain)
        i = self._domain_ids.get(key)
        if i is None:
            i = self._domain_ids[key] = len(self.domains)
            self.domains.append(key)
        return i

    def _first(self, g: Group, index: int) -> None:
        self._adds += 1
        if index < g.first[0]:
            g.first = (index, self._adds)

    def _group(self, plan: RecordPlan) -> Group:
        g = self.groups.get(id(plan))
        if g is None:
            g = self.groups[id(plan)] = Group(plan)
        return g

    def _row(self, g: Group, chunk: Chunk, count: int) -> None:
        g.rows.append((self.index, count, self.domain_id(chunk.exporter, chunk.domain),
                       chunk.received_ms, chunk.export_ms, chunk.uptime_ms,
                       chunk.header_sampling))  # fmt: skip
        self._first(g, self.index)

    def add_fixed(self, plan: RecordPlan, data: Any, chunk: Chunk, count: int) -> None:
        g = self._group(plan)
        g.slices.append(data)
        self._row(g, chunk, count)

    def add_decoded(
        self, plan: RecordPlan, rec: np.ndarray, var: dict[int, list[bytes]], chunk: Chunk
    ) -> None:
        g = self._group(plan)
        g.recs.append(rec)
        g.var.append(var)
        self._row(g, chunk, len(rec))

    def add_frame(self, plan: RecordPlan, start: int, count: int, chunk: Chunk) -> None:
        """``count`` records of ``plan`` at ``start`` in the call's frame."""
        g = self._group(plan)
        g.frame_rows.append((self.index, start, count, self.domain_id(chunk.exporter, chunk.domain),
                             chunk.received_ms, chunk.export_ms, chunk.uptime_ms,
                             chunk.header_sampling))  # fmt: skip
        self._first(g, self.index)

    def add_frame_bulk(
        self,
        plan: RecordPlan,
        index: np.ndarray,
        starts: np.ndarray,
        counts: np.ndarray,
        domain_ids: np.ndarray,
        received_ms: np.ndarray,
        export_ms: np.ndarray,
        uptime_ms: np.ndarray,
    ) -> None:
        """Records of many datagrams (positions ``index``, ascending):
        ``counts[i]`` at ``starts[i]`` in the call's frame, from the exporter
        and domain :meth:`domain_id` numbered ``domain_ids[i]``."""
        g = self._group(plan)
        zeros = np.zeros(len(index), dtype=np.int64)
        g.frame_bulk.append(
            (index, starts, counts, domain_ids, received_ms, export_ms, uptime_ms, zeros)
        )
        if len(index):
            self._first(g, int(index[0]))

    def build(
        self,
        options: Callable[[bytes, int], DomainOptions | None],
        override: Mapping[bytes, int],
    ) -> Built:
        parts: list[tuple[dict[str, Any], dict[str, pa.Array], int]] = []
        per_domain: dict[DomainKey, tuple[int, int]] = {}
        for g in sorted(self.groups.values(), key=lambda g: g.first):
            if not g.rows and not g.frame_rows and not g.frame_bulk:
                continue
            cols, extras, n = _build_group(
                g, self.frame, self.domains, options, override, per_domain, self.compiled
            )
            if n:
                parts.append((cols, extras, n))
        return Built(concat([make_batch(c, e) for c, e, _ in parts]), per_domain)


def _records_and_chunks(
    g: Group, frame: Frame | None, compiled: bool = False
) -> tuple[np.ndarray, dict[int, list[bytes]] | None, list[np.ndarray]]:
    """A group's records and chunk columns, in the order of the datagrams."""
    plan = g.plan
    var: dict[int, list[bytes]] | None = None
    pieces: list[np.ndarray] = []
    blocks: list[tuple[np.ndarray, ...]] = []
    if g.slices:
        buf = b"".join(g.slices)
        pieces.append(np.frombuffer(buf, dtype=plan.dtype, count=len(buf) // plan.fixed_length))
    elif g.recs:
        pieces.append(np.concatenate(g.recs) if len(g.recs) > 1 else g.recs[0])
        var = {}
        for v in g.var:
            for k, vals in v.items():
                var.setdefault(k, []).extend(vals)
    if g.rows:
        blocks.append(tuple(np.array(g.rows, dtype=np.int64).T))
    if g.frame_rows or g.frame_bulk:
        assert frame is not None
        parts = list(g.frame_bulk)
        if g.frame_rows:
            parts.insert(0, tuple(np.array(g.frame_rows, dtype=np.int64).T))
        cols = [_join([p[i] for p in parts]) for i in range(_CHUNK_COLUMNS + 1)]
        index = cols[0]
        if np.any(index[1:] < index[:-1]):
            # Added out of datagram order (exporters are decoded one after
            # the other; one by one and in bulk interleave): sort the chunks,
            # not the records, and gather the records in that order (stable,
            # so the sets of one datagram keep theirs).
            order = np.argsort(index, kind="stable")
            cols = [c[order] for c in cols]
        if compiled:
            pieces.append(core.gather(frame.buf, cols[1], cols[2], plan.dtype))
        else:
            pieces.append(gather_records(frame, cols[1], cols[2], plan.dtype))
        blocks.append((cols[0], *cols[2:]))
    chunks = [_join([b[i] for b in blocks]) for i in range(_CHUNK_COLUMNS)]
    rec = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    index, counts = chunks[0], chunks[1]
    if np.any(index[1:] < index[:-1]):
        # Records in the frame and elsewhere (held data released) interleave,
        # or exporters sharing the plan were decoded one after the other:
        # restore the datagrams' order.
        order = np.argsort(index, kind="stable")
        first = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        sorted_counts = counts[order]
        new_first = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(sorted_counts[:-1], out=new_first[1:])
        at = np.repeat(first[order] - new_first, sorted_counts)
        raw = rec.view(raw_dtype(rec.dtype))  # copied as plain bytes: much faster
        rec = raw[at + np.arange(len(at), dtype=np.int64)].view(rec.dtype)
        chunks = [c[order] for c in chunks]
    return rec, var, chunks


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _build_group(
    g: Group,
    frame: Frame | None,
    domains: list[DomainKey],
    options: Callable[[bytes, int], DomainOptions | None],
    override: Mapping[bytes, int],
    per_domain: dict[DomainKey, tuple[int, int]],
    compiled: bool = False,
) -> tuple[dict[str, Any], dict[str, pa.Array], int]:
    plan = g.plan
    rec, var, chunk_columns = _records_and_chunks(g, frame, compiled)
    _, counts, dom, received, export, uptime, hsampling = chunk_columns
    n = int(counts.sum())
    if n != len(rec):  # cannot happen: counts are taken from the same slices
        raise AssertionError(f"record count {len(rec)} != chunk total {n}")
    if n == 0:
        return {}, {}, 0

    # Per (exporter, domain) values; options (sampling, system init) as known
    # at the end of the call, so options data later in the same call applies.
    present = [int(dom[0])] if dom.min() == dom.max() else np.unique(dom).tolist()
    opts: dict[int, DomainOptions] = {}
    d_default = np.zeros(len(domains), dtype=np.int64)
    d_forced = np.zeros(len(domains), dtype=np.int64)
    d_init = np.zeros(len(domains), dtype=np.int64)
    for d in present:
        exporter, domain = domains[d]
        o = options(exporter, domain)
        if o is not None:
            opts[d] = o
            d_default[d] = o.default_rate()
            d_init[d] = o.system_init_ms
        if override:
            d_forced[d] = override.get(exporter, 0)
    d_exporter = np.array([k[0] for k in domains], dtype="S16")
    d_domain = np.fromiter((k[1] for k in domains), dtype=np.int64, count=len(domains))
    single = len(present) == 1 and len(counts) > 0

    def rep(per_chunk: np.ndarray, dtype: Any) -> np.ndarray:
        if len(counts) == 1:
            return np.full(n, per_chunk[0], dtype=dtype)
        return per_chunk.astype(dtype, copy=False).repeat(counts)

    def per_domain_col(values: np.ndarray, dtype: Any) -> np.ndarray:
        if single:
            return np.full(n, values[present[0]], dtype=dtype)
        return values[dom].astype(dtype, copy=False).repeat(counts)

    meta = RecordMeta(
        export_ms=rep(export, np.int64),
        uptime_ms=rep(uptime, np.int64),
        system_init_ms=per_domain_col(d_init, np.int64),
    )
    cols, extras = plan.columns(rec, meta, var, compiled)
    # Core columns the template has; make_batch fills the others with defaults.
    out = {name: col for name, col in cols.items() if name in FLOW_COLUMNS}
    out["time_received_ms"] = rep(received, np.uint64)
    out["export_time_ms"] = meta.export_ms
    out["exporter_addr"] = per_domain_col(d_exporter, "S16")
    out["observation_domain_id"] = per_domain_col(d_domain, np.uint32)

    # Sampling: forced override > rate in the record > selector id > v5
    # header > announced default > 1.
    chunk_rate = np.where(hsampling > 0, hsampling, d_default[dom])
    rate = rep(np.where(chunk_rate > 0, chunk_rate, 1), np.uint64)
    rec_rate = cols.get("x_record_sampling")
    if rec_rate is not None:
        rate = np.where(rec_rate > 0, rec_rate, rate)
    dom_rec = None if single else dom.repeat(counts)
    sel = plan.selector_ids(rec)
    if sel is not None:
        rate = _selector_rates(sel, dom_rec, present[0], opts, rate)
    forced = d_forced[dom]
    if forced.any():
        rate = np.where(rep(forced, np.uint64) > 0, rep(forced, np.uint64), rate)
    out["sampling_rate"] = np.minimum(np.maximum(rate, 1), 0xFFFFFFFF)

    if "application_id" in cols and "application_name" not in cols:
        out["application_name"] = _app_names(cols["application_id"], dom_rec, opts)

    # per-domain figures (records and the rate of the last record)
    rates = out["sampling_rate"]
    if single:  # the usual case: every record is the one domain's (n > 0)
        key = domains[present[0]]
        per_domain[key] = (per_domain.get(key, (0, 1))[0] + n, int(rates[n - 1]))
        return out, extras, n
    ends = np.cumsum(counts)
    nonzero = np.flatnonzero(counts > 0)
    records = np.bincount(dom, weights=counts, minlength=len(domains))
    last = np.full(len(domains), -1, dtype=np.int64)
    np.maximum.at(last, dom[nonzero], nonzero)
    for d in present:
        key = domains[d]
        prev = per_domain.get(key, (0, 1))
        at = int(last[d])
        rate_last = int(rates[ends[at] - 1]) if at >= 0 else prev[1]
        per_domain[key] = (prev[0] + int(records[d]), rate_last)
    return out, extras, n


class _DomainRows:
    """Record positions per domain index, grouped once (not one scan per domain)."""

    def __init__(self, dom_rec: np.ndarray | None, n: int) -> None:
        self.dom_rec = dom_rec
        self.n = n
        self._order: np.ndarray | None = None
        self._bounds: np.ndarray | None = None

    def rows(self, d: int) -> np.ndarray | slice:
        if self.dom_rec is None:
            return slice(0, self.n)
        if self._order is None:
            self._order = np.argsort(self.dom_rec, kind="stable")
            self._bounds = np.searchsorted(
                self.dom_rec[self._order], np.arange(int(self.dom_rec.max()) + 2)
            )
        assert self._bounds is not None
        if d + 1 >= len(self._bounds):
            return self._order[:0]
        return self._order[self._bounds[d] : self._bounds[d + 1]]


def _selector_rates(
    sel: np.ndarray,
    dom_rec: np.ndarray | None,
    single: int,
    opts: dict[int, DomainOptions],
    rate: np.ndarray,
) -> np.ndarray:
    """Rates of the samplers the records name (``selectorId`` / ``samplerId``).

    One sorted table of (domain, sampler) -> rate for all domains and one
    ``searchsorted`` for all records, when the ids fit 48 bits (as they do
    but in contrived input); else per domain.
    """
    tables = [(d, o.samplers) for d, o in opts.items() if o.samplers]
    if not tables:
        return rate
    t_dom = np.concatenate([np.full(len(m), d, dtype=np.uint64) for d, m in tables])
    t_sel = np.concatenate([np.fromiter(m.keys(), np.uint64, len(m)) for _, m in tables])
    t_val = np.concatenate([np.fromiter(m.values(), np.uint64, len(m)) for _, m in tables])
    r_dom = dom_rec.astype(np.uint64) if dom_rec is not None else np.uint64(single)
    limit = np.uint64(1 << 48)
    if len(sel) and sel.max() < limit and t_sel.max() < limit and t_dom.max() < (1 << 16):
        t_key = (t_dom << np.uint64(48)) | t_sel
        order = np.argsort(t_key)
        t_key, t_val = t_key[order], t_val[order]
        r_key = (r_dom << np.uint64(48)) | sel.astype(np.uint64)
        pos = np.minimum(np.searchsorted(t_key, r_key), len(t_key) - 1)
        return np.where(t_key[pos] == r_key, t_val[pos], rate)
    rate = rate.copy()
    groups = _DomainRows(dom_rec, len(sel))
    for d, samplers in tables:
        keys = np.fromiter(samplers.keys(), dtype=np.uint64, count=len(samplers))
        vals = np.fromiter(samplers.values(), dtype=np.uint64, count=len(samplers))
        order = np.argsort(keys)
        keys, vals = keys[order], vals[order]
        rows = groups.rows(d)
        s = sel[rows]
        pos = np.minimum(np.searchsorted(keys, s), len(keys) - 1)
        rate[rows] = np.where(keys[pos] == s, vals[pos], rate[rows])
    return rate


def _app_names(
    app_ids: np.ndarray, dom_rec: np.ndarray | None, opts: dict[int, DomainOptions]
) -> pa.Array:
    n = len(app_ids)
    names = np.zeros(n, dtype=np.int64)  # index into the dictionary; 0 = ""
    dictionary = [""]
    groups = _DomainRows(dom_rec, n)
    for d, o in opts.items():
        if not o.app_names:
            continue
        rows = groups.rows(d)
        uniq, inv = np.unique(app_ids[rows], return_inverse=True)
        idx = []
        for u in uniq.tolist():
            name = o.app_names.get(int(u), "")
            if name:
                dictionary.append(name)
                idx.append(len(dictionary) - 1)
            else:
                idx.append(0)
        names[rows] = np.asarray(idx, dtype=np.int64)[inv.reshape(-1)]
    return pc.take(pa.array(dictionary, type=pa.string()), pa.array(names))


def concat(batches: Sequence[FlowBatch]) -> FlowBatch:
    """One batch with the rows of all ``batches`` in order.

    An extra column missing from some batches is filled with nulls there; if
    batches disagree on an extra column's type, the column is cast to the
    first batch's type, or left out where that fails (extras are optional by
    contract).
    """
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return flowbatch.make_batch({})
    if len(batches) == 1:
        return batches[0]
    cols: dict[str, Any] = {}
    for name in flowbatch.FLOW_COLUMNS:
        parts = [b.columns[name] for b in batches]
        if isinstance(parts[0], pa.Array):
            cols[name] = pa.concat_arrays(
                [p if isinstance(p, pa.Array) else pa.array(p) for p in parts]
            )
        else:
            cols[name] = np.concatenate(parts)
    n = sum(b.num_rows for b in batches)
    extras: dict[str, pa.Array] = {}
    names = dict.fromkeys(k for b in batches for k in b.extras)
    for name in names:
        typ = next(b.extras[name].type for b in batches if name in b.extras)
        pieces = []
        try:
            for b in batches:
                arr = b.extras.get(name)
                if arr is None:
                    pieces.append(pa.nulls(b.num_rows, typ))
                else:
                    pieces.append(arr if arr.type == typ else arr.cast(typ))
            extras[name] = pa.concat_arrays(pieces)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return FlowBatch(cols, n, extras)
