"""A minimal classic-pcap writer: Ethernet + IPv4/IPv6 + UDP/TCP frames.

Only what the held-out generator needs: each packet is built from its
addresses, ports, payload and (for TCP) flags, with correct IPv4 header,
UDP and TCP checksums, so softflowd, tshark and ndpiReader read the file as
they would a capture. Timestamps are microseconds (pcap magic 0xa1b2c3d4),
link type 1 (Ethernet).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
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


def frame(p: Packet) -> bytes:
    """Ethernet frame of one packet."""
    src = ipaddress.ip_address(p.src)
    dst = ipaddress.ip_address(p.dst)
    l4_len = (8 if p.proto == 17 else 20) + len(p.payload)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, p.proto, l4_len)
        l4 = _l4(p, pseudo)
        head = struct.pack("!BBHHHBBH", 0x45, p.tos, 20 + len(l4), 0, 0x4000, 64, p.proto, 0)
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


def write_pcap(path: Path, packets: Iterable[Packet]) -> int:
    """Write packets (sorted by time here) to a classic pcap file; returns the count."""
    ordered = sorted(packets, key=lambda p: p.ts)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
    for p in ordered:
        data = frame(p)
        sec = int(p.ts)
        usec = round((p.ts - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        out.append(struct.pack("<IIII", sec, usec, len(data), len(data)))
        out.append(data)
    path.write_bytes(b"".join(out))
    return len(ordered)


FlowKey = tuple[int, str, int, str, int]


def read_pcap_flows(path: Path) -> dict[FlowKey, tuple[list[int], list[int]]]:
    """Conversations of a classic pcap (Ethernet, IPv4/IPv6): key as first seen ->
    ([packets, IP bytes] forward, [packets, IP bytes] reverse). Ports are 0 for
    protocols other than TCP and UDP."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise ValueError(f"{path}: not a little-endian classic pcap")
    if struct.unpack("<I", data[20:24])[0] != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type is not Ethernet")
    flows: dict[FlowKey, tuple[list[int], list[int]]] = {}
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8 : off + 12])[0]
        pkt = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ethertype = struct.unpack("!H", pkt[12:14])[0]
        ip = pkt[14:]
        if ethertype == 0x0800 and len(ip) >= 20:
            ihl = (ip[0] & 0x0F) * 4
            proto, length = ip[9], struct.unpack("!H", ip[2:4])[0]
            src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
            l4 = ip[ihl:]
        elif ethertype == 0x86DD and len(ip) >= 40:
            proto, length = ip[6], 40 + struct.unpack("!H", ip[4:6])[0]
            src, dst = str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40]))
            l4 = ip[40:]
        else:
            continue
        sp = dp = 0
        if proto in (6, 17) and len(l4) >= 4:
            sp, dp = struct.unpack("!HH", l4[:4])
        fwd_key = (proto, src, sp, dst, dp)
        rev_key = (proto, dst, dp, src, sp)
        if rev_key in flows and fwd_key not in flows:
            counts = flows[rev_key][1]
        else:
            counts = flows.setdefault(fwd_key, ([0, 0], [0, 0]))[0]
        counts[0] += 1
        counts[1] += length
    return flows
