"""Building blocks of the synthetic captures: addresses, conversations, traffic shapes.

A :class:`Capture` collects packets and one label per :class:`Conversation`
(its 5-tuple, what it is, VoIP or not: known by construction). The traffic
shapes follow published characteristics, not the classifier's thresholds:

* voice: one RTP packet per frame (``ptime`` 20/30/60 ms) per direction, the
  codec's payload size (G.711 160 B, G.729 20 B, Opus/SILK variable), RTP 12 B
  and SRTP's 10-byte tag where the app encrypts; jitter and loss; Opus DTX
  sends one frame per 400 ms in silence (RFC 6716, RFC 7587);
* video: frames at 15-30 fps split into ~1200-byte packets, key frames larger;
* games: client inputs and server snapshots at the game's tick rate (20-64 Hz),
  server packets larger and more variable than the client's;
* tunnels, QUIC, DNS/NTP, IoT: their protocols' message sizes and timers.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from voipflow.collectors.pcapfile import TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, Packet
from voipflow.evaluation.heldout import payloads as pl
from voipflow.schemas.flowbatch import text_to_addr16
from voipflow.streams.providers import ProviderRanges

LABEL_HEADER = (
    "pcap,l4,src_ip,src_port,dst_ip,dst_port,bidirectional,ndpi_proto,ndpi_app,"
    "ndpi_category,pkts_fwd,bytes_fwd,pkts_rev,bytes_rev,is_voip,app,role"
)

#: The role of each VoIP conversation kind, by construction: what the scenario
#: sends on it (``voipflow/evaluation/roles.py`` scores the role verdict
#: against it). Relays are the app's relays whatever their port; a Meet or
#: Zoom media server is media.
KIND_ROLES: dict[str, str] = {
    "whatsapp.relay": "relay",  # checks, then media through the relay's 3478
    "whatsapp.relay_start": "relay",  # media through a Meta relay before going P2P
    "whatsapp.stun": "ice",  # checks only (the media left on another 5-tuple)
    "whatsapp.media": "media",
    "whatsapp.nostun": "media",
    "whatsapp.p2p": "media",
    "whatsapp.p2p_check": "ice",  # a losing candidate pair's checks
    "teams.relay3478": "relay",
    "teams.relay3479": "relay",
    "teams.relay3480": "relay",
    "teams.relay6": "relay",
    "teams.p2p": "media",
    "zoom.media": "media",
    "zoom.unlisted": "media",
    "meet.media": "media",
    "meet.stun": "ice",
    "meet.p2p": "media",
    "discord.voice": "media",
    "rtcp": "control",
    "rtcp.split": "control",
    "srtp": "media",
    "webrtc.p2p": "media",
    "sip.split": "signalling",
    "sip.register": "signalling",
    "sip.tls": "signalling",
}


def kind_role(kind: str, is_voip: bool) -> str:
    """The role a VoIP conversation of ``kind`` plays ('' for non-VoIP or unknown)."""
    if not is_voip:
        return ""
    if kind in KIND_ROLES:
        return KIND_ROLES[kind]
    if kind.startswith("rtp.") or kind.endswith(".rtp"):
        return "media"
    if kind.startswith("sipp."):
        return "signalling"
    return ""


_SPECIAL_V4 = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24",
    )
]  # fmt: skip


class Addresses:
    """Subscriber, provider and unrelated public addresses, drawn from a seeded RNG."""

    def __init__(self, rng: np.random.Generator, providers: ProviderRanges) -> None:
        self.rng = rng
        self.providers = providers
        self.by_app: dict[str, list[str]] = {}
        for p in providers.providers:
            if p.voip:
                self.by_app.setdefault(p.name, []).extend(p.prefixes)

    def subscriber(self, v6: bool = False) -> str:
        """A subscriber behind CGNAT space (100.64.0.0/10) or an IPv6 documentation /48."""
        if v6:
            hi, lo = (int(x) for x in self.rng.integers(2, 0xFFFF, 2))
            return f"2001:db8:1:{hi:x}::{lo:x}"
        return str(ipaddress.ip_address(0x64400000 + int(self.rng.integers(256, 1 << 22))))

    def provider(self, name: str, v6: bool = False) -> str:
        """A host inside a random prefix of one provider's shipped list."""
        nets = [ipaddress.ip_network(p) for p in self.by_app[name]]
        nets = [n for n in nets if n.version == (6 if v6 else 4)]
        if not nets:
            raise ValueError(f"provider {name} lists no IPv{6 if v6 else 4} prefix")
        net = nets[int(self.rng.integers(0, len(nets)))]
        if net.num_addresses <= 2:
            return str(net.network_address)
        offset = int(self.rng.integers(1, min(net.num_addresses - 1, 1 << 30)))
        return str(net.network_address + offset)

    def public(self, v6: bool = False) -> str:
        """A public address in no provider list and no special-purpose range."""
        while True:
            if v6:
                net, hi, lo = (int(x) for x in self.rng.integers(1, 0xFFFF, 3))
                a = f"2a0{net % 9 + 1}:{hi:x}::{lo:x}"
            else:
                a = str(ipaddress.ip_address(int(self.rng.integers(0x01000000, 0xDF000000))))
                ip = ipaddress.ip_address(a)
                if any(ip in n for n in _SPECIAL_V4):
                    continue
            hit = self.providers.table.lookup(np.array([text_to_addr16(a)], dtype="S16"))
            if hit[0] < 0:
                return a

    def port(self, lo: int = 32768, hi: int = 61000, even: bool | None = None) -> int:
        p = int(self.rng.integers(lo, hi))
        if even is True:
            p &= ~1
        elif even is False:
            p |= 1
        return p


@dataclass(slots=True)
class Conversation:
    """One labelled flow: ``a`` is the side that opened it (usually the subscriber)."""

    l4: int
    a: str
    a_port: int
    b: str
    b_port: int
    kind: str  # what it is, e.g. "voice.opus", "game.fps", "vpn.wireguard"
    category: str
    app: str  # project app name for VoIP, "" otherwise
    packets: list[Packet] = field(default_factory=list)
    seq: list[int] = field(default_factory=lambda: [1000, 5000])
    tos: int = 0  # ToS byte of every packet (184: DSCP EF)

    @property
    def is_voip(self) -> bool:
        return bool(self.app)

    def send(
        self, ts: float, forward: bool, payload: bytes, flags: int = TCP_ACK | TCP_PSH
    ) -> None:
        src, sp, dst, dp = (
            (self.a, self.a_port, self.b, self.b_port)
            if forward
            else (self.b, self.b_port, self.a, self.a_port)
        )
        i = 0 if forward else 1
        pkt = Packet(
            ts, src, sp, dst, dp, self.l4, payload, flags, self.seq[i], self.seq[1 - i], self.tos
        )
        self.seq[i] += len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        self.packets.append(pkt)

    def label_row(self, pcap: str) -> str:
        fwd = [p for p in self.packets if p.src == self.a and p.sport == self.a_port]
        rev = [p for p in self.packets if not (p.src == self.a and p.sport == self.a_port)]
        l4 = "UDP" if self.l4 == 17 else "TCP"
        return ",".join(
            str(x)
            for x in (
                pcap, l4, self.a, self.a_port, self.b, self.b_port, int(bool(rev)),
                self.kind, self.kind, self.category,
                len(fwd), sum(p.ip_len for p in fwd), len(rev), sum(p.ip_len for p in rev),
                int(self.is_voip), self.app, kind_role(self.kind, self.is_voip),
            )
        )  # fmt: skip


class Capture:
    """The conversations of one synthetic pcap."""

    def __init__(self, name: str, rng: np.random.Generator, t0: float) -> None:
        self.name = name
        self.rng = rng
        self.t0 = t0
        self.conversations: list[Conversation] = []

    def conv(
        self,
        l4: int,
        a: str,
        a_port: int,
        b: str,
        b_port: int,
        kind: str,
        category: str,
        app: str = "",
    ) -> Conversation:
        c = Conversation(l4, a, a_port, b, b_port, kind, category, app)
        key = {(l4, a, a_port, b, b_port), (l4, b, b_port, a, a_port)}
        for o in self.conversations:
            if (o.l4, o.a, o.a_port, o.b, o.b_port) in key:
                raise ValueError(f"{self.name}: 5-tuple used twice: {kind} and {o.kind}")
        self.conversations.append(c)
        return c

    def packets(self) -> list[Packet]:
        return [p for c in self.conversations for p in c.packets]

    def label_rows(self) -> list[str]:
        return [c.label_row(self.name) for c in self.conversations if c.packets]


# -- traffic shapes ------------------------------------------------------------

#: Codec -> (RTP payload type, mean frame payload bytes, sd) at 20 ms.
CODECS: dict[str, tuple[int, float, float]] = {
    "g711": (8, 160.0, 0.0),
    "g729": (18, 20.0, 0.0),
    "amrwb": (97, 33.0, 4.0),
    "opus": (111, 70.0, 18.0),  # ~28 kbit/s VBR speech
    "opus_hq": (111, 110.0, 25.0),  # ~44 kbit/s, music/high quality
    "silk": (104, 60.0, 15.0),
}


def _talk_spurts(rng: np.random.Generator, start: float, end: float) -> Callable[[float], bool]:
    """Alternating talk/silence periods (exponential, means 1.5 s / 1.8 s)."""
    edges = [start]
    talking = [bool(rng.random() < 0.5)]
    while edges[-1] < end:
        edges.append(edges[-1] + float(rng.exponential(1.5 if talking[-1] else 1.8)) + 0.2)
        talking.append(not talking[-1])
    arr = np.array(edges)

    def at(t: float) -> bool:
        return talking[int(np.searchsorted(arr, t, side="right")) - 1]

    return at


def voice(
    c: Conversation,
    rng: np.random.Generator,
    start: float,
    duration: float,
    codec: str = "opus",
    ptime_ms: int = 20,
    srtp: bool = True,
    dtx: bool = False,
    loss: float = 0.005,
    directions: tuple[bool, ...] = (True, False),
) -> None:
    """RTP voice both ways (or the given directions) for ``duration`` seconds."""
    pt, mean, sd = CODECS[codec]
    scale = ptime_ms / 20.0
    for fwd in directions:
        ssrc = int(rng.integers(1, 1 << 31))
        seq = int(rng.integers(0, 1 << 16))
        ts = int(rng.integers(0, 1 << 31))
        talking = _talk_spurts(rng, start, start + duration) if dtx else None
        t = start + float(rng.uniform(0, ptime_ms / 1000))
        last_sent = -1.0
        while t < start + duration:
            send = True
            if talking is not None and not talking(t):
                send = t - last_sent >= 0.4  # DTX: one comfort-noise frame per 400 ms
            if send and rng.random() >= loss:
                size = mean * scale if sd == 0 else float(rng.normal(mean * scale, sd * scale))
                if talking is not None and not talking(t):
                    size = 8.0
                size = int(max(size, 4)) + 12 + (10 if srtp else 0)
                jitter = float(rng.normal(0, 0.002))
                c.send(max(t + jitter, start), fwd, pl.rtp(rng, pt, seq, ts, ssrc, size))
                last_sent = t
            seq += 1
            ts += 8 * ptime_ms
            t += ptime_ms / 1000


def rtcp(c: Conversation, rng: np.random.Generator, start: float, duration: float) -> None:
    """RTCP reports both ways about every 5 s (RFC 3550 6.2), 50-100 bytes."""
    for fwd in (True, False):
        ssrc = int(rng.integers(1, 1 << 31))
        t = start + float(rng.uniform(0.5, 5))
        while t < start + duration:
            c.send(t, fwd, pl.rtcp_sr(rng, ssrc, int(rng.integers(13, 26)) * 4))
            t += float(rng.uniform(2.5, 7.5))


def video(
    c: Conversation,
    rng: np.random.Generator,
    start: float,
    duration: float,
    kbps: float = 1200,
    fps: float = 25,
    forward: bool = True,
    srtp: bool = True,
    mtu_payload: int = 1180,
) -> None:
    """One direction of RTP video: frames split into packets of at most ``mtu_payload``."""
    ssrc = int(rng.integers(1, 1 << 31))
    seq = int(rng.integers(0, 1 << 16))
    t = start
    frame_no = 0
    mean_frame = kbps * 1000 / 8 / fps
    while t < start + duration:
        key = frame_no % int(fps * 3) == 0
        size = float(rng.lognormal(math.log(mean_frame), 0.35)) * (4 if key else 1)
        n = max(1, math.ceil(size / mtu_payload))
        for i in range(n):
            chunk = int(min(mtu_payload, size - i * mtu_payload) if i == n - 1 else mtu_payload)
            chunk = max(chunk, 60) + 12 + (10 if srtp else 0)
            c.send(t + i * 0.0008, forward, pl.rtp(rng, 96, seq, frame_no * 3600, ssrc, chunk))
            seq += 1
        frame_no += 1
        t += 1 / fps + float(rng.normal(0, 0.002))


def stun_checks(
    c: Conversation, rng: np.random.Generator, start: float, count: int = 4, every: float = 0.05
) -> float:
    """ICE connectivity checks: binding requests and responses; returns the end time."""
    t = start
    for _ in range(count):
        c.send(t, True, pl.stun(rng, 0x0001, int(rng.integers(96, 120))))
        c.send(t + 0.03, False, pl.stun(rng, 0x0101, int(rng.integers(60, 90))))
        t += every
    return t + 0.05


def periodic(
    c: Conversation,
    rng: np.random.Generator,
    start: float,
    duration: float,
    rate: float,
    size: Callable[[], int],
    forward: bool,
    make: Callable[[int], bytes] | None = None,
    jitter: float = 0.1,
) -> None:
    """``rate`` packets/s of ``size()`` bytes, with relative timing jitter."""
    t = start + float(rng.uniform(0, 1 / rate))
    while t < start + duration:
        n = size()
        c.send(t, forward, make(n) if make else pl.filler(rng, n))
        t += (1 / rate) * float(rng.uniform(1 - jitter, 1 + jitter))


def tcp_session(
    c: Conversation,
    rng: np.random.Generator,
    start: float,
    exchanges: list[tuple[float, bool, int]],
    rtt: float = 0.04,
) -> None:
    """A TCP connection: handshake, the given (delay, forward, bytes) messages with
    ACKs, and a FIN exchange."""
    c.send(start, True, b"", TCP_SYN)
    c.send(start + rtt, False, b"", TCP_SYN | TCP_ACK)
    c.send(start + rtt * 1.05, True, b"", TCP_ACK)
    t = start + rtt * 1.1
    for delay, fwd, nbytes in exchanges:
        t += delay
        left = nbytes
        while left > 0:
            seg = min(left, 1400)
            c.send(t, fwd, pl.filler(rng, seg))
            left -= seg
            t += 0.0005
        c.send(t + rtt / 2, not fwd, b"", TCP_ACK)
    c.send(t + 0.1, True, b"", TCP_FIN | TCP_ACK)
    c.send(t + 0.1 + rtt, False, b"", TCP_FIN | TCP_ACK)
    c.send(t + 0.1 + rtt * 1.05, True, b"", TCP_ACK)
