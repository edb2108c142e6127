"""Protocol payloads for the synthetic captures: real headers, filler bodies.

The classifier only sees flow counters, but ndpiReader (the independent DPI
opinion) looks inside: these builders write the header fields each protocol
is recognised by (RTP version/payload type/sequence, STUN magic cookie,
WireGuard message types and sizes, OpenVPN opcodes, DNS, NTP, QUIC long
headers, CoAP, MQTT), followed by random bytes of the right length.
"""

from __future__ import annotations

import struct

import numpy as np

STUN_COOKIE = 0x2112A442


def filler(rng: np.random.Generator, n: int) -> bytes:
    return rng.integers(0, 256, max(n, 0), dtype=np.uint8).tobytes()


def rtp(rng: np.random.Generator, pt: int, seq: int, ts: int, ssrc: int, size: int) -> bytes:
    """An RTP packet (RFC 3550) of ``size`` bytes: 12-byte header, then payload."""
    head = struct.pack("!BBHII", 0x80, pt & 0x7F, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    return head + filler(rng, size - 12)


def rtcp_sr(rng: np.random.Generator, ssrc: int, size: int = 52) -> bytes:
    """An RTCP sender report (RFC 3550 6.4.1) padded to ``size`` bytes."""
    words = size // 4 - 1
    return struct.pack("!BBHI", 0x81, 200, words, ssrc) + filler(rng, size - 8)


def sip(start_line: str, size: int) -> bytes:
    """A SIP message (RFC 3261): its start line, then header-like filler to ``size``."""
    head = (start_line + "\r\n").encode()
    return head + b"X" * max(size - len(head), 0)


def stun(rng: np.random.Generator, method: int, size: int) -> bytes:
    """A STUN message (RFC 5389): type, length, magic cookie, transaction id, attributes."""
    body = max(size - 20, 0) // 4 * 4
    return struct.pack("!HHI", method, body, STUN_COOKIE) + filler(rng, 12) + filler(rng, body)


def wireguard(rng: np.random.Generator, kind: str, inner: int = 0) -> bytes:
    """WireGuard messages: handshake initiation (148 B), response (92 B), data/keepalive."""
    if kind == "init":
        return struct.pack("<I", 1) + filler(rng, 144)
    if kind == "resp":
        return struct.pack("<I", 2) + filler(rng, 88)
    padded = (inner + 15) // 16 * 16  # plaintext padded to 16, then a 16-byte tag
    return struct.pack("<I", 4) + filler(rng, 12) + filler(rng, padded + 16)


def openvpn(rng: np.random.Generator, opcode: int, size: int) -> bytes:
    """OpenVPN over UDP: opcode << 3 | key id, then the session id and body."""
    return bytes([opcode << 3]) + filler(rng, size - 1)


def dns_query(rng: np.random.Generator, name: str, txid: int) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def dns_answer(rng: np.random.Generator, name: str, txid: int, answers: int) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    head = struct.pack("!HHHHHH", txid, 0x8180, 1, answers, 0, 0) + q + struct.pack("!HH", 1, 1)
    rr = b"".join(
        struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + filler(rng, 4) for _ in range(answers)
    )
    return head + rr


def ntp(rng: np.random.Generator, mode: int) -> bytes:
    """NTPv4 (RFC 5905): 48 bytes, LI/VN/mode in the first byte."""
    return bytes([(4 << 3) | mode, 2 if mode == 4 else 0, 6, 0xEC]) + filler(rng, 44)


def quic_initial(rng: np.random.Generator, size: int = 1250) -> bytes:
    """A QUIC v1 long-header Initial packet (RFC 9000 17.2.2), padded."""
    dcid = filler(rng, 8)
    scid = filler(rng, 8)
    head = bytes([0xC3]) + struct.pack("!I", 1) + bytes([8]) + dcid + bytes([8]) + scid + b"\0"
    return head + filler(rng, size - len(head))


def quic_short(rng: np.random.Generator, size: int) -> bytes:
    """A QUIC 1-RTT short-header packet (fixed bit set)."""
    return bytes([0x40 | int(rng.integers(0, 0x20))]) + filler(rng, size - 1)


def coap(rng: np.random.Generator, mid: int, size: int, response: bool = False) -> bytes:
    """CoAP (RFC 7252): ver 1, CON/ACK, 2-byte token, POST or 2.04 Changed."""
    first = 0x42 if not response else 0x62
    code = 0x02 if not response else 0x44
    return struct.pack("!BBH", first, code, mid & 0xFFFF) + filler(rng, 2) + filler(rng, size - 6)


def mqtt_connect(rng: np.random.Generator) -> bytes:
    body = b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x08" + filler(rng, 8)
    return bytes([0x10, len(body)]) + body


def mqtt_publish(rng: np.random.Generator, size: int) -> bytes:
    body = b"\x00\x0ftele/sensor/01" + filler(rng, max(size - 19, 1))
    return bytes([0x30, len(body) & 0x7F]) + body[:127]
