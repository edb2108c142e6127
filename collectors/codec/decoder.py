"""Decode NetFlow v5, NetFlow v9 and IPFIX export packets into flow batches.

Pure code: bytes in, columns out; no sockets, no logging, no clock. The
receiving runtime owns the sockets, Kafka and metrics and calls this API.

API
---
::

    from voipflow.collectors.codec.decoder import Decoder, DecoderConfig, DecodeResult
    from voipflow.collectors.codec.templates import TemplateCache

    cache = TemplateCache(expiry_s=1800)          # one per process
    cache.load(path)                              # optional, on start
    dec = Decoder(cache, DecoderConfig(sampling_override={addr16: 100}))
    res: DecodeResult = dec.decode([(payload, exporter16, received_ms), ...])
    res.batch        # schemas.flowbatch.FlowBatch of every record decoded in
                     # the call, including held data released by a template
                     # that arrived in this call
    res.stats        # {(exporter16, observation_domain_id): ExporterStats}
                     # counters are deltas for this call, gauges are current
    res.errors       # [(exporter16, DecodeError), ...] first few, for logs
    res = dec.decode_frame(frame, [exporter16, ...], received_ms_array)
                     # the same for datagrams already in one buffer
                     # (collectors.codec.Frame), as the collector receives them
    cache.save(path)                              # on stop

* Calls of at least ``bulk_min_datagrams`` datagrams take the bulk path:
  *plain* packets (one data set of a known fixed-length template, as busy
  exporters send most of the time) are decoded in whole groups with numpy,
  headers and sequence numbers included (:mod:`voipflow.collectors.codec.bulk`); the rest
  one by one. The result is the same as decoding every packet on its own
  (``tests/collectors/test_bulk.py``), but for which held data sets are
  evicted first when the held bounds overflow within one call. Template
  sets are parsed once per distinct body; compiled plans are shared by
  exporters whose templates have the same layout.
* ``payload`` is one UDP payload (``bytes``/``bytearray``/``memoryview``),
  ``exporter16`` the sender address as 16 bytes (IPv4 mapped into
  ``::ffff:0:0/96``, see ``schemas.flowbatch.text_to_addr16``) and
  ``received_ms`` the receive time in UTC ms (it also drives template and
  held-data expiry). Hand over many datagrams per call: records of the same
  template across all of them are decoded by one ``numpy.frombuffer``.
* A malformed packet or set is counted in ``stats[...].errors[reason]`` and
  skipped; the other sets and datagrams of the call are decoded. ``decode``
  raises nothing for bad input.
* Counters (``packets``, ``bytes``) are unscaled; ``sampling_rate`` says which
  1-in-N sampling applied to each record (the flows.v1 contract).
* Sequence numbers: a gap becomes ``sequence_lost``, in *records* for v5 and
  IPFIX (their sequence counts records) and in *packets* for v9 (RFC 3954
  counts export packets). Late or duplicated packets count in
  ``sequence_reordered`` and give back the loss they had caused. A restarted
  exporter (v5/v9 boot time moved and sequence broken; IPFIX sequence jumped
  back or far ahead) counts in ``restarts``, without loss. After an IPFIX
  message whose data set had to be held (record count unknown), the next
  sequence number is taken as is, without counting loss.

Errors (raised by the lower layers, caught and counted here; see
:mod:`voipflow.collectors.codec.errors`)::

    DecodeError (ValueError)     .reason
     +-- TruncatedError          "truncated"
     +-- BadVersionError         "bad_version"
     +-- BadLengthError          "bad_length"
     +-- BadSetError             "bad_set"
     +-- BadTemplateError        "bad_template"
     |    +-- TooManyFieldsError "too_many_fields"
     |    +-- TemplateLoopError  "template_loop"
     |    +-- TooManyTemplatesError "too_many_templates"
     +-- BadRecordError          "bad_record"
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from voipflow.collectors.codec import bulk, packets
from voipflow.collectors.codec.assemble import CallBatch, Chunk
from voipflow.collectors.codec.call import DecodeCall, DecoderConfig, DomainKey, ExporterStats
from voipflow.collectors.codec.errors import (
    REASONS,
    BadLengthError,
    BadRecordError,
    BadSetError,
    BadTemplateError,
    BadVersionError,
    DecodeError,
    TemplateLoopError,
    TooManyFieldsError,
    TooManyTemplatesError,
    TruncatedError,
)
from voipflow.collectors.codec.frame import Frame
from voipflow.collectors.codec.plan import plan_for
from voipflow.collectors.codec.sequence import SequenceTracker
from voipflow.collectors.codec.templates import DomainOptions, Template, TemplateCache, TemplateKey
from voipflow.schemas.flowbatch import FlowBatch

__all__ = [
    "REASONS",
    "BadLengthError",
    "BadRecordError",
    "BadSetError",
    "BadTemplateError",
    "BadVersionError",
    "Datagram",
    "DecodeCall",
    "DecodeError",
    "DecodeResult",
    "Decoder",
    "DecoderConfig",
    "DomainKey",
    "ExporterStats",
    "Frame",
    "TemplateLoopError",
    "TooManyFieldsError",
    "TruncatedError",
]

#: (UDP payload, exporter address as 16 bytes, receive time in UTC ms)
Datagram = tuple[bytes | bytearray | memoryview, bytes, int]


@dataclass(slots=True)
class DecodeResult:
    batch: FlowBatch
    stats: dict[DomainKey, ExporterStats]
    errors: list[tuple[bytes, DecodeError]] = field(default_factory=list)


class InternalDecodeError(DecodeError):
    """An unexpected failure inside the decoder (a bug); counted, never raised."""

    reason = "internal"


@dataclass(slots=True)
class _Held:
    key: TemplateKey
    data: bytes
    chunk: Chunk


#: Distinct template set bodies whose parse is kept (all are forgotten at once
#: when full: a bound against exporters that never repeat themselves).
PARSED_TEMPLATE_SETS = 4096
#: Exporters and domains whose last template sets are remembered (all are
#: forgotten at once when full).
ANNOUNCED_DOMAINS = 65536


class Decoder:
    """Decodes lists of export datagrams with the templates in ``templates``."""

    def __init__(self, templates: TemplateCache, config: DecoderConfig | None = None) -> None:
        self.templates = templates
        self.config = config or DecoderConfig()
        self._seq: dict[DomainKey, SequenceTracker] = {}
        self._held: OrderedDict[int, _Held] = OrderedDict()
        self._held_by_key: dict[TemplateKey, list[int]] = {}
        self._held_per_domain: dict[DomainKey, list[int]] = {}  # [sets, bytes]
        self._held_bytes = 0
        self._held_next = 0
        self._parsed: dict[tuple[int, bool, bytes], list[packets.TemplateRecord]] = {}
        #: per exporter, domain and version: the template sets of its last
        #: templated packet (bulk path) and the templates they left
        self._announced: dict[
            tuple[bytes, int, int], tuple[bytes, list[tuple[TemplateKey, Template]]]
        ] = {}
        self._v5_template = Template(
            packets.V5_TEMPLATE.template_id, packets.V5_TEMPLATE.fields, version=5
        )

    # -- public ----------------------------------------------------------------

    def decode(self, datagrams: Sequence[Datagram]) -> DecodeResult:
        """Decode every datagram; never raises for bad input (see module doc)."""
        n = len(datagrams)
        if self.config.bulk_min_datagrams and n >= self.config.bulk_min_datagrams:
            return self.decode_frame(
                Frame.join([d[0] for d in datagrams]),
                [d[1] for d in datagrams],
                np.fromiter((d[2] for d in datagrams), dtype=np.int64, count=n),
            )
        call = DecodeCall(CallBatch(), {}, [], self.config.max_errors_kept)
        for i, (data, exporter, received_ms) in enumerate(datagrams):
            call.batch.index = i
            self.decode_one(call, memoryview(data), exporter, received_ms)
        return self._finish(call, max((d[2] for d in datagrams), default=0))

    def decode_frame(
        self, frame: Frame, exporters: Sequence[bytes], received_ms: np.ndarray
    ) -> DecodeResult:
        """:meth:`decode` of datagrams already in one buffer (as the collector
        receives them: :func:`voipflow.collectors.receiver.drain_into`), with each
        one's exporter address and receive time. Nothing in the result refers
        to ``frame.buf``: the caller may reuse it once this returns.
        """
        call = DecodeCall(CallBatch(), {}, [], self.config.max_errors_kept)
        n = len(frame)
        if self.config.bulk_min_datagrams and n >= self.config.bulk_min_datagrams:
            try:
                bulk.decode_bulk(self, call, frame, exporters, received_ms)
            except Exception as exc:  # a bug must not stop the collector
                call.error(exporters[0], 0, InternalDecodeError(repr(exc)))
        else:
            for i in range(n):
                call.batch.index = i
                self.decode_one(call, frame.view(i), exporters[i], int(received_ms[i]))
        return self._finish(call, int(received_ms.max()) if n else 0)

    def _finish(self, call: DecodeCall, now: int) -> DecodeResult:
        if now:
            self._expire(call, now)
        try:
            built = call.batch.build(self.templates.peek_options, self.config.sampling_override)
        except Exception as exc:  # a bug must not lose the stats
            call.errors.append((b"", InternalDecodeError(repr(exc))))
            built = CallBatch().build(self.templates.peek_options, {})
        for key, (records, rate) in built.per_domain.items():
            st = call.stats_for(*key)
            st.records += records
            st.sampling_rate = rate
        seq = self._seq
        for (exporter, domain), st in call.stats.items():
            st.templates = self.templates.count(exporter, domain)
            tracker = seq.get((exporter, domain))
            if tracker is not None and now > tracker.seen_ms:
                tracker.seen_ms = now
            held = self._held_per_domain.get((exporter, domain), [0, 0])
            st.held_sets, st.held_bytes = held
            if not built.per_domain.get((exporter, domain)):
                st.sampling_rate = self._announced_rate(exporter, domain, st.sampling_rate)
        return DecodeResult(built.batch, call.stats, call.errors)

    @property
    def held_sets(self) -> int:
        return len(self._held)

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    # -- packets ---------------------------------------------------------------

    def decode_one(
        self,
        call: DecodeCall,
        mv: memoryview,
        exporter: bytes,
        received_ms: int,
        templates: bool = True,
    ) -> None:
        """One datagram, packet by packet, into ``call``; bad input is counted
        there, never raised. The bulk path hands over what it cannot group;
        ``templates=False``: all but its template sets, which the bulk path
        applied already (:meth:`decode_template_sets`)."""
        try:
            self._datagram(call, mv, exporter, received_ms, templates)
        except DecodeError as exc:
            call.error(exporter, call.current_domain, exc)
        except Exception as exc:  # a bug must not stop the collector
            call.error(exporter, call.current_domain, InternalDecodeError(repr(exc)))

    def decode_template_sets(
        self,
        call: DecodeCall,
        mv: memoryview,
        exporter: bytes,
        domain: int,
        version: int,
        received_ms: int,
        sets: list[list[int]],
    ) -> None:
        """The (options) template sets ``[set id, start, end]`` (in ``mv``) of
        one well-framed packet, as :meth:`decode_one` would apply them: the
        bulk path's way with a packet that refreshes templates in front of
        its data sets, whose data it gathers with the others'."""
        st = call.stats_for(exporter, domain)
        raw = mv[sets[0][1] - 4 : sets[-1][2]].tobytes()
        if self.announced_again(exporter, domain, version, raw, received_ms):
            return
        memo_key = (exporter, domain, version)
        chunk_base = Chunk(exporter, domain, received_ms, 0, -1, 0)
        applied: list[tuple[TemplateKey, Template]] | None = []
        for set_id, start, end in sets:
            try:
                kind = packets.set_kind(version, set_id)
                done = self._template_set(call, st, mv, start, end, version, kind, chunk_base)
            except DecodeError as exc:
                call.error(exporter, domain, exc)
                done = None
            except Exception as exc:  # a bug must not stop the collector
                call.error(exporter, domain, InternalDecodeError(repr(exc)))
                done = None
            applied = applied + done if applied is not None and done is not None else None
        if len(self._announced) >= ANNOUNCED_DOMAINS:
            self._announced.clear()
        if applied is None:  # errors or withdrawals: taken in full next time too
            self._announced.pop(memo_key, None)
        else:
            self._announced[memo_key] = (raw, applied)

    def announced_again(
        self, exporter: bytes, domain: int, version: int, raw: bytes, received_ms: int
    ) -> bool:
        """Whether the template sets ``raw`` (set headers included) repeat what
        this exporter and domain announced last, with the cache still holding
        what they left there and no data waiting for it; if so, the
        templates' time is moved to ``received_ms``, all a re-announcement
        does. Exporters repeat the same template sets every few packets."""
        memo = self._announced.get((exporter, domain, version))
        if memo is None or memo[0] != raw or not self._unchanged(memo[1]):
            return False
        for _, tmpl in memo[1]:
            tmpl.received_ms = max(tmpl.received_ms, received_ms)
        return True

    def _unchanged(self, applied: list[tuple[TemplateKey, Template]]) -> bool:
        get, held = self.templates.get, self._held_by_key
        return all(get(key) is tmpl and key not in held for key, tmpl in applied)

    def _datagram(
        self,
        call: DecodeCall,
        mv: memoryview,
        exporter: bytes,
        received_ms: int,
        templates: bool = True,
    ) -> None:
        call.current_domain = packets.header_domain(mv)
        msg = packets.parse_message(mv)
        call.current_domain = msg.domain
        st = call.stats_for(exporter, msg.domain)
        st.packets += 1
        st.bytes += len(mv)
        st.netflow_version = msg.version
        if call.seqlog is not None:
            call.version_at[(exporter, msg.domain)] = call.batch.index
        chunk_base = Chunk(exporter, msg.domain, received_ms, msg.export_ms, msg.uptime_ms,
                           msg.sampling)  # fmt: skip
        if msg.version == 5:
            _, start, end = msg.sets[0]
            plan = plan_for(self._v5_template)
            call.batch.add_fixed(plan, mv[start:end], chunk_base, msg.count)
            self._sequence(call, st, msg, msg.count, held=False)
            if msg.sampling:
                st.sampling_rate = msg.sampling
            return
        units = flows = 0
        held = False
        for set_id, start, end in msg.sets:
            try:
                kind = packets.set_kind(msg.version, set_id)
                if kind == "data":
                    n = self._data_set(call, st, mv, set_id, start, end, chunk_base)
                    if n < 0:
                        held = True
                    else:
                        units += n
                        flows += n if n and not self._is_options(st, set_id, msg.version) else 0
                elif templates:
                    self._template_set(call, st, mv, start, end, msg.version, kind, chunk_base)
            except DecodeError as exc:
                call.error(exporter, msg.domain, exc)
        if msg.version == 9:
            units = flows = 1
        if msg.error is not None:
            call.error(exporter, msg.domain, msg.error)
            held = True  # records of the lost sets are unknown
        self._sequence(call, st, msg, units, held, flows)

    def _is_options(self, st: ExporterStats, set_id: int, version: int) -> bool:
        t = self.templates.get((st.exporter, st.observation_domain_id, set_id, version))
        return t is not None and t.is_options

    def tracker(self, key: DomainKey) -> SequenceTracker:
        """The sequence tracker of an exporter and domain (made on first use)."""
        tracker = self._seq.get(key)
        if tracker is None:
            if len(self._seq) >= self.config.max_domains:
                # Forget the oldest: its next packet starts tracking afresh
                # (no loss counted).
                del self._seq[next(iter(self._seq))]
            tracker = self._seq[key] = SequenceTracker(
                self.config.reorder_window, self.config.restart_gap
            )
        return tracker

    @property
    def trackers(self) -> dict[DomainKey, SequenceTracker]:
        """Every sequence tracker by exporter and domain (saved and restored
        across restarts by the collector; :meth:`restore` adds one)."""
        return self._seq

    def restore(self, key: DomainKey, tracker: SequenceTracker) -> bool:
        """Put a saved tracker in place (before any packet of ``key``); False
        when ``max_domains`` trackers are kept already."""
        if key not in self._seq and len(self._seq) >= self.config.max_domains:
            return False
        self._seq[key] = tracker
        return True

    def _sequence(
        self,
        call: DecodeCall,
        st: ExporterStats,
        msg: packets.Message,
        units: int,
        held: bool,
        flows: int = -1,
    ) -> None:
        tracker = self.tracker((st.exporter, msg.domain))
        boot = msg.export_ms - msg.uptime_ms if msg.uptime_ms >= 0 else None
        if call.seqlog is not None:  # observed later, in order with the bulk packets
            call.seqlog.add(call.batch.index, msg.sequence, units, units if flows < 0 else flows,
                            boot, held and msg.version == 10)  # fmt: skip
            return
        out = tracker.observe(msg.sequence, units, boot, units if flows < 0 else flows)
        st.sequence_lost += out.lost
        st.sequence_late += out.late
        st.sequence_reordered += out.reordered
        st.restarts += int(out.restart)
        if held and msg.version == 10:
            tracker.resync()

    def _template_set(
        self,
        call: DecodeCall,
        st: ExporterStats,
        mv: memoryview,
        start: int,
        end: int,
        version: int,
        kind: str,
        chunk_base: Chunk,
    ) -> list[tuple[TemplateKey, Template]] | None:
        """Apply one (options) template set; the templates it left in the
        cache, None when it withdrew any."""
        options = kind == "options"
        # Exporters resend the same template set every few packets: parse each
        # distinct set once (by its bytes), and refresh what is cached.
        raw = (version, options, mv[start:end].tobytes())
        records = self._parsed.get(raw)
        if records is None:
            records = packets.parse_templates(
                mv, start, end, version, options, self.config.max_fields
            )
            if len(self._parsed) >= PARSED_TEMPLATE_SETS:
                self._parsed.clear()
            self._parsed[raw] = records
        exporter, domain = st.exporter, st.observation_domain_id
        applied: list[tuple[TemplateKey, Template]] | None = []
        for rec in records:
            if not rec.fields:  # IPFIX withdrawal
                applied = None
                if rec.template_id in (2, 3):
                    st.templates_withdrawn += self.templates.withdraw_all(
                        exporter, domain, version, rec.template_id == 3
                    )
                elif self.templates.withdraw((exporter, domain, rec.template_id, version)):
                    st.templates_withdrawn += 1
                continue
            key = (exporter, domain, rec.template_id, version)
            before = self.templates.get(key)
            if (
                before is not None
                and before.fields is rec.fields
                and before.scope_count == rec.scope_count
            ):
                # A re-announcement parsed from the same bytes: only its time moves.
                before.received_ms = max(before.received_ms, chunk_base.received_ms)
                stored = before
            else:
                tmpl = Template(rec.template_id, rec.fields, rec.scope_count, version,
                                chunk_base.received_ms)  # fmt: skip
                try:
                    stored = self.templates.put(key, tmpl)
                except OverflowError as exc:
                    raise TooManyTemplatesError(str(exc)) from exc
                if stored is not before:
                    st.templates_added += 1
            if key in self._held_by_key:
                self._release(call, key, stored)
            if applied is not None:
                applied.append((key, stored))
        return applied

    def _data_set(
        self,
        call: DecodeCall,
        st: ExporterStats,
        mv: memoryview,
        set_id: int,
        start: int,
        end: int,
        chunk_base: Chunk,
    ) -> int:
        """Decode or hold one data set; returns its records, -1 when held."""
        key = (
            st.exporter,
            st.observation_domain_id,
            set_id,
            9 if chunk_base.uptime_ms >= 0 else 10,
        )
        tmpl = self.templates.get(key)
        if tmpl is None:
            self._hold(call, key, bytes(mv[start:end]), chunk_base)
            return -1
        return self._records(call, st, tmpl, mv, start, end, chunk_base)

    def _records(
        self,
        call: DecodeCall,
        st: ExporterStats,
        tmpl: Template,
        mv: memoryview,
        start: int,
        end: int,
        chunk_base: Chunk,
    ) -> int:
        if tmpl.is_options:
            recs = packets.option_records(tmpl, mv, start, end)
            self._apply_options(st.exporter, st.observation_domain_id, recs, chunk_base)
            st.option_records += len(recs)
            return len(recs)
        plan = plan_for(tmpl, self.config.keep_unknown_ies)
        if plan.variable:
            rec, var = plan.walk_varlen(mv[start:end], (end - start) // max(
                tmpl.min_record_length, 1))  # fmt: skip
            if len(rec):
                call.batch.add_decoded(plan, rec, var, chunk_base)
            return len(rec)
        n = (end - start) // plan.fixed_length
        if n and call.frame_at >= 0:  # still in the call's frame: gathered at build
            call.batch.add_frame(plan, call.frame_at + start, n, chunk_base)
        elif n:
            call.batch.add_fixed(plan, mv[start : start + n * plan.fixed_length], chunk_base, n)
        return n

    # -- options data ------------------------------------------------------------

    def _apply_options(
        self, exporter: bytes, domain: int, recs: list[dict[tuple[int, int], bytes]], chunk: Chunk
    ) -> None:
        opts: DomainOptions | None = None
        for r in recs:
            rate = _options_rate(r)
            selector = _first_int(r, ((0, 302), (0, 48), (packets.V9_SCOPE_PEN, 48)))
            app = r.get((0, 95))
            name = r.get((0, 96))
            init = _first_int(r, ((0, 160),))
            if rate is None and (app is None or name is None) and init is None:
                continue
            if opts is None:
                opts = self.templates.options(exporter, domain)
                opts.received_ms = chunk.received_ms
            if rate is not None:
                if selector is not None:
                    opts.samplers[selector] = rate
                else:
                    opts.sampling_rate = rate
            if app is not None and name is not None:
                from voipflow.collectors.codec.plan import app_id_value

                opts.app_names[app_id_value(app)] = name.rstrip(b"\0").decode("utf-8", "replace")
            if init is not None:
                opts.system_init_ms = init

    def _announced_rate(self, exporter: bytes, domain: int, current: int) -> int:
        forced = self.config.sampling_override.get(exporter)
        if forced:
            return forced
        opts = self.templates.peek_options(exporter, domain)
        rate = opts.default_rate() if opts is not None else 0
        return rate or current or 1

    # -- held data -----------------------------------------------------------------

    def _hold(self, call: DecodeCall, key: TemplateKey, data: bytes, chunk: Chunk) -> None:
        cfg = self.config
        dkey = (key[0], key[1])
        if cfg.held_max_sets <= 0 or len(data) > cfg.held_max_bytes:
            call.stats_for(*dkey).held_evicted += 1
            return
        while self._held and (
            len(self._held) >= cfg.held_max_sets
            or self._held_bytes + len(data) > cfg.held_max_bytes
        ):
            self._evict_oldest(call)
        hid = self._held_next
        self._held_next += 1
        self._held[hid] = _Held(key, data, chunk)
        self._held_by_key.setdefault(key, []).append(hid)
        counts = self._held_per_domain.setdefault(dkey, [0, 0])
        counts[0] += 1
        counts[1] += len(data)
        self._held_bytes += len(data)

    def _drop_held(self, hid: int) -> _Held:
        h = self._held.pop(hid)
        ids = self._held_by_key[h.key]
        ids.remove(hid)
        if not ids:
            del self._held_by_key[h.key]
        counts = self._held_per_domain[(h.key[0], h.key[1])]
        counts[0] -= 1
        counts[1] -= len(h.data)
        self._held_bytes -= len(h.data)
        return h

    def _evict_oldest(self, call: DecodeCall) -> None:
        hid = next(iter(self._held))
        h = self._drop_held(hid)
        call.stats_for(h.key[0], h.key[1]).held_evicted += 1

    def _release(self, call: DecodeCall, key: TemplateKey, tmpl: Template) -> None:
        st = call.stats_for(key[0], key[1])
        for hid in list(self._held_by_key.get(key, ())):
            h = self._drop_held(hid)
            mv = memoryview(h.data)
            frame_at, call.frame_at = call.frame_at, -1  # held data is not in the frame
            try:
                n = self._records(call, st, tmpl, mv, 0, len(mv), h.chunk)
            except DecodeError as exc:
                call.error(key[0], key[1], exc)
                continue
            finally:
                call.frame_at = frame_at
            if not tmpl.is_options:
                st.held_released += n

    def _expire(self, call: DecodeCall, now: int) -> None:
        for key in self.templates.expire(now):
            call.stats_for(key[0], key[1]).templates_expired += 1
        limit = now - self.config.held_max_age_ms
        while self._held:
            _hid, h = next(iter(self._held.items()))
            if h.chunk.received_ms >= limit:
                break
            self._evict_oldest(call)


def _first_int(rec: dict[tuple[int, int], bytes], keys: tuple[tuple[int, int], ...]) -> int | None:
    for k in keys:
        v = rec.get(k)
        if v is not None and 0 < len(v) <= 8:
            return int.from_bytes(v, "big")
    return None


def _options_rate(rec: dict[tuple[int, int], bytes]) -> int | None:
    """1-in-N from options data: 34/50, 305+306, 309/310; None when absent."""
    interval = _first_int(rec, ((0, 34), (0, 50)))
    if interval is not None:
        return interval or 1
    pkt = _first_int(rec, ((0, 305),))
    space = _first_int(rec, ((0, 306),))
    if pkt and space is not None:
        return (pkt + space) // pkt
    size = _first_int(rec, ((0, 309),))
    population = _first_int(rec, ((0, 310),))
    if size and population:
        return max(population // size, 1)
    return None
