"""Compiled record plans: a template turned into a numpy dtype and column rules.

A :class:`RecordPlan` is built once per template (cached on the template
object) and then decodes any number of records at once:

* fixed-length templates: the records of a data set (or of many data sets
  joined) are one ``numpy.frombuffer`` over a big-endian structured dtype
  whose fields sit at the template's offsets;
* templates with variable-length fields: one Python pass per record reads
  only the length prefixes (:func:`walk_varlen`), then numpy gathers the
  fixed fields of every record into the same packed layout and the same
  column rules apply. The variable-length values come back as lists.

:meth:`RecordPlan.columns` maps elements to the flows.v1 core columns (first
occurrence of an element wins) and converts every time element to absolute
UTC milliseconds using per-record header values (:class:`RecordMeta`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.collectors.codec import core, ies
from voipflow.collectors.codec.errors import BadRecordError, BadTemplateError
from voipflow.collectors.codec.templates import VARLEN, Template
from voipflow.schemas.flowbatch import FLOW_COLUMNS, ipv4_to_addr16

NTP_UNIX_OFFSET_S = 2208988800
#: sysUptime-relative times up to this far after the header's uptime are jitter.
FUTURE_TOLERANCE_MS = 60_000
Key = tuple[int, int]

# Elements the core columns come from, in order of preference.
_PACKETS = ((0, 2), (0, 86), (0, 24), (0, 172))
_BYTES = ((0, 1), (0, 85), (0, 23), (0, 171))
_REV_PACKETS = ((ies.PEN_REVERSE, 2), (ies.PEN_REVERSE, 86))
_REV_BYTES = ((ies.PEN_REVERSE, 1), (ies.PEN_REVERSE, 85))
_SIMPLE: dict[str, tuple[Key, ...]] = {
    "src_port": ((0, 7), (0, 180), (0, 182)),
    "dst_port": ((0, 11), (0, 181), (0, 183)),
    "protocol": ((0, 4),),
    "tos": ((0, 5),),
    "input_if": ((0, 10), (0, 252)),
    "output_if": ((0, 14), (0, 253)),
    "src_as": ((0, 16),),
    "dst_as": ((0, 17),),
    "flow_direction": ((0, 61),),
    "l7_proto": ((ies.PEN_NTOP, 118),),
}
_SELECTOR = ((0, 302), (0, 48))
# Elements a core column or the time logic consumes; not kept as extras.
_START = ((0, 152), (0, 150), (0, 154), (0, 156), (0, 22), (0, 158))
_END = ((0, 153), (0, 151), (0, 155), (0, 157), (0, 21), (0, 159))


@dataclass(slots=True)
class RecordMeta:
    """Per-record values from the packet headers (arrays of one length)."""

    export_ms: np.ndarray  # int64: export time of the packet
    uptime_ms: np.ndarray  # int64: v5/v9 header sysUptime, -1 for IPFIX
    system_init_ms: np.ndarray  # int64: IPFIX systemInitTimeMilliseconds, 0 unknown


@dataclass(slots=True)
class PlanField:
    index: int  # position in the template
    pen: int
    ie: int
    length: int
    name: str  # field name in the structured dtype ("" for variable-length)
    element: ies.IE | None


class RecordPlan:
    """How to decode the records of one template into columns."""

    def __init__(self, template: Template, keep_unknown: bool = True) -> None:
        self.template = template
        self.keep_unknown = keep_unknown
        self.fields: list[PlanField] = []
        self.first: dict[Key, PlanField] = {}
        names: list[str] = []
        formats: list[np.dtype] = []
        offsets: list[int] = []
        pos = 0
        for i, f in enumerate(template.fields):
            el = ies.lookup(f.pen, f.ie)
            if f.length == VARLEN:
                pf = PlanField(i, f.pen, f.ie, VARLEN, "", el)
            else:
                pf = PlanField(i, f.pen, f.ie, f.length, f"f{i}", el)
                if f.length:
                    names.append(pf.name)
                    formats.append(ies.field_dtype(el, f.length))
                    offsets.append(pos)
                pos += f.length
            self.fields.append(pf)
            self.first.setdefault((f.pen, f.ie), pf)
        #: bytes of the fixed fields of one record (the whole record when fixed)
        self.fixed_length = pos
        self.variable = any(pf.length == VARLEN for pf in self.fields)
        self.dtype = np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": max(pos, 1)}
        )
        if not self.variable and pos == 0:
            raise BadTemplateError("template of zero-length records")
        #: (start of fixed run in the packed layout, its length) between var fields
        self.segments: list[tuple[int, int]] = []
        run_start = run_len = 0
        packed = 0
        for pf in self.fields:
            if pf.length == VARLEN:
                self.segments.append((run_start, run_len))
                run_start, run_len = packed, 0
            else:
                run_len += pf.length
                packed += pf.length
        self.segments.append((run_start, run_len))
        self.selector = next((self.first[k] for k in _SELECTOR if k in self.first), None)

    # -- record access ---------------------------------------------------------

    def frombuffer(self, data: bytes | memoryview) -> np.ndarray:
        """Fixed-length records (trailing padding ignored) as a structured array."""
        n = len(data) // self.fixed_length
        return np.frombuffer(data, dtype=self.dtype, count=n)

    def walk_varlen(
        self, data: bytes | memoryview, limit: int
    ) -> tuple[np.ndarray, dict[int, list[bytes]]]:
        """Records of a set with variable-length fields.

        Returns the fixed fields of every record packed in :attr:`dtype` and,
        per variable-length field index, the list of its values. Stops at the
        end of the set or when fewer bytes than the smallest record remain
        (padding); ``limit`` bounds the records read.
        """
        mv = memoryview(data)
        end = len(mv)
        minimum = self.template.min_record_length
        starts: list[list[int]] = []
        values: dict[int, list[bytes]] = {pf.index: [] for pf in self.fields if pf.length == VARLEN}
        pos = 0
        while end - pos >= minimum and minimum > 0 and len(starts) < limit:
            seg_starts = [pos]
            for pf in self.fields:
                if pf.length != VARLEN:
                    pos += pf.length
                    continue
                if pos >= end:
                    raise BadRecordError("variable-length field past the end of its set")
                n = mv[pos]
                pos += 1
                if n == 255:
                    if pos + 2 > end:
                        raise BadRecordError("variable-length prefix past the end of its set")
                    n = (mv[pos] << 8) | mv[pos + 1]
                    pos += 2
                if pos + n > end:
                    raise BadRecordError("variable-length value past the end of its set")
                values[pf.index].append(bytes(mv[pos : pos + n]))
                pos += n
                seg_starts.append(pos)
            if pos > end:
                raise BadRecordError("record past the end of its set")
            starts.append(seg_starts)
        count = len(starts)
        raw = np.frombuffer(mv, dtype=np.uint8)
        if count == 0 or self.fixed_length == 0:
            return np.zeros(count, dtype=self.dtype), values
        st = np.asarray(starts, dtype=np.int64)
        idx_parts = []
        for k, (_, length) in enumerate(self.segments):
            if length:
                idx_parts.append(st[:, k : k + 1] + np.arange(length, dtype=np.int64))
        idx = np.concatenate(idx_parts, axis=1)
        packed = np.ascontiguousarray(raw[idx])
        return packed.view(self.dtype).reshape(-1), values

    # -- columns ---------------------------------------------------------------

    def _get(self, rec: np.ndarray, keys: tuple[Key, ...]) -> np.ndarray | None:
        for k in keys:
            pf = self.first.get(k)
            if pf is not None and pf.length != VARLEN and pf.length:
                return ies.as_uint64(rec[pf.name])
        return None

    def _get_as(self, rec: np.ndarray, keys: tuple[Key, ...], dtype: str) -> np.ndarray | None:
        """Like :meth:`_get`, converted to the core column's ``dtype`` in one pass
        (values wider than it keep their low bits, as ``astype`` from uint64 would)."""
        for k in keys:
            pf = self.first.get(k)
            if pf is not None and pf.length != VARLEN and pf.length:
                col = rec[pf.name]
                if col.dtype.kind in "ui":
                    return col.astype(dtype)
                return ies.as_uint64(col).astype(dtype)
        return None

    def columns(
        self,
        rec: np.ndarray,
        meta: RecordMeta,
        var: dict[int, list[bytes]] | None = None,
        compiled: bool = False,
    ) -> tuple[dict[str, Any], dict[str, pa.Array]]:
        """Core columns (numpy) and extra ``ie_*`` columns (Arrow) of ``rec``;
        ``compiled``: addresses with the compiled core (the same values)."""
        n = len(rec)
        cols: dict[str, Any] = {}
        first = self.first

        # addresses
        v4s, v4d = first.get((0, 8)), first.get((0, 12))
        v6s, v6d = first.get((0, 27)), first.get((0, 28))
        src4 = self._addr4(rec, v4s, compiled)
        dst4 = self._addr4(rec, v4d, compiled)
        src6 = self._addr6(rec, v6s)
        dst6 = self._addr6(rec, v6d)
        if src6 is not None or dst6 is not None:
            z = np.zeros(n, dtype="S16")
            s6 = src6 if src6 is not None else z
            d6 = dst6 if dst6 is not None else z
            if src4 is None and dst4 is None:
                cols["src_addr"], cols["dst_addr"] = s6, d6
                cols["ip_version"] = np.full(n, 6, dtype=np.uint8)
            else:
                s4 = src4 if src4 is not None else _unspecified4(n)
                d4 = dst4 if dst4 is not None else _unspecified4(n)
                is6 = (s6 != z) | (d6 != z)
                cols["src_addr"] = np.where(is6, s6, s4)
                cols["dst_addr"] = np.where(is6, d6, d4)
                cols["ip_version"] = np.where(is6, 6, 4).astype(np.uint8)
        elif src4 is not None or dst4 is not None:
            cols["src_addr"] = src4 if src4 is not None else _unspecified4(n)
            cols["dst_addr"] = dst4 if dst4 is not None else _unspecified4(n)
            cols["ip_version"] = np.full(n, 4, dtype=np.uint8)
        ipv = self._get(rec, ((0, 60),))
        if ipv is not None and "ip_version" in cols:
            cols["ip_version"] = np.where(ipv > 0, ipv, cols["ip_version"]).astype(np.uint8)

        for name, keys in _SIMPLE.items():
            v = self._get_as(rec, keys, FLOW_COLUMNS[name][0])
            if v is not None:
                cols[name] = v
        if "dst_port" not in cols or not np.any(cols["dst_port"]):
            icmp = self._get_as(rec, ((0, 32), (0, 139)), "u2")
            if icmp is not None:
                base = cols.get("dst_port", np.zeros(n, dtype=np.uint16))
                cols["dst_port"] = np.where(base == 0, icmp, base)
        flags = self._get_as(rec, ((0, 6),), "u1")
        if flags is not None:
            cols["tcp_flags"] = flags
        for name, keys in (
            ("packets", _PACKETS),
            ("bytes", _BYTES),
            ("reverse_packets", _REV_PACKETS),
            ("reverse_bytes", _REV_BYTES),
        ):
            v = self._get(rec, keys)
            if v is not None:
                cols[name] = v

        app = first.get((0, 95))
        if app is not None:
            if app.length == VARLEN:
                vals = (var or {}).get(app.index, [])
                cols["application_id"] = np.array([app_id_value(b) for b in vals], dtype=np.uint64)
            elif app.length:
                cols["application_id"] = app_id_column(rec[app.name], app.length)
        name_f = first.get((0, 96))
        if name_f is not None and name_f.length == VARLEN and var:
            cols["application_name"] = pa.array(
                [b.rstrip(b"\0").decode("utf-8", "replace") for b in var[name_f.index]],
                type=pa.string(),
            )

        start, end = self._times(rec, meta, n)
        cols["flow_start_ms"], cols["flow_end_ms"] = start, end
        rate = self.record_sampling(rec)
        if rate is not None:
            cols["x_record_sampling"] = rate
        return cols, self._extras(rec, var, n)

    def _addr4(
        self, rec: np.ndarray, pf: PlanField | None, compiled: bool = False
    ) -> np.ndarray | None:
        if pf is None or pf.length != 4:
            return None
        field = rec.dtype.fields[pf.name] if rec.dtype.fields else None
        # the core copies the field's bytes: only where they are big-endian
        big_endian = field is not None and (field[0].str[0] == ">" or field[0].kind in "SV")
        if compiled and core.AVAILABLE and big_endian and rec.flags.c_contiguous:
            assert field is not None
            return core.addr4(rec, field[1])
        return ipv4_to_addr16(np.ascontiguousarray(rec[pf.name]))

    def _addr6(self, rec: np.ndarray, pf: PlanField | None) -> np.ndarray | None:
        if pf is None or pf.length != 16:
            return None
        return np.ascontiguousarray(rec[pf.name]).view("S16").reshape(-1)

    def record_sampling(self, rec: np.ndarray) -> np.ndarray | None:
        """1-in-N rate carried in the flow record itself, or None."""
        interval = self._get(rec, ((0, 34), (0, 50)))
        if interval is not None:
            return interval
        pkt_int = self._get(rec, ((0, 305),))
        if pkt_int is not None:
            space = self._get(rec, ((0, 306),))
            if space is None:
                return None
            safe = np.maximum(pkt_int, 1)
            return np.where(pkt_int > 0, (pkt_int + space) // safe, 0)
        return None

    def selector_ids(self, rec: np.ndarray) -> np.ndarray | None:
        if self.selector is None or not self.selector.length or self.selector.length == VARLEN:
            return None
        return ies.as_uint64(rec[self.selector.name])

    def _time(self, rec: np.ndarray, meta: RecordMeta, keys: tuple[Key, ...]) -> np.ndarray | None:
        for k in keys:
            pf = self.first.get(k)
            if pf is None or pf.length == VARLEN or not pf.length:
                continue
            v = ies.as_uint64(rec[pf.name]).astype(np.int64)
            ie = k[1]
            if ie in (152, 153):
                return v
            if ie in (150, 151):
                return v * 1000
            if ie in (154, 155, 156, 157):
                return ntp_to_ms(ies.as_uint64(rec[pf.name]))
            if ie in (21, 22):
                if np.all(meta.uptime_ms >= 0):
                    return sysuptime_to_ms(v, meta.uptime_ms, meta.export_ms)
                init = self._get(rec, ((0, 160),))
                base = init.astype(np.int64) if init is not None else meta.system_init_ms
                return base + v
            if ie in (158, 159):
                return meta.export_ms - v // 1000
        return None

    def _times(self, rec: np.ndarray, meta: RecordMeta, n: int) -> tuple[np.ndarray, np.ndarray]:
        start = self._time(rec, meta, _START)
        end = self._time(rec, meta, _END)
        dur_ms = self._get(rec, ((0, 161),))
        if dur_ms is None:
            dur_us = self._get(rec, ((0, 162),))
            dur_ms = dur_us // 1000 if dur_us is not None else None
        if start is None and end is None:
            start = end = meta.export_ms
        elif end is None:
            assert start is not None
            end = start + dur_ms.astype(np.int64) if dur_ms is not None else start
        elif start is None:
            start = end - dur_ms.astype(np.int64) if dur_ms is not None else end
        return np.maximum(start, 0), np.maximum(end, 0)

    def _extras(
        self, rec: np.ndarray, var: dict[int, list[bytes]] | None, n: int
    ) -> dict[str, pa.Array]:
        if not self.keep_unknown:
            return {}
        out: dict[str, pa.Array] = {}
        for pf in self.fields:
            if pf.element is not None or pf is not self.first[(pf.pen, pf.ie)]:
                continue
            name = ies.extra_name(pf.pen, pf.ie)
            if pf.length == VARLEN:
                out[name] = pa.array((var or {}).get(pf.index, []), type=pa.binary())
            elif pf.length:
                raw = np.ascontiguousarray(rec[pf.name]).tobytes()
                arr = pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(pf.length), n, [None, pa.py_buffer(raw)]
                )
                out[name] = arr.cast(pa.binary())
            else:
                out[name] = pa.array([b""] * n, type=pa.binary())
        return out


def _unspecified4(n: int) -> np.ndarray:
    """``n`` IPv4-mapped 0.0.0.0 addresses: the side a template does not carry
    (built only then; most templates carry both)."""
    return ipv4_to_addr16(np.zeros(n, dtype=np.uint32))


def ntp_to_ms(v: np.ndarray) -> np.ndarray:
    """64-bit NTP timestamps (RFC 7011 dateTimeMicro/Nanoseconds) -> Unix ms."""
    v = v.astype(np.uint64)
    secs = (v >> np.uint64(32)).astype(np.int64) - NTP_UNIX_OFFSET_S
    frac = (v & np.uint64(0xFFFFFFFF)) * np.uint64(1000) >> np.uint64(32)
    return secs * 1000 + frac.astype(np.int64)


def sysuptime_to_ms(t: np.ndarray, uptime: np.ndarray, export_ms: np.ndarray) -> np.ndarray:
    """sysUptime-relative times -> Unix ms.

    A flow ends before the packet that exports it, so a time *after* the
    header's sysUptime means the 32-bit uptime wrapped (every 49.7 days)
    in between; only up to ``FUTURE_TOLERANCE_MS`` ahead is taken as clock
    jitter. nfdump's v5 decoder reads it the same way.
    """
    d = (uptime - t) & 0xFFFFFFFF
    d = np.where(d > (1 << 32) - FUTURE_TOLERANCE_MS, d - (1 << 32), d)
    return export_ms - d


def app_id_column(col: np.ndarray, length: int) -> np.ndarray:
    """applicationId octets (RFC 6759: engine byte + selector) -> engine<<56 | selector."""
    raw = np.ascontiguousarray(col).view(np.uint8).reshape(-1, length)
    engine = raw[:, 0].astype(np.uint64) << np.uint64(56)
    if length == 1:
        return engine
    sel_bytes = raw[:, 1:][:, -7:]
    width = sel_bytes.shape[1]
    padded = np.zeros((len(col), 8), dtype=np.uint8)
    padded[:, 8 - width :] = sel_bytes
    return engine | padded.view(">u8").reshape(-1).astype(np.uint64)


def app_id_value(b: bytes) -> int:
    if not b:
        return 0
    return (b[0] << 56) | (int.from_bytes(b[1:][-7:], "big") if len(b) > 1 else 0)


#: Compiled plans by template layout, shared by every exporter that uses the
#: same layout (routers of one model and configuration send the same
#: templates): built once, and the decoder handles all their records as one
#: group. Bounded; forgotten all at once when full (templates keep theirs).
_PLANS: dict[tuple[Any, ...], RecordPlan] = {}
PLAN_CACHE_SIZE = 4096


def plan_for(template: Template, keep_unknown: bool = True) -> RecordPlan:
    """The template's compiled plan: kept on the template, shared by layout."""
    plan: RecordPlan | None = template.plan
    if plan is None:
        key = (template.fields, template.scope_count, keep_unknown)
        plan = _PLANS.get(key)
        if plan is None:
            plan = RecordPlan(template, keep_unknown)
            if len(_PLANS) >= PLAN_CACHE_SIZE:
                _PLANS.clear()
            _PLANS[key] = plan
        template.plan = plan
    return plan
