"""Vectorised NetFlow v5, NetFlow v9 and IPFIX export encoders (columns -> datagrams).

The inverse of the decoders: flow records held as columns (a
:class:`voipflow.schemas.flowbatch.FlowBatch` or a mapping of numpy arrays named as in
:data:`voipflow.schemas.flowbatch.FLOW_COLUMNS`) become export datagrams, the way a
router or BNG would send them. The simulator (``voipflow simulate``) and the
collector benchmarks use them to make realistic packet streams at high rates.

Records are packed with one assignment per column into a big-endian numpy
structured array and each datagram takes ``.tobytes()`` of a slice of it, so
there is no Python work per record, only per datagram (header and set header).

What an encoder does like a real exporter:

* keeps export state per instance (one instance = one exporter and
  observation domain): sequence numbers (v5 and IPFIX count data records, v9
  counts export packets), a boot time for ``sysUptime`` (``boot_time_ms``;
  by default 30 days before the first export) (v5/v9 flow times are
  milliseconds since boot, wrapping at 2**32; IPFIX uses absolute
  ``flowStartMilliseconds``/``flowEndMilliseconds``);
* sends its templates (IPv4 and IPv6 data templates, and the sampling options
  template with its data when sampling is on) in the first datagram and again
  every ``template_refresh_packets`` datagrams or ``template_refresh_ms``
  of export time, whichever comes first;
* never builds a datagram larger than ``mtu`` minus the IPv4 and UDP headers.

Sampling is announced, counters are not scaled: the caller passes the
counters as sampled (what the router counted), and the encoder says 1-in-N in
the v5 header (mode 01, packet interval), in a v9 options record (IE 34
``samplingInterval``, 35 ``samplingAlgorithm``) or in an IPFIX options record
(IE 302 ``selectorId`` as scope, 304 ``selectorAlgorithm`` = 1 systematic
count-based, 305 ``samplingPacketInterval`` = 1, 306 ``samplingPacketSpace`` =
N-1; or IE 34/35 with ``ipfix_sampling="legacy"``).

Errors::

    EncodeError            (ValueError) the records cannot be encoded:
                           a missing column, IPv6 in NetFlow v5, a counter
                           or time that does not fit the format's field
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from voipflow.schemas.flowbatch import FlowBatch

__all__ = [
    "IPFIX_TEMPLATE_V4",
    "IPFIX_TEMPLATE_V6",
    "EncodeError",
    "ExportEncoder",
    "IPFIXEncoder",
    "NetFlowV5Encoder",
    "NetFlowV9Encoder",
    "make_encoder",
]

#: IPv4 header (20) + UDP header (8): what the MTU must leave room for.
IP_UDP_OVERHEAD = 28

Columns = Mapping[str, Any]


class EncodeError(ValueError):
    """Flow records that cannot be encoded in the requested export format."""


class ExportEncoder(Protocol):
    """One exporter's (and observation domain's) export process."""

    version: int

    def encode(self, records: FlowBatch | Columns, export_time_ms: int) -> list[bytes]:
        """Records -> export datagrams sent at ``export_time_ms`` (UTC ms)."""
        ...


# -- columns -----------------------------------------------------------------

_REQUIRED = (
    "src_addr",
    "dst_addr",
    "src_port",
    "dst_port",
    "protocol",
    "packets",
    "bytes",
    "flow_start_ms",
    "flow_end_ms",
)
_OPTIONAL_ZERO = ("tcp_flags", "tos", "input_if", "output_if", "src_as", "dst_as")
_V4_MAPPED = np.frombuffer(b"\x00" * 10 + b"\xff\xff", dtype=np.uint8)


@dataclass(slots=True)
class _Records:
    """Normalised columns: addresses as (n, 16) uint8, the rest as numpy ints."""

    n: int
    cols: dict[str, np.ndarray]
    src: np.ndarray
    dst: np.ndarray
    is_v4: np.ndarray


def _normalise(records: FlowBatch | Columns) -> _Records:
    cols_in: Columns = records.columns if isinstance(records, FlowBatch) else records
    missing = [c for c in _REQUIRED if c not in cols_in]
    if missing:
        raise EncodeError(f"missing columns: {', '.join(missing)}")
    n = len(cols_in["packets"])
    cols: dict[str, np.ndarray] = {}
    for name in _REQUIRED[2:]:
        cols[name] = np.asarray(cols_in[name])
    for name in _OPTIONAL_ZERO:
        cols[name] = np.asarray(cols_in[name]) if name in cols_in else np.zeros(n, np.uint8)
    for name, col in cols.items():
        if len(col) != n:
            raise EncodeError(f"column {name!r} has {len(col)} rows, expected {n}")
    src = _addr_bytes(cols_in["src_addr"], n, "src_addr")
    dst = _addr_bytes(cols_in["dst_addr"], n, "dst_addr")
    icmp = np.isin(cols["protocol"], (1, 58))
    cols["icmp_type_code"] = np.where(icmp, cols["dst_port"], 0)
    if "ip_version" in cols_in:
        is_v4 = np.asarray(cols_in["ip_version"]) == 4
    else:
        is_v4 = (src[:, :12] == _V4_MAPPED).all(axis=1)
    return _Records(n, cols, src, dst, is_v4)


def _addr_bytes(col: Any, n: int, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(col, dtype="S16"))
    if len(arr) != n:
        raise EncodeError(f"column {name!r} has {len(arr)} rows, expected {n}")
    return arr.view(np.uint8).reshape(n, 16)


def _check_range(name: str, values: np.ndarray, limit: int, what: str) -> None:
    if len(values) and (values.min() < 0 or values.max() >= limit):
        raise EncodeError(f"{name} out of range for {what}: {values.min()}..{values.max()}")


def _chunks(n: int, per_packet: int) -> list[tuple[int, int]]:
    return [(i, min(i + per_packet, n)) for i in range(0, n, per_packet)]


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


# -- NetFlow v5 --------------------------------------------------------------

_V5_HEADER = struct.Struct(">HHIIIIBBH")
_V5_RECORD = np.dtype(
    [
        ("srcaddr", ">u4"),
        ("dstaddr", ">u4"),
        ("nexthop", ">u4"),
        ("input", ">u2"),
        ("output", ">u2"),
        ("dpkts", ">u4"),
        ("doctets", ">u4"),
        ("first", ">u4"),
        ("last", ">u4"),
        ("srcport", ">u2"),
        ("dstport", ">u2"),
        ("pad1", "u1"),
        ("tcp_flags", "u1"),
        ("prot", "u1"),
        ("tos", "u1"),
        ("src_as", ">u2"),
        ("dst_as", ">u2"),
        ("src_mask", "u1"),
        ("dst_mask", "u1"),
        ("pad2", ">u2"),
    ]
)
assert _V5_RECORD.itemsize == 48
#: The v5 format caps a datagram at 30 records whatever the MTU.
V5_MAX_RECORDS = 30


class NetFlowV5Encoder:
    """NetFlow v5: fixed 48-byte IPv4 records, at most 30 per datagram."""

    version = 5

    def __init__(
        self,
        *,
        engine_type: int = 0,
        engine_id: int = 0,
        sampling_rate: int = 1,
        boot_time_ms: int | None = None,
        mtu: int = 1500,
    ) -> None:
        if not 1 <= sampling_rate < 1 << 14:
            raise EncodeError(f"v5 sampling interval must be 1..16383, got {sampling_rate}")
        if not (0 <= engine_type < 256 and 0 <= engine_id < 256):
            raise EncodeError("v5 engine type and id are one byte each")
        self.engine_type = engine_type
        self.engine_id = engine_id
        self.sampling_rate = sampling_rate
        self.boot_time_ms = boot_time_ms
        self.per_packet = min(V5_MAX_RECORDS, (mtu - IP_UDP_OVERHEAD - 24) // 48)
        if self.per_packet < 1:
            raise EncodeError(f"mtu {mtu} too small for one v5 record")
        #: Records exported so far (the next datagram's ``flow_sequence``).
        self.sequence = 0

    def encode(self, records: FlowBatch | Columns, export_time_ms: int) -> list[bytes]:
        boot = self.boot_time_ms = _boot(self.boot_time_ms, export_time_ms)
        r = _normalise(records)
        if not r.is_v4.all():
            raise EncodeError(f"NetFlow v5 carries IPv4 only: {int((~r.is_v4).sum())} IPv6 records")
        c = r.cols
        _check_range("packets", c["packets"], 1 << 32, "v5 dPkts")
        _check_range("bytes", c["bytes"], 1 << 32, "v5 dOctets")
        _check_range("input_if/output_if", np.r_[c["input_if"], c["output_if"]], 1 << 16, "v5")
        _check_range("src_as/dst_as", np.r_[c["src_as"], c["dst_as"]], 1 << 16, "v5")
        rec = np.zeros(r.n, dtype=_V5_RECORD)
        rec["srcaddr"] = r.src[:, 12:16].copy().view(">u4").reshape(-1)
        rec["dstaddr"] = r.dst[:, 12:16].copy().view(">u4").reshape(-1)
        rec["input"] = c["input_if"]
        rec["output"] = c["output_if"]
        rec["dpkts"] = c["packets"]
        rec["doctets"] = c["bytes"]
        rec["first"] = _uptime(c["flow_start_ms"], boot)
        rec["last"] = _uptime(c["flow_end_ms"], boot)
        rec["srcport"] = c["src_port"]
        rec["dstport"] = c["dst_port"]
        rec["tcp_flags"] = c["tcp_flags"]
        rec["prot"] = c["protocol"]
        rec["tos"] = c["tos"]
        rec["src_as"] = c["src_as"]
        rec["dst_as"] = c["dst_as"]
        uptime = int(_uptime(np.array([export_time_ms]), boot)[0])
        secs, msecs = divmod(export_time_ms, 1000)
        sampling = (1 << 14 | self.sampling_rate) if self.sampling_rate > 1 else 0
        out = []
        for lo, hi in _chunks(r.n, self.per_packet):
            header = _V5_HEADER.pack(
                5,
                hi - lo,
                uptime,
                secs,
                msecs * 1_000_000,
                self.sequence & 0xFFFFFFFF,
                self.engine_type,
                self.engine_id,
                sampling,
            )
            out.append(header + rec[lo:hi].tobytes())
            self.sequence += hi - lo
        return out


#: An exporter created without a boot time has been up this long at its first export.
DEFAULT_UPTIME_MS = 30 * 86_400_000


def _boot(boot_ms: int | None, export_time_ms: int) -> int:
    return export_time_ms - DEFAULT_UPTIME_MS if boot_ms is None else boot_ms


def _uptime(ms: np.ndarray, boot_ms: int) -> np.ndarray:
    """Absolute ms -> sysUptime ms (wrapping at 2**32 as exporters' counters do)."""
    rel = np.asarray(ms, dtype=np.int64) - boot_ms
    if len(rel) and rel.min() < 0:
        raise EncodeError("flow time before the exporter's boot time")
    return (rel & 0xFFFFFFFF).astype(np.uint32)


# -- templates shared by v9 and IPFIX ----------------------------------------

#: (information element id, length, column). Addresses and times are special.
_COMMON_FIELDS: tuple[tuple[int, int, str], ...] = (
    (7, 2, "src_port"),  # sourceTransportPort
    (11, 2, "dst_port"),  # destinationTransportPort
    (4, 1, "protocol"),  # protocolIdentifier
    (6, 1, "tcp_flags"),  # tcpControlBits (reduced size, as most exporters send it)
    (5, 1, "tos"),  # ipClassOfService
    (2, 8, "packets"),  # packetDeltaCount
    (1, 8, "bytes"),  # octetDeltaCount
    (10, 4, "input_if"),  # ingressInterface
    (14, 4, "output_if"),  # egressInterface
    (16, 4, "src_as"),  # bgpSourceAsNumber
    (17, 4, "dst_as"),  # bgpDestinationAsNumber
)
_ADDR_FIELDS = {
    4: ((8, 4, "src_addr"), (12, 4, "dst_addr")),
    6: ((27, 16, "src_addr"), (28, 16, "dst_addr")),
}
#: ICMP type * 256 + code, which the records carry in ``dst_port`` (as NetFlow
#: v5 does); 0 for other protocols. Collectors such as nfdump take ICMP type
#: and code only from this element: v9's ICMP_TYPE (32) serves IPv4 and IPv6,
#: IPFIX has icmpTypeCodeIPv4 (32) and icmpTypeCodeIPv6 (139).
_ICMP_FIELDS = {
    (9, 4): ((32, 2, "icmp_type_code"),),
    (9, 6): ((32, 2, "icmp_type_code"),),
    (10, 4): ((32, 2, "icmp_type_code"),),
    (10, 6): ((139, 2, "icmp_type_code"),),
}
#: v9 FIRST_SWITCHED / LAST_SWITCHED (sysUptime ms); IPFIX flowStart/EndMilliseconds.
_TIME_FIELDS = {
    9: ((22, 4, "flow_start_ms"), (21, 4, "flow_end_ms")),
    10: ((152, 8, "flow_start_ms"), (153, 8, "flow_end_ms")),
}
_INT_DTYPES = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}


@dataclass(frozen=True, slots=True)
class DataTemplate:
    """A data template: its id, fields and the packed record dtype."""

    template_id: int
    ip_version: int
    fields: tuple[tuple[int, int, str], ...]
    dtype: np.dtype[Any]

    def template_record(self) -> bytes:
        body = struct.pack(">HH", self.template_id, len(self.fields))
        return body + b"".join(struct.pack(">HH", ie, ln) for ie, ln, _ in self.fields)


def _data_template(version: int, template_id: int, ip_version: int) -> DataTemplate:
    fields = (
        _ADDR_FIELDS[ip_version]
        + _COMMON_FIELDS
        + _ICMP_FIELDS[version, ip_version]
        + _TIME_FIELDS[version]
    )
    dtype = np.dtype(
        [
            (f"f{i}", ("u1", 16) if ln == 16 else _INT_DTYPES[ln])
            for i, (_, ln, _) in enumerate(fields)
        ]
    )
    return DataTemplate(template_id, ip_version, fields, dtype)


IPFIX_TEMPLATE_V4 = _data_template(10, 256, 4)
IPFIX_TEMPLATE_V6 = _data_template(10, 257, 6)


class _TemplateEncoder:
    """What NetFlow v9 and IPFIX share: templates, refresh, datagram assembly."""

    version: int
    header_size: int
    template_set_id: int

    def __init__(
        self,
        *,
        observation_domain_id: int,
        sampling_rate: int,
        mtu: int,
        template_refresh_packets: int,
        template_refresh_ms: int,
        template_id_base: int,
    ) -> None:
        if not 0 <= observation_domain_id < 1 << 32:
            raise EncodeError("observation domain id must fit 32 bits")
        if not 1 <= sampling_rate < 1 << 31:
            raise EncodeError(f"sampling rate must be >= 1, got {sampling_rate}")
        if not 256 <= template_id_base <= 65533:
            raise EncodeError("template ids start at 256")
        self.observation_domain_id = observation_domain_id
        self.sampling_rate = sampling_rate
        self.payload_max = mtu - IP_UDP_OVERHEAD
        self.template_refresh_packets = max(1, template_refresh_packets)
        self.template_refresh_ms = template_refresh_ms
        self.templates = {
            4: _data_template(self.version, template_id_base, 4),
            6: _data_template(self.version, template_id_base + 1, 6),
        }
        self.options_template_id = template_id_base + 2
        self._templates_set = self._template_set()
        self._options_sets = self._options_sets_bytes() if sampling_rate > 1 else b""
        for t in self.templates.values():
            if self._fits(t) < 1:
                raise EncodeError(f"mtu {mtu} too small for one record with templates")
        self._packets_since_templates = self.template_refresh_packets
        self._last_templates_ms: int | None = None
        #: Export datagrams sent so far.
        self.packets = 0
        #: Flow data records sent so far.
        self.records = 0
        #: All data records sent so far, options records included (IPFIX sequence).
        self.data_records = 0

    # subclasses
    def _start(self, export_time_ms: int) -> None:
        """Called first by every encode (v9 fixes its boot time here)."""

    def _header(self, n_records: int, length: int, export_time_ms: int) -> bytes:
        raise NotImplementedError

    def _options_sets_bytes(self) -> bytes:
        raise NotImplementedError

    def _fill_times(self, rec: np.ndarray, names: list[str], c: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    # shared
    def _template_set(self) -> bytes:
        body = b"".join(t.template_record() for t in self.templates.values())
        return struct.pack(">HH", self.template_set_id, 4 + len(body)) + body

    def _fits(self, t: DataTemplate) -> int:
        room = self.payload_max - self.header_size - 4
        room -= len(self._templates_set) + len(self._options_sets)
        return room // t.dtype.itemsize

    def _templates_due(self, export_time_ms: int) -> bool:
        if self._packets_since_templates >= self.template_refresh_packets:
            return True
        last = self._last_templates_ms
        return last is None or export_time_ms - last >= self.template_refresh_ms

    def template_datagram(self, export_time_ms: int) -> bytes:
        """A datagram holding only the templates (and sampling options)."""
        self._start(export_time_ms)
        return self._finish(self._take_templates(export_time_ms), 0, True, export_time_ms)

    def _take_templates(self, export_time_ms: int) -> bytes:
        self._last_templates_ms = export_time_ms
        self._packets_since_templates = 0
        return self._templates_set + self._options_sets

    def _finish(self, sets: bytes, n_data: int, with_templates: bool, t_ms: int) -> bytes:
        # v9 counts template and options records in the header's count too;
        # IPFIX's sequence counts options data records as data records.
        n_options_data = int(with_templates and self.sampling_rate > 1)
        n_records = n_data
        if with_templates:
            n_records += len(self.templates) + 2 * n_options_data
        header = self._header(n_records, self.header_size + len(sets), t_ms)
        self.packets += 1
        self.records += n_data
        self.data_records += n_data + n_options_data
        self._packets_since_templates += 1
        return header + sets

    def encode(self, records: FlowBatch | Columns, export_time_ms: int) -> list[bytes]:
        self._start(export_time_ms)
        r = _normalise(records)
        out: list[bytes] = []
        for ipv, mask in ((4, r.is_v4), (6, ~r.is_v4)):
            if not mask.any():
                continue
            rec = self._pack(r, mask, self.templates[ipv])
            out.extend(self._datagrams(rec, self.templates[ipv], export_time_ms))
        return out

    def _pack(self, r: _Records, mask: np.ndarray, t: DataTemplate) -> np.ndarray:
        take = np.flatnonzero(mask) if not mask.all() else slice(None)
        c = {k: v[take] for k, v in r.cols.items()}
        n = len(c["packets"])
        rec = np.empty(n, dtype=t.dtype)
        names = list(t.dtype.names or ())
        src, dst = r.src[take], r.dst[take]
        if t.ip_version == 4:
            rec[names[0]] = src[:, 12:16].copy().view(">u4").reshape(-1)
            rec[names[1]] = dst[:, 12:16].copy().view(">u4").reshape(-1)
        else:
            rec[names[0]] = src
            rec[names[1]] = dst
        for i, (_, ln, col) in enumerate(t.fields[2:-2], start=2):
            if ln < 8:
                _check_range(col, c[col], 1 << (8 * ln), f"a {ln}-byte field")
            rec[names[i]] = c[col]
        self._fill_times(rec, names[-2:], c)
        return rec

    def encode_small_sets(
        self,
        records: FlowBatch | Columns,
        export_time_ms: int,
        records_per_set: int = 2,
        sets_per_datagram: int = 7,
    ) -> list[bytes]:
        """Like :meth:`encode`, but each datagram carries several small data
        sets (``sets_per_datagram`` of ``records_per_set`` records), as
        softflowd and other host exporters send them; templates go in front
        of the data sets of a datagram when due."""
        if records_per_set < 1 or sets_per_datagram < 1:
            raise EncodeError("records per set and sets per datagram must be >= 1")
        self._start(export_time_ms)
        r = _normalise(records)
        out: list[bytes] = []
        for ipv, mask in ((4, r.is_v4), (6, ~r.is_v4)):
            if not mask.any():
                continue
            t = self.templates[ipv]
            rec = self._pack(r, mask, t)
            per = records_per_set * sets_per_datagram
            for lo in range(0, len(rec), per):
                with_templates = self._templates_due(export_time_ms)
                sets = [self._take_templates(export_time_ms)] if with_templates else []
                part = rec[lo : lo + per]
                for k in range(0, len(part), records_per_set):
                    body = part[k : k + records_per_set].tobytes()
                    pad = self._data_padding(len(body))
                    sets.append(struct.pack(">HH", t.template_id, 4 + len(body) + pad))
                    sets.append(body + b"\0" * pad)
                out.append(self._finish(b"".join(sets), len(part), with_templates, export_time_ms))
        return out

    def _datagrams(self, rec: np.ndarray, t: DataTemplate, t_ms: int) -> list[bytes]:
        out = []
        size = t.dtype.itemsize
        lo, n = 0, len(rec)
        while lo < n:
            with_templates = self._templates_due(t_ms)
            sets = self._take_templates(t_ms) if with_templates else b""
            room = self.payload_max - self.header_size - len(sets) - 4
            hi = min(n, lo + room // size)
            body = rec[lo:hi].tobytes()
            pad = self._data_padding(len(body))
            sets += struct.pack(">HH", t.template_id, 4 + len(body) + pad) + body + b"\0" * pad
            out.append(self._finish(sets, hi - lo, with_templates, t_ms))
            lo = hi
        return out

    def _data_padding(self, n: int) -> int:
        return 0


# -- NetFlow v9 --------------------------------------------------------------

_V9_HEADER = struct.Struct(">HHIIII")


class NetFlowV9Encoder(_TemplateEncoder):
    """NetFlow v9 (RFC 3954): templates in FlowSet 0, sampling options in FlowSet 1."""

    version = 9
    header_size = 20
    template_set_id = 0

    def __init__(
        self,
        *,
        source_id: int = 0,
        sampling_rate: int = 1,
        boot_time_ms: int | None = None,
        mtu: int = 1500,
        template_refresh_packets: int = 20,
        template_refresh_ms: int = 30_000,
        template_id_base: int = 256,
    ) -> None:
        self.boot_time_ms = boot_time_ms
        super().__init__(
            observation_domain_id=source_id,
            sampling_rate=sampling_rate,
            mtu=mtu,
            template_refresh_packets=template_refresh_packets,
            template_refresh_ms=template_refresh_ms,
            template_id_base=template_id_base,
        )

    def _header(self, n_records: int, length: int, export_time_ms: int) -> bytes:
        # The header has whole seconds only, and collectors take the boot time
        # as unix_secs * 1000 - sysUptime: the export instant is truncated to
        # its second for both fields so flow times come back to the millisecond.
        secs = export_time_ms // 1000
        uptime = secs * 1000 - self._boot_ms
        if uptime < 0:
            raise EncodeError("export time before the exporter's boot time")
        # RFC 3954: the sequence counts export packets, starting at 0.
        return _V9_HEADER.pack(
            9,
            n_records,
            uptime & 0xFFFFFFFF,
            secs,
            self.packets & 0xFFFFFFFF,
            self.observation_domain_id,
        )

    def _options_sets_bytes(self) -> bytes:
        # Scope: System (type 1), the source id; options: SAMPLING_INTERVAL (34),
        # SAMPLING_ALGORITHM (35, 1 = deterministic 1-in-N).
        tmpl = struct.pack(">HHHHHHHH", self.options_template_id, 4, 8, 1, 4, 34, 4, 35)
        tmpl += struct.pack(">H", 1)
        tset = struct.pack(">HH", 1, 4 + len(tmpl) + _pad4(4 + len(tmpl))) + tmpl
        tset += b"\0" * _pad4(len(tset))
        data = struct.pack(">IIB", self.observation_domain_id, self.sampling_rate, 1)
        dset = struct.pack(">HH", self.options_template_id, 4 + len(data) + _pad4(4 + len(data)))
        dset += data + b"\0" * _pad4(4 + len(data))
        return tset + dset

    def _fill_times(self, rec: np.ndarray, names: list[str], c: dict[str, np.ndarray]) -> None:
        rec[names[0]] = _uptime(c["flow_start_ms"], self._boot_ms)
        rec[names[1]] = _uptime(c["flow_end_ms"], self._boot_ms)

    def _start(self, export_time_ms: int) -> None:
        self.boot_time_ms = _boot(self.boot_time_ms, export_time_ms)

    @property
    def _boot_ms(self) -> int:
        assert self.boot_time_ms is not None, "set by _start()"
        return self.boot_time_ms

    def _data_padding(self, n: int) -> int:
        # RFC 3954 5.3: a FlowSet SHOULD be padded to a 32-bit boundary.
        return _pad4(4 + n)


# -- IPFIX -------------------------------------------------------------------

_IPFIX_HEADER = struct.Struct(">HHIII")


class IPFIXEncoder(_TemplateEncoder):
    """IPFIX (RFC 7011): templates in Set 2, sampling options in Set 3."""

    version = 10
    header_size = 16
    template_set_id = 2

    def __init__(
        self,
        *,
        observation_domain_id: int = 0,
        sampling_rate: int = 1,
        mtu: int = 1500,
        template_refresh_packets: int = 20,
        template_refresh_ms: int = 30_000,
        template_id_base: int = 256,
        ipfix_sampling: Literal["psamp", "legacy"] = "psamp",
        selector_id: int = 1,
    ) -> None:
        self.ipfix_sampling = ipfix_sampling
        self.selector_id = selector_id
        super().__init__(
            observation_domain_id=observation_domain_id,
            sampling_rate=sampling_rate,
            mtu=mtu,
            template_refresh_packets=template_refresh_packets,
            template_refresh_ms=template_refresh_ms,
            template_id_base=template_id_base,
        )

    def _header(self, n_records: int, length: int, export_time_ms: int) -> bytes:
        # RFC 7011 3.1: the sequence counts data records (options records
        # included) sent before this message.
        return _IPFIX_HEADER.pack(
            10,
            length,
            export_time_ms // 1000,
            self.data_records & 0xFFFFFFFF,
            self.observation_domain_id,
        )

    def _options_sets_bytes(self) -> bytes:
        tid = self.options_template_id
        if self.ipfix_sampling == "legacy":
            # scope observationDomainId (149); samplingInterval (34), samplingAlgorithm (35)
            tmpl = struct.pack(">HHHHHHHHH", tid, 3, 1, 149, 4, 34, 4, 35, 1)
            data = struct.pack(">IIB", self.observation_domain_id, self.sampling_rate, 1)
        else:
            # scope selectorId (302); selectorAlgorithm (304) = 1 systematic
            # count-based; samplingPacketInterval (305) = 1 packet taken out of
            # every samplingPacketInterval + samplingPacketSpace (306).
            tmpl = struct.pack(">HHH", tid, 4, 1)
            tmpl += struct.pack(">HHHHHHHH", 302, 8, 304, 2, 305, 4, 306, 4)
            data = struct.pack(">QHII", self.selector_id, 1, 1, self.sampling_rate - 1)
        tset = struct.pack(">HH", 3, 4 + len(tmpl)) + tmpl
        dset = struct.pack(">HH", tid, 4 + len(data)) + data
        return tset + dset

    def _fill_times(self, rec: np.ndarray, names: list[str], c: dict[str, np.ndarray]) -> None:
        rec[names[0]] = c["flow_start_ms"]
        rec[names[1]] = c["flow_end_ms"]


def make_encoder(version: int, **kwargs: Any) -> ExportEncoder:
    """An encoder for ``version`` 5, 9 or 10 with that class's keyword arguments.

    ``observation_domain_id`` is accepted for every version (v9 source id; v5
    engine type << 8 | engine id).
    """
    domain = int(kwargs.pop("observation_domain_id", 0))
    if version == 5:
        kwargs.setdefault("engine_type", domain >> 8 & 0xFF)
        kwargs.setdefault("engine_id", domain & 0xFF)
        for k in ("template_refresh_packets", "template_refresh_ms", "ipfix_sampling"):
            kwargs.pop(k, None)
        return NetFlowV5Encoder(**kwargs)
    if version == 9:
        kwargs.setdefault("source_id", domain)
        kwargs.pop("ipfix_sampling", None)
        return NetFlowV9Encoder(**kwargs)
    if version == 10:
        kwargs.pop("boot_time_ms", None)
        return IPFIXEncoder(observation_domain_id=domain, **kwargs)
    raise EncodeError(f"unknown export version {version}: use 5, 9 or 10 (IPFIX)")
