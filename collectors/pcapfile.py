"""UDP datagrams from pcap and pcapng captures, and a small pcap writer.

Pure parsing over bytes (the caller reads the file): classic pcap (both byte
orders, micro- and nanosecond), pcapng (section, interface, enhanced and
simple packet blocks; per-interface link type and time resolution). Link
types: Ethernet (with 802.1Q/802.1ad tags), Linux cooked v1 and v2, raw IP,
BSD loopback. IPv4 fragments of a datagram are reassembled (bounded);
IPv6 with extension headers before UDP is followed.

Errors::

    CaptureError (ValueError)   not a pcap/pcapng file, or its framing is broken
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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


# -- writer (test fixtures, tools) ---------------------------------------------


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
