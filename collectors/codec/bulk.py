"""The decoder's bulk path: whole decode calls with numpy, not packet by packet.

Most export packets of a busy exporter are *plain*: one header and one data
set that fills the rest of the packet (softflowd, pmacct and routers put
templates into separate packets or only every few packets). For those the
decoder needs no per-packet Python: this module reads the headers of every
datagram of a decode call with one numpy gather and, once the decoder has
found the template of a group of plain datagrams, gathers all their records
into one structured array with another.

Both gathers index the call's bytes at every byte offset
(:func:`voipflow.collectors.codec.frame.every_offset`).

Layouts read (RFC 7011 3.1 and 3.3.2; RFC 3954 5.1 and 5.2)::

    IPFIX  version length exportTime sequence domain | setId setLength | records
    v9     version count sysUptime unixSecs sequence sourceId | flowsetId length | records
    v5     ... engine type, engine id at byte 20, 21 (only the domain is read here)

Plain means: IPFIX with the header's length equal to the datagram's, NetFlow
v9 with any count, and after the header only data sets of one set id >= 256
that exactly fill the rest of the datagram. One big set (routers, nprobe) or
several small ones (softflowd, host exporters: 7 sets of 2 records) are the
same to the bulk path: the sets of every datagram are walked with numpy, one
step per set *position* over all datagrams at once (:func:`read_heads`), and
every set is gathered as a chunk of its datagram. Everything else (template
or options sets, sets of several templates, stray bytes, truncation) is
decoded one packet at a time by the decoder as before, so errors keep their
reasons.
The vectorised helpers raise nothing for bad input (lengths are checked
before use); :func:`decode_bulk` is called by
:meth:`voipflow.collectors.codec.decoder.Decoder.decode_frame`, which catches and counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voipflow.collectors.codec import core
from voipflow.collectors.codec.call import DecodeCall, DecoderConfig
from voipflow.collectors.codec.frame import HEAD, Frame, every_offset
from voipflow.collectors.codec.plan import RecordPlan, plan_for
from voipflow.collectors.codec.sequence import (
    MOD,
    MODES,
    SeqOutcome,
    SequenceLog,
    SequenceTracker,
    mode_step,
)
from voipflow.collectors.codec.templates import DomainKey, Template, TemplateCache


class DecoderLike(Protocol):
    """What the bulk path uses of :class:`voipflow.collectors.codec.decoder.Decoder`
    (which calls :func:`decode_bulk`; a protocol, so this module need not
    import the decoder back)."""

    templates: TemplateCache
    config: DecoderConfig

    def decode_one(
        self,
        call: DecodeCall,
        mv: memoryview,
        exporter: bytes,
        received_ms: int,
        templates: bool = True,
    ) -> None: ...

    def decode_template_sets(
        self,
        call: DecodeCall,
        mv: memoryview,
        exporter: bytes,
        domain: int,
        version: int,
        received_ms: int,
        sets: list[list[int]],
    ) -> None: ...

    def announced_again(
        self, exporter: bytes, domain: int, version: int, raw: bytes, received_ms: int
    ) -> bool: ...

    def tracker(self, key: DomainKey) -> SequenceTracker: ...


#: IPFIX header (16) and v9 header (20), each followed by a 4-byte set header.
IPFIX_DATA = 20
V9_DATA = 24

_HEAD = np.dtype((np.void, HEAD))
_SET = np.dtype(">u4")  # set id << 16 | set length
#: Set positions walked per datagram; a datagram with more sets (at most
#: 1,500 / 4 in theory, never in practice) is decoded one by one.
MAX_SETS = 64
_IPFIX = np.dtype(
    {
        "names": ["version", "length", "secs", "seq", "domain", "set_id", "set_len"],
        "formats": [">u2", ">u2", ">u4", ">u4", ">u4", ">u2", ">u2"],
        "offsets": [0, 2, 4, 8, 12, 16, 18],
        "itemsize": HEAD,
    }
)
_V9 = np.dtype(
    {
        "names": ["uptime", "secs", "seq", "domain", "set_id", "set_len"],
        "formats": [">u4", ">u4", ">u4", ">u4", ">u2", ">u2"],
        "offsets": [4, 8, 12, 16, 20, 22],
        "itemsize": HEAD,
    }
)


@dataclass(slots=True)
class Heads:
    """Header fields of every datagram of a frame (meaningful where ``plain``)."""

    version: np.ndarray  # int64
    domain: np.ndarray  # int64: observation domain / source id / v5 engine; 0 when unreadable
    plain: np.ndarray  # bool: one data set filling the packet (see the module doc)
    set_id: np.ndarray  # int64
    seq: np.ndarray  # int64
    export_ms: np.ndarray  # int64
    uptime_ms: np.ndarray  # int64: v9 sysUptime, -1 for IPFIX
    first_set: np.ndarray  # int64: its first row in the set table (meaningful where plain)
    nsets: np.ndarray  # int64: its data sets (where plain)
    set_start: np.ndarray  # int64 per set: offset in the frame of the set's first record
    set_len: np.ndarray  # int64 per set: bytes of records (and padding) in the set
    #: plain but for template sets in front of its data sets (compiled core
    #: only): those are applied at its place in the call, its data in bulk
    templated: np.ndarray | None = None  # bool
    #: its template sets: rows (set id, start, end in the frame) from first_tset on
    tsets: np.ndarray | None = None
    first_tset: np.ndarray | None = None  # int64
    ntsets: np.ndarray | None = None  # int64


def read_heads(frame: Frame, compiled: bool = False) -> Heads:
    """Every datagram's header and sets, with the compiled core or with numpy."""
    if compiled and core.AVAILABLE:
        return _compiled_heads(frame)
    return _numpy_heads(frame)


def _compiled_heads(frame: Frame) -> Heads:
    h, data, tsets = core.walk(frame.buf, frame.offsets, frame.lengths)
    kind = h[:, core.H_KIND]
    return Heads(
        version=h[:, core.H_VERSION],
        domain=h[:, core.H_DOMAIN],
        plain=kind != core.K_ONE,
        set_id=h[:, core.H_SET_ID],
        seq=h[:, core.H_SEQ],
        export_ms=h[:, core.H_EXPORT_MS],
        uptime_ms=h[:, core.H_UPTIME_MS],
        first_set=h[:, core.H_FIRST_SET],
        nsets=h[:, core.H_NSETS],
        set_start=data[:, 0],
        set_len=data[:, 1],
        templated=kind == core.K_TEMPLATED,
        tsets=tsets,
        first_tset=h[:, core.H_FIRST_TSET],
        ntsets=h[:, core.H_NTSETS],
    )


def _numpy_heads(frame: Frame) -> Heads:
    """Every datagram's header, read with one gather (no Python per datagram)."""
    raw = every_offset(frame.buf, _HEAD)[frame.offsets]
    ipfix = raw.view(_IPFIX)
    v9 = raw.view(_V9)
    size = frame.lengths
    version = ipfix["version"].astype(np.int64)
    is10 = (version == 10) & (size >= 16)
    is9 = (version == 9) & (size >= 20)
    is5 = (version == 5) & (size >= 22)
    set_id = np.where(is10, ipfix["set_id"], v9["set_id"]).astype(np.int64)
    set_len = np.where(is10, ipfix["set_len"], v9["set_len"]).astype(np.int64)
    domain = np.where(is10, ipfix["domain"], np.where(is9, v9["domain"], 0)).astype(np.int64)
    # v5: engine type and id are bytes 20 and 21, where v9 has its flowset id.
    domain = np.where(is5, v9["set_id"].astype(np.int64), domain)
    candidate = (is10 & (size >= IPFIX_DATA) & (ipfix["length"] == size)) | (
        is9 & (size >= V9_DATA)
    )
    candidate &= (set_id >= 256) & (set_len >= 4)
    plain, first_set, nsets, set_start, set_len = _walk_sets(
        frame, np.where(is10, 16, 20) + frame.offsets, set_id, candidate
    )
    secs = np.where(is10, ipfix["secs"], v9["secs"]).astype(np.int64)
    return Heads(
        version=version,
        domain=domain,
        plain=plain,
        set_id=set_id,
        seq=np.where(is10, ipfix["seq"], v9["seq"]).astype(np.int64),
        export_ms=secs * 1000,
        uptime_ms=np.where(is10, -1, v9["uptime"].astype(np.int64)),
        first_set=first_set,
        nsets=nsets,
        set_start=set_start,
        set_len=set_len,
    )


def _walk_sets(
    frame: Frame, cur: np.ndarray, set_id: np.ndarray, candidate: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The data sets of every candidate datagram, one numpy step per set
    position (not per datagram or set): plain where they are all data sets
    of the first one's id filling the datagram exactly.

    Returns plain, first_set, nsets (per datagram) and set_start, set_len
    (per set, the sets of one datagram together and in order). Reads only
    4 bytes at positions at least 4 before the datagram's end.
    """
    n = len(frame)
    end = frame.offsets + frame.lengths
    sets = every_offset(frame.buf, _SET)
    cur = cur.astype(np.int64, copy=True)
    rows_d: list[np.ndarray] = []
    rows_h: list[np.ndarray] = []
    rows_at: list[np.ndarray] = []
    active = np.flatnonzero(candidate)
    # The walk only steps (a set shorter than its header counts as 4 bytes,
    # so it ends); whether the sets are right is checked once, after it.
    for _ in range(MAX_SETS):
        if not len(active):
            break
        at = cur[active]
        hdr = sets[at].astype(np.int64)
        rows_d.append(active)
        rows_h.append(hdr)
        rows_at.append(at)
        at = at + np.maximum(hdr & 0xFFFF, 4)
        cur[active] = at
        active = active[end[active] - at >= 4]
    if not rows_d:
        empty = np.zeros(0, dtype=np.int64)
        return (
            np.zeros(n, dtype=bool),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, np.int64),
            empty,
            empty,
        )
    d = np.concatenate(rows_d)
    hdr = np.concatenate(rows_h)
    at = np.concatenate(rows_at)
    slen = hdr & 0xFFFF
    bad = (slen < 4) | (at + slen > end[d]) | ((hdr >> 16) != set_id[d])
    # plain: every set good and the last one ends where the datagram does
    plain = candidate & (cur == end)
    plain[d[bad]] = False
    order = np.argsort(d, kind="stable")  # each datagram's sets together, in order
    nsets = np.bincount(d, minlength=n).astype(np.int64)
    first_set = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(nsets[:-1], out=first_set[1:])
    return plain, first_set, nsets, (at + 4)[order], (slen - 4)[order]


# -- the bulk path of Decoder.decode ---------------------------------------------


def decode_bulk(
    dec: DecoderLike,
    call: DecodeCall,
    frame: Frame,
    exporter_of: Sequence[bytes],
    received: np.ndarray,
) -> None:
    """Plain packets (one data set each) of a known fixed-length template in
    whole groups, the others one by one; the same result as one by one.

    Exporters and domains do not share state. Those whose packets in the
    call are all plain ("clean", the usual case) cannot change their
    templates within the call: their packets are bound to their templates'
    plans all at once, with a dictionary look-up per exporter, domain and
    template, not per packet. The others are taken one at a time
    (:func:`_domain`): runs of plain packets between packets decoded one
    by one. Records of fixed-length templates stay in the frame until the
    batch is built, where each plan's are gathered in datagram order by one
    fancy index. Sequence numbers are logged and checked at the end for all
    exporters and domains at once (:func:`_sequences`).

    Unlike one by one, held data sets of different exporters may be
    evicted in another order when the held bounds overflow within a call.
    """
    n = len(frame)
    call.batch.frame = frame
    compiled = dec.config.compiled_core and core.AVAILABLE
    call.batch.compiled = compiled
    heads = read_heads(frame, compiled)
    # numbered in order of appearance, with C-speed dict and map calls
    ids = {e: i for i, e in enumerate(dict.fromkeys(exporter_of))}
    exp_idx = np.fromiter(map(ids.__getitem__, exporter_of), np.int64, n)
    exporters = list(ids)
    call.seqlog = SequenceLog(n)
    datagrams = _Datagrams(exporter_of, received, heads)
    ukeys, dom = np.unique(exp_idx * (1 << 32) + heads.domain, return_inverse=True)
    dom = dom.reshape(-1)
    keys = [(exporters[k >> 32], k & 0xFFFFFFFF) for k in ukeys.tolist()]
    mixed = np.zeros(len(keys), dtype=bool)
    mixed[dom[~heads.plain]] = True
    if heads.templated is not None and heads.templated.any():
        _settle_refreshes(dec, frame, heads, exporter_of, received, dom, mixed)
    if heads.templated is not None:  # templates may change within the call
        mixed[dom[heads.templated]] = True
    bound: list[tuple[RecordPlan, np.ndarray]] = []
    # Exporters and domains with packets to decode one by one: each on its own.
    if mixed.any():
        sel = np.flatnonzero(mixed[dom])
        sel = sel[np.argsort(dom[sel], kind="stable")]
        bounds = np.flatnonzero(np.diff(dom[sel])) + 1
        runs: Runs = {}
        for at in np.split(sel, bounds):
            _domain(dec, call, datagrams, frame, heads, at, keys[int(dom[at[0]])], runs)
        # a plan may be shared by several of these exporters: datagram order
        bound.extend((plan, np.sort(np.concatenate(parts))) for plan, parts in runs.values())
    # The clean ones: all at once.
    clean = np.flatnonzero(~mixed[dom])
    if len(clean):
        which = (heads.version[clean] << 16) | heads.set_id[clean]
        ukt, inv = np.unique(dom[clean] * (1 << 32) + which, return_inverse=True)
        plan_of = np.full(len(ukt), -1, dtype=np.int64)
        plans: list[RecordPlan] = []
        plan_ids: dict[int, int] = {}
        for j, k in enumerate(ukt.tolist()):
            exporter, domain = keys[k >> 32]
            t = k & 0xFFFFFFFF
            plan = _plan(dec, dec.templates.get((exporter, domain, t & 0xFFFF, t >> 16)))
            if plan is not None:
                plan_of[j] = plan_ids.setdefault(id(plan), len(plans))
                if plan_of[j] == len(plans):
                    plans.append(plan)
        per = plan_of[inv.reshape(-1)]
        # Unknown template (held), options or variable-length: one by one, in order.
        _one_by_one(dec, call, datagrams, frame, clean[per < 0])
        if len(plans) == 1 and per.min() == 0:
            bound.append((plans[0], clean))
        else:
            bound.extend((plan, clean[per == p]) for p, plan in enumerate(plans))
    call.frame_at = -1
    if bound:
        _add_bound(call, frame, heads, received, dom, keys, bound)
    _sequences(dec, call, dom, keys)


def _add_bound(
    call: DecodeCall,
    frame: Frame,
    heads: Heads,
    received: np.ndarray,
    dom: np.ndarray,
    keys: list[DomainKey],
    bound: list[tuple[RecordPlan, np.ndarray]],
) -> None:
    """Plain packets bound to plans: to the batch, their statistics and sequence log."""
    batch_dom = np.array([call.batch.domain_id(*k) for k in keys], dtype=np.int64)
    log = call.seqlog
    assert log is not None
    for plan, at in bound:
        # every set of these datagrams is a chunk of its datagram
        ns = heads.nsets[at]
        if bool((ns == 1).all()):
            rows, index = heads.first_set[at], at
        else:
            total = int(ns.sum())
            rows = np.repeat(heads.first_set[at] - np.cumsum(ns) + ns, ns)
            rows += np.arange(total, dtype=np.int64)
            index = np.repeat(at, ns)
        set_counts = heads.set_len[rows] // plan.fixed_length
        call.batch.add_frame_bulk(
            plan, index, heads.set_start[rows], set_counts, batch_dom[dom[index]],
            received[index], heads.export_ms[index], heads.uptime_ms[index],
        )  # fmt: skip
        if index is at:
            counts = set_counts
        else:
            counts = np.bincount(np.repeat(np.arange(len(at)), ns), weights=set_counts)
            counts = counts.astype(np.int64)
        v9 = heads.uptime_ms[at] >= 0
        log.seq[at] = heads.seq[at]
        log.units[at] = log.flows[at] = np.where(v9, 1, counts)
        log.boot[at] = heads.export_ms[at] - heads.uptime_ms[at]
        log.has_boot[at] = v9
        log.seen[at] = True
    every = np.concatenate([at for _, at in bound]) if len(bound) > 1 else bound[0][1]
    d = dom[every]
    packets = np.bincount(d, minlength=len(keys))
    octets = np.bincount(d, weights=frame.lengths[every], minlength=len(keys))
    # the last bound packet of each exporter and domain (for its version)
    order = np.lexsort((every, d))
    ends = np.append(np.flatnonzero(np.diff(d[order])), len(order) - 1)
    last = np.full(len(keys), -1, dtype=np.int64)
    last[d[order[ends]]] = every[order[ends]]
    for k in np.flatnonzero(packets).tolist():
        key = keys[k]
        st = call.stats_for(*key)
        st.packets += int(packets[k])
        st.bytes += int(octets[k])
        i = int(last[k])
        if i >= call.version_at.get(key, -1):
            call.version_at[key] = i
            st.netflow_version = int(heads.version[i])


def _sequences(dec: DecoderLike, call: DecodeCall, dom: np.ndarray, keys: list[DomainKey]) -> None:
    """Sequence numbers of every exporter and domain, in arrival order.

    Every packet is checked against the one before it (the tracker's last
    for the first) under each way of counting (:data:`voipflow.collectors.codec.sequence.MODES`)
    with numpy, for all exporters and domains at once; one whose packets all
    follow on under a way its tracker still allows is settled in O(1), the
    others packet by packet (:meth:`SequenceTracker.observe_many`).
    """
    log = call.seqlog
    assert log is not None
    seen = np.flatnonzero(log.seen)
    if not len(seen):
        return
    if len(keys) == 1:
        _settle(call, keys[0], log.replay(dec.tracker(keys[0]), seen))
        return
    at = seen[np.argsort(dom[seen], kind="stable")]
    d = dom[at]
    starts = np.flatnonzero(np.diff(d, prepend=-1))
    ends = np.append(starts[1:], len(d))
    present = d[starts].tolist()
    trackers = [dec.tracker(keys[k]) for k in present]
    prev_seq = np.array([t.prev_seq if t.prev_seq is not None else 0 for t in trackers], np.int64)
    has_prev = np.array([t.prev_seq is not None for t in trackers], dtype=bool)
    prev_u = np.array([t.prev_units[0] for t in trackers], dtype=np.int64)
    prev_f = np.array([t.prev_units[1] for t in trackers], dtype=np.int64)
    seq, units, flows = log.seq[at], log.units[at], log.flows[at]
    p_seq = np.roll(seq, 1)
    p_u = np.roll(units, 1)
    p_f = np.roll(flows, 1)
    p_seq[starts], p_u[starts], p_f[starts] = prev_seq, prev_u, prev_f
    free = np.zeros(len(at), dtype=bool)
    free[starts] = ~has_prev  # a tracker's first packet is taken as it is
    breaks = {
        m: np.logical_or.reduceat(
            ((p_seq + mode_step(m, p_u, p_f, units, flows)) % MOD != seq) & ~free, starts
        )
        for m in MODES
    }
    resync = np.logical_or.reduceat(log.resync[at], starts)
    last_boot = np.maximum.reduceat(np.where(log.has_boot[at], np.arange(len(at)), -1), starts)
    for g, tracker in enumerate(trackers):
        modes = [m for m in tracker.modes if not breaks[m][g]]
        if modes and not resync[g] and not tracker.resumed:
            b = int(ends[g]) - 1
            tracker.modes = modes
            tracker.prev_seq = int(seq[b])
            tracker.prev_units = (int(units[b]), int(flows[b]))
            if last_boot[g] >= 0:
                tracker.boot_ms = int(log.boot[at[last_boot[g]]])
            continue
        key = keys[present[g]]
        _settle(call, key, log.replay(tracker, at[int(starts[g]) : int(ends[g])]))


def _settle(call: DecodeCall, key: DomainKey, out: SeqOutcome) -> None:
    if out.lost or out.late or out.reordered or out.restarts:
        st = call.stats_for(*key)
        st.sequence_lost += out.lost
        st.sequence_late += out.late
        st.sequence_reordered += out.reordered
        st.restarts += out.restarts


Runs = dict[int, tuple[RecordPlan, list[np.ndarray]]]


def _settle_refreshes(
    dec: DecoderLike,
    frame: Frame,
    heads: Heads,
    exporter_of: Sequence[bytes],
    received: np.ndarray,
    dom: np.ndarray,
    one_by_one: np.ndarray,
) -> None:
    """Settle here the template sets that only repeat what their domain
    announced last (the usual refresh every few packets), and count their
    datagrams as plain: a domain whose packets are all plain then goes with
    the clean ones, all at once, not packet by packet (:func:`_domain`).

    Only in domains with no packet decoded one by one (``one_by_one``, by
    domain), and in each only up to its first packet that announces
    something new: until then nothing in the call has touched the domain's
    templates, so the cache as it stands is what those packets meet.
    """
    templated = heads.templated
    assert templated is not None and heads.tsets is not None
    assert heads.first_tset is not None and heads.ntsets is not None
    at = np.flatnonzero(templated)
    at = at[~one_by_one[dom[at]]]
    if not len(at):
        return
    first = heads.first_tset[at]
    start = (heads.tsets[first, 1] - 4).tolist()  # from the first set's header
    end = heads.tsets[first + heads.ntsets[at] - 1, 2].tolist()
    domain, version = heads.domain[at].tolist(), heads.version[at].tolist()
    doms, when = dom[at].tolist(), received[at].tolist()
    buf = memoryview(frame.buf)
    changed: set[int] = set()
    # per domain: the bytes its packets repeated, the latest receive time
    # among them, and one of them
    repeated: dict[int, tuple[bytes, int, int]] = {}
    again = dec.announced_again
    for k, i in enumerate(at.tolist()):
        d = doms[k]
        if d in changed:
            continue
        raw = buf[start[k] : end[k]].tobytes()
        seen = repeated.get(d)
        if seen is not None and seen[0] == raw:
            templated[i] = False  # nothing has changed since the last repeat
            repeated[d] = (raw, max(seen[1], when[k]), i)
        elif again(exporter_of[i], domain[k], version[k], raw, when[k]):
            templated[i] = False
            repeated[d] = (raw, when[k], i)
        else:
            changed.add(d)
    for raw, latest, i in repeated.values():  # the templates' time, once per domain
        again(exporter_of[i], int(heads.domain[i]), int(heads.version[i]), raw, latest)


def _domain(
    dec: DecoderLike,
    call: DecodeCall,
    datagrams: _Datagrams,
    frame: Frame,
    heads: Heads,
    at: np.ndarray,
    key: DomainKey,
    runs: Runs,
) -> None:
    """One exporter and domain's packets of the call, ``at`` (arrival order)."""
    plain = heads.plain[at]
    # decoded at their place: whole, or only their template sets (templated)
    other = ~plain if heads.templated is None else ~plain | heads.templated[at]
    others = at[other].tolist()
    fast = at[plain]
    which = (heads.version[fast] << 16) | heads.set_id[fast]
    cuts = np.searchsorted(fast, others).tolist() if others and len(fast) else [0] * len(others)
    if len(fast) and bool((which == which[0]).all()):
        # One template for every plain packet (the usual case): a run goes
        # on as long as the packets between leave that template alone.
        t = int(which[0])
        tkey = (key[0], key[1], t & 0xFFFF, t >> 16)
        begin = 0
        for i, stop in zip(others, cuts, strict=True):
            tmpl = None
            if stop > begin:
                tmpl = dec.templates.get(tkey)
                if _plan(dec, tmpl) is None:  # held or per record: before packet i
                    _one_by_one(dec, call, datagrams, frame, fast[begin:stop])
                    begin = stop
            _one(dec, call, datagrams, frame, i)
            if stop > begin and dec.templates.get(tkey) is not tmpl:
                _add_run(dec, call, datagrams, frame, tmpl, fast[begin:stop], runs)
                begin = stop
        if begin < len(fast):
            tmpl = dec.templates.get(tkey)
            _add_run(dec, call, datagrams, frame, tmpl, fast[begin:], runs)
        return
    begin = 0
    for k in range(len(others) + 1):
        stop = cuts[k] if k < len(cuts) else len(fast)
        if stop > begin:
            run, sel = fast[begin:stop], which[begin:stop]
            for t in np.unique(sel).tolist():
                tmpl = dec.templates.get((key[0], key[1], t & 0xFFFF, t >> 16))
                _add_run(dec, call, datagrams, frame, tmpl, run[sel == t], runs)
            begin = stop
        if k < len(others):
            _one(dec, call, datagrams, frame, others[k])


def _plan(dec: DecoderLike, tmpl: Template | None) -> RecordPlan | None:
    """The plan plain packets of ``tmpl`` are gathered with, or None when they
    are decoded one by one (unknown template: held; options: per record)."""
    if tmpl is None or tmpl.is_options:
        return None
    plan = plan_for(tmpl, dec.config.keep_unknown_ies)
    return None if plan.variable else plan


def _add_run(
    dec: DecoderLike,
    call: DecodeCall,
    datagrams: _Datagrams,
    frame: Frame,
    tmpl: Template | None,
    run: np.ndarray,
    runs: Runs,
) -> None:
    """Plain packets of one template, to be gathered (or decoded one by one)."""
    plan = _plan(dec, tmpl)
    if plan is None:
        _one_by_one(dec, call, datagrams, frame, run)
        return
    entry = runs.get(id(plan))
    if entry is None:
        runs[id(plan)] = (plan, [run])
    else:
        entry[1].append(run)


def _one_by_one(
    dec: DecoderLike, call: DecodeCall, datagrams: _Datagrams, frame: Frame, run: np.ndarray
) -> None:
    """Packets of a run whose data cannot be gathered (template unknown,
    options, variable-length), one by one; a templated packet's template
    sets were applied at its place already (:func:`_one`)."""
    templated = datagrams.heads.templated
    for i in run.tolist():
        call.batch.index = i
        call.frame_at = int(frame.offsets[i])
        dec.decode_one(
            call,
            frame.view(i),
            datagrams.exporters[i],
            int(datagrams.received[i]),
            templates=templated is None or not templated[i],
        )


class _Datagrams:
    """Each datagram's exporter, receive time and walk, beside the frame."""

    def __init__(self, exporters: Sequence[bytes], received: np.ndarray, heads: Heads) -> None:
        self.exporters = exporters
        self.received = received
        self.heads = heads


def _one(dec: DecoderLike, call: DecodeCall, datagrams: _Datagrams, frame: Frame, i: int) -> None:
    """A packet at its place in the call: decoded whole, or, when templated,
    only its template sets (its data sets go with the run after it)."""
    call.batch.index = i
    h = datagrams.heads
    if h.templated is not None and h.templated[i]:
        assert h.tsets is not None and h.first_tset is not None and h.ntsets is not None
        first = int(h.first_tset[i])
        call.frame_at = -1
        dec.decode_template_sets(
            call,
            memoryview(frame.buf),
            datagrams.exporters[i],
            int(h.domain[i]),
            int(h.version[i]),
            int(datagrams.received[i]),
            h.tsets[first : first + int(h.ntsets[i])].tolist(),
        )
        return
    call.frame_at = int(frame.offsets[i])
    dec.decode_one(call, frame.view(i), datagrams.exporters[i], int(datagrams.received[i]))
