"""The project's one pcap module: UDP datagrams and conversations from captures, and writers.

Reading is pure parsing over bytes (the caller reads the file): classic pcap
(both byte orders, micro- and nanosecond), pcapng (section, interface,
enhanced and simple packet blocks; per-interface link type and time
resolution). Link types: Ethernet (with 802.1Q/802.1ad tags), Linux cooked v1
and v2, raw IP, BSD loopback. IPv4 fragments of a datagram are reassembled
(bounded); IPv6 with extension headers before UDP is followed.
:func:`read_flows` counts a capture's conversations (what a flow exporter
should report).

Writing, for the tools and tests that make captures: :func:`write_pcap`
(raw-IP link, UDP datagrams given as bytes, no checksums) and
:class:`PcapWriter` / :func:`write_packets` (Ethernet frames of IPv4/IPv6
UDP or TCP :class:`Packet` objects with correct IPv4, UDP and TCP checksums, so
softflowd, tshark, nfdump and ndpiReader read them as a real capture;
``voipflow simulate --pcap`` and the held-out captures use these).

Errors::

    CaptureError (ValueError)   not a pcap/pcapng file, or its framing is broken
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
_RAW_LINKS = {12, 14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6}

#: Incomplete IPv4 fragment sets kept at once; the oldest is dropped beyond.
MAX_FRAGMENT_SETS = 1024


class CaptureError(ValueError):
    """The bytes are not a capture file this reader understands."""


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    ts_ms: int
    src: bytes  # 16 bytes, IPv4 mapped
    src_port: int
    dst: bytes
    dst_port: int
    payload: bytes


def iter_frames(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(link type, timestamp ms, frame bytes) of every packet in a capture."""
    if len(data) < 4:
        raise CaptureError("file shorter than a capture header")
    magic = data[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng(data)
        return
    for endian in ("<", ">"):
        (m,) = struct.unpack(endian + "I", magic)
        if m in (0xA1B2C3D4, 0xA1B23C4D):
            yield from _pcap(data, endian, nano=m == 0xA1B23C4D)
            return
    raise CaptureError("not a pcap or pcapng file")


def _pcap(data: bytes, e: str, nano: bool) -> Iterator[tuple[int, int, bytes]]:
    if len(data) < 24:
        raise CaptureError("pcap header truncated")
    linktype = struct.unpack_from(e + "I", data, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(e + "IIII")
    pos = 24
    div = 1_000_000 if nano else 1000
    while pos + 16 <= len(data):
        sec, frac, incl, _ = rec.unpack_from(data, pos)
        pos += 16
        if pos + incl > len(data):
            break  # a capture cut off mid-packet: keep what came before
        yield linktype, sec * 1000 + frac // div, data[pos : pos + incl]
        pos += incl


def _pcapng(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    pos = 0
    e = "<"
    ifaces: list[tuple[int, int]] = []  # (linktype, units per second)
    while pos + 12 <= len(data):
        btype_raw = data[pos : pos + 4]
        if btype_raw == b"\x0a\x0d\x0d\x0a":
            bom = data[pos + 8 : pos + 12]
            e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        btype, blen = struct.unpack_from(e + "II", data, pos)
        if blen < 12 or blen % 4 or pos + blen > len(data):
            if blen < 12 or blen % 4:
                raise CaptureError(f"pcapng block of length {blen}")
            break
        body = pos + 8
        if btype == 1 and blen >= 20:  # interface description
            linktype = struct.unpack_from(e + "H", data, body)[0]
            ifaces.append((linktype, _if_tsresol(data, body + 8, pos + blen - 4, e)))
        elif btype in (6, 3) and ifaces:  # enhanced / simple packet
            if btype == 6 and blen >= 32:
                iface, hi, lo, caplen = struct.unpack_from(e + "IIII", data, body)
                if iface < len(ifaces):
                    lt, units = ifaces[iface]
                    ts = ((hi << 32) | lo) * 1000 // units
                    start = body + 20
                    yield lt, ts, data[start : min(start + caplen, pos + blen - 4)]
            elif btype == 3 and blen >= 16:
                lt, _ = ifaces[0]
                (orig,) = struct.unpack_from(e + "I", data, body)
                start = body + 4
                yield lt, 0, data[start : min(start + orig, pos + blen - 4)]
        pos += blen


def _if_tsresol(data: bytes, pos: int, end: int, e: str) -> int:
    while pos + 4 <= end:
        code, length = struct.unpack_from(e + "HH", data, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = data[pos + 4]
            return 2 ** (v & 0x7F) if v & 0x80 else 10 ** (v & 0x7F)
        pos += 4 + (length + 3) // 4 * 4
    return 1_000_000


def _ip_from_link(linktype: int, frame: bytes) -> bytes | None:
    if linktype == LINKTYPE_ETHERNET:
        pos, etype = 12, 0
        for _ in range(3):  # up to two VLAN tags
            if pos + 2 > len(frame):
                return None
            etype = struct.unpack_from(">H", frame, pos)[0]
            if etype in (0x8100, 0x88A8, 0x9100):
                pos += 4
                continue
            break
        pos += 2
        return frame[pos:] if etype in (0x0800, 0x86DD) else None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        etype = struct.unpack_from(">H", frame, 14)[0]
        return frame[16:] if etype in (0x0800, 0x86DD) else None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        etype = struct.unpack_from(">H", frame, 0)[0]
        return frame[20:] if etype in (0x0800, 0x86DD) else None
    if linktype == LINKTYPE_NULL:
        return frame[4:]
    if linktype in _RAW_LINKS:
        return frame
    return None


def iter_udp(data: bytes, ports: Iterable[int] | None = None) -> Iterator[UdpDatagram]:
    """Every UDP datagram in a capture (to one of ``ports`` when given)."""
    wanted = set(ports) if ports else None
    frags: dict[tuple[bytes, bytes, int], dict[int, bytes]] = {}
    frag_last: dict[tuple[bytes, bytes, int], int] = {}
    for linktype, ts, frame in iter_frames(data):
        ip = _ip_from_link(linktype, frame)
        if not ip:
            continue
        ver = ip[0] >> 4
        udp: bytes | None = None
        if ver == 4 and len(ip) >= 20:
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack_from(">H", ip, 2)[0]
            if ip[9] != 17 or ihl < 20 or total < ihl:
                continue
            src, dst = _V4_MAPPED + ip[12:16], _V4_MAPPED + ip[16:20]
            body = ip[ihl:total]
            flags_off = struct.unpack_from(">H", ip, 6)[0]
            more, offset = flags_off & 0x2000, (flags_off & 0x1FFF) * 8
            if more or offset:
                key = (src, dst, struct.unpack_from(">H", ip, 4)[0])
                parts = frags.setdefault(key, {})
                parts[offset] = body
                if not more:
                    frag_last[key] = offset + len(body)
                if len(frags) > MAX_FRAGMENT_SETS:
                    old = next(iter(frags))
                    frags.pop(old)
                    frag_last.pop(old, None)
                udp = _reassemble(parts, frag_last.get(key))
                if udp is None:
                    continue
                frags.pop(key, None)
                frag_last.pop(key, None)
            else:
                udp = body
        elif ver == 6 and len(ip) >= 40:
            src, dst = ip[8:24], ip[24:40]
            nxt, pos = ip[6], 40
            for _ in range(8):  # hop-by-hop, routing, destination options
                if nxt in (0, 43, 60) and pos + 8 <= len(ip):
                    nxt, pos = ip[pos], pos + (ip[pos + 1] + 1) * 8
                else:
                    break
            if nxt != 17:
                continue
            udp = ip[pos:]
        else:
            continue
        if udp is None or len(udp) < 8:
            continue
        sport, dport, ulen = struct.unpack_from(">HHH", udp, 0)
        if wanted is not None and dport not in wanted:
            continue
        end = ulen if 8 <= ulen <= len(udp) else len(udp)
        yield UdpDatagram(ts, src, sport, dst, dport, bytes(udp[8:end]))


def _reassemble(parts: dict[int, bytes], total: int | None) -> bytes | None:
    if total is None:
        return None
    out = bytearray()
    for off in sorted(parts):
        if off != len(out):
            return None
        out += parts[off]
    return bytes(out) if len(out) == total else None


FlowKey = tuple[int, str, int, str, int]


def read_flows(data: bytes) -> dict[FlowKey, tuple[list[int], list[int]]]:
    """Conversations of a capture: key ``(proto, src, sport, dst, dport)`` as first
    seen -> ([packets, IP bytes] forward, [packets, IP bytes] reverse).

    Ports are 0 for protocols other than TCP and UDP; fragments count as the
    packets they are.
    """
    flows: dict[FlowKey, tuple[list[int], list[int]]] = {}
    for linktype, _, frame_ in iter_frames(data):
        ip = _ip_from_link(linktype, frame_)
        if not ip:
            continue
        if ip[0] >> 4 == 4 and len(ip) >= 20:
            ihl = (ip[0] & 0x0F) * 4
            proto, length = ip[9], struct.unpack_from(">H", ip, 2)[0]
            src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
            l4 = ip[ihl:]
        elif ip[0] >> 4 == 6 and len(ip) >= 40:
            proto, length = ip[6], 40 + struct.unpack_from(">H", ip, 4)[0]
            src, dst = str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40]))
            l4 = ip[40:]
        else:
            continue
        sp = dp = 0
        if proto in (6, 17) and len(l4) >= 4:
            sp, dp = struct.unpack_from(">HH", l4, 0)
        fwd_key = (proto, src, sp, dst, dp)
        rev_key = (proto, dst, dp, src, sp)
        if rev_key in flows and fwd_key not in flows:
            counts = flows[rev_key][1]
        else:
            counts = flows.setdefault(fwd_key, ([0, 0], [0, 0]))[0]
        counts[0] += 1
        counts[1] += length
    return flows


# -- writers (tools, test fixtures, held-out captures) --------------------------


def write_pcap(
    datagrams: Iterable[tuple[int, bytes, int, bytes, int, bytes]],
) -> bytes:
    """A classic pcap (raw IPv4/IPv6 link) of UDP datagrams.

    Each item is ``(ts_ms, src16, src_port, dst16, dst_port, payload)``;
    addresses are 16 bytes (IPv4 mapped for IPv4). Checksums are left zero.
    """
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_RAW))
    for ts, src, sport, dst, dport, payload in datagrams:
        udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
        if src[:12] == _V4_MAPPED and dst[:12] == _V4_MAPPED:
            hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                              src[12:], dst[12:])  # fmt: skip
        else:
            hdr = struct.pack(">IHBB16s16s", 6 << 28, len(udp), 17, 64, src, dst)
        frame = hdr + udp
        out += struct.pack("<IIII", ts // 1000, ts % 1000 * 1000, len(frame), len(frame))
        out += frame
    return bytes(out)


TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_MAC_A = bytes.fromhex("020000000001")
_MAC_B = bytes.fromhex("020000000002")


@dataclass(slots=True)
class Packet:
    """One frame to write: time in seconds and the IP packet's parts."""

    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    proto: int  # 6 or 17
    payload: bytes
    tcp_flags: int = TCP_ACK | TCP_PSH
    seq: int = 0
    ack: int = 0
    tos: int = 0  # IPv4 type of service / IPv6 traffic class (DSCP << 2 | ECN)

    @property
    def ip_len(self) -> int:
        """Length of the IP packet (what flow exporters count as bytes)."""
        v6 = ":" in self.src
        l4 = 8 if self.proto == 17 else 20
        return (40 if v6 else 20) + l4 + len(self.payload)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _l4(p: Packet, pseudo: bytes) -> bytes:
    if p.proto == 17:
        length = 8 + len(p.payload)
        head = struct.pack("!HHHH", p.sport, p.dport, length, 0)
        csum = _checksum(pseudo + head + p.payload) or 0xFFFF
        return struct.pack("!HHHH", p.sport, p.dport, length, csum) + p.payload
    head = struct.pack(
        "!HHIIBBHHH", p.sport, p.dport, p.seq, p.ack, 5 << 4, p.tcp_flags, 65535, 0, 0
    )
    csum = _checksum(pseudo + head + p.payload)
    return head[:16] + struct.pack("!H", csum) + head[18:] + p.payload


def frame(p: Packet, ip_id: int = 0) -> bytes:
    """Ethernet frame of one packet (IPv4 with don't-fragment set)."""
    src = ipaddress.ip_address(p.src)
    dst = ipaddress.ip_address(p.dst)
    l4_len = (8 if p.proto == 17 else 20) + len(p.payload)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, p.proto, l4_len)
        l4 = _l4(p, pseudo)
        head = struct.pack(
            "!BBHHHBBH", 0x45, p.tos, 20 + len(l4), ip_id & 0xFFFF, 0x4000, 64, p.proto, 0
        )
        head += src.packed + dst.packed
        head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
        ethertype = 0x0800
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", l4_len, p.proto)
        l4 = _l4(p, pseudo)
        first = 6 << 28 | p.tos << 20
        head = struct.pack("!IHBB", first, len(l4), p.proto, 64) + src.packed + dst.packed
        ethertype = 0x86DD
    return _MAC_B + _MAC_A + struct.pack("!H", ethertype) + head + l4


class PcapWriter:
    """Appends Ethernet frames to a new classic pcap file (microseconds, link type 1)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: BinaryIO = self.path.open("wb")
        self._fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        self._ip_id = 0
        self.packets = 0

    def write(self, ts_ms: int, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        """One UDP datagram from ``src`` (address, port) to ``dst`` at ``ts_ms``."""
        secs, ms = divmod(ts_ms, 1000)
        p = Packet(secs, src[0], src[1], dst[0], dst[1], 17, payload)
        self._append(secs, ms * 1000, p)

    def write_packet(self, p: Packet) -> None:
        """One packet at its own time (``p.ts`` in seconds)."""
        sec = int(p.ts)
        usec = round((p.ts - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self._append(sec, usec, p)

    def _append(self, sec: int, usec: int, p: Packet) -> None:
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        data = frame(p, self._ip_id)
        self._fh.write(struct.pack("<IIII", sec, usec, len(data), len(data)))
        self._fh.write(data)
        self.packets += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_packets(path: Path, packets: Iterable[Packet]) -> int:
    """Write packets (sorted by time here) to a classic pcap file; returns the count."""
    with PcapWriter(path) as w:
        for p in sorted(packets, key=lambda p: p.ts):
            w.write_packet(p)
        return w.packets
