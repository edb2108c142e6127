"""What the simulated subscribers do: VoIP apps and background traffic, as data.

Each call app says where its media goes (provider ranges from the project's
provider files, a carrier, or other people's public addresses for
peer-to-peer calls), on which ports, and which short signalling or STUN flows
go with a call. The figures follow what public captures of these apps show
(for example the labelled captures under ``shared/corpus/ndpi``: WhatsApp
STUN and relay media on UDP 3478, Teams media from client ports 50000-50059 to
3478-3481, Zoom on UDP 8801, Meet on 19302-19309, Signal probing public STUN
servers and then going peer to peer); where a provider publishes no port
(Telegram reflectors), ports are random.

ICE (RFC 8445) apps -- WhatsApp, Teams, Meet, Signal -- send their STUN
binding requests from the socket that then carries the call's media: that
is what a server-reflexive candidate is. Their STUN flows therefore leave
from the media flow's subscriber port, towards other relays of the provider
or public STUN servers (checks towards the media peer itself travel inside
the media flow's own 5-tuple, so a router exports them in that record).
WebRTC-based apps (Signal's RingRTC, Meet in the browser) keep the binding
with the STUN server alive for the whole call: libwebrtc's UDP port sends a
binding request every 10 s (``KEEPALIVE_DELAY``) with no end on fixed
networks (two minutes only on cellular ones), so that STUN flow lasts as
long as the call and is exported in slices like the media.

SIP trunk calls send RTCP beside RTP (RFC 3550 section 11: the next odd port
on both sides, a compound report every 5 s or so each way, section 6.2).

Voice media: 20 ms packetisation, about 50 packets per second in each
direction; Opus-like packet sizes of 80-170 bytes (IP level) for the
over-the-top apps, G.711 (200 bytes) or G.729 (60 bytes) for SIP trunks.
"""

from __future__ import annotations

from dataclasses import dataclass

#: peer kinds of a signalling flow: an address of the app's provider, or a
#: random public address.
PROVIDER, PUBLIC = "provider", "public"


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """A short flow pair (up and down) that goes with every call of an app."""

    protocol: int
    peer: str
    peer_ports: tuple[int, int]
    sub_ports: tuple[int, int] | None  # None: an ephemeral port
    packets_up: int
    packets_down: int
    size_up: int  # mean bytes per packet
    size_down: int
    duration_s: float
    at_end: bool = False  # sent when the call ends (SIP BYE) instead of when it starts
    count: int = 1
    media_socket: bool = False  # from the call's media socket (ICE): sub_ports is ignored
    #: > 0: STUN keepalives every this many seconds for the whole call (a long
    #: flow sliced like media; packets_* and duration_s are then ignored)
    keepalive_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CallApp:
    """A VoIP app: its share of calls, media peers and ports, signalling."""

    name: str
    weight: float
    providers: tuple[str, ...]  # provider files tried in order; "carrier"; "public"
    peer_ports: tuple[int, int]
    sub_ports: tuple[int, int]
    signalling: tuple[FlowSpec, ...] = ()
    tos: int = 0
    even_ports: bool = False  # RTP uses even ports
    rtcp: bool = False  # an RTCP flow on both ports + 1 beside the media (RFC 3550)
    sizes: tuple[tuple[float, float, float], ...] = ((1.0, 80.0, 170.0),)  # (share, lo, hi)


TCP, UDP = 6, 17
#: libwebrtc's STUN keepalive interval towards the STUN server (stun_port.cc).
STUN_KEEPALIVE_S = 10.0
EPHEMERAL = (1024, 65535)

CALL_APPS: tuple[CallApp, ...] = (
    CallApp(
        "whatsapp",
        0.30,
        ("whatsapp", "meta"),
        (3478, 3478),
        EPHEMERAL,
        (
            FlowSpec(
                UDP, PROVIDER, (3478, 3478), None, 3, 2, 168, 86, 1.0, count=3, media_socket=True
            ),
        ),
    ),
    CallApp(
        "teams",
        0.17,
        ("microsoft_skype_teams",),
        (3478, 3481),
        (50000, 50059),
        (
            FlowSpec(TCP, PROVIDER, (443, 443), None, 15, 10, 250, 800, 3.0),
            FlowSpec(UDP, PROVIDER, (3478, 3478), None, 4, 3, 290, 180, 1.0, media_socket=True),
        ),
    ),
    CallApp(
        "zoom",
        0.10,
        ("zoom",),
        (8801, 8801),
        EPHEMERAL,
        (FlowSpec(TCP, PROVIDER, (443, 443), None, 12, 10, 300, 900, 3.0),),
    ),
    CallApp(
        "meet",
        0.06,
        ("google_meet",),
        (19302, 19309),
        EPHEMERAL,
        (
            FlowSpec(TCP, PROVIDER, (443, 443), None, 12, 10, 300, 900, 3.0),
            FlowSpec(
                UDP,
                PROVIDER,
                (19302, 19302),
                None,
                2,
                2,
                100,
                110,
                0.3,
                media_socket=True,
                keepalive_s=STUN_KEEPALIVE_S,
            ),
        ),
    ),
    CallApp(
        "telegram",
        0.07,
        ("telegram",),
        EPHEMERAL,
        EPHEMERAL,
        (FlowSpec(TCP, PROVIDER, (443, 443), None, 10, 8, 200, 500, 2.0),),
    ),
    CallApp(
        "signal",
        0.07,
        ("public",),
        EPHEMERAL,
        EPHEMERAL,
        (
            FlowSpec(UDP, PUBLIC, (3478, 3478), None, 4, 4, 110, 130, 1.0, media_socket=True),
            FlowSpec(
                UDP,
                PUBLIC,
                (19302, 19302),
                None,
                2,
                2,
                62,
                74,
                0.3,
                media_socket=True,
                keepalive_s=STUN_KEEPALIVE_S,
            ),
        ),
    ),
    CallApp(
        "sip",
        0.23,
        ("carrier",),
        (10000, 20000),
        (10000, 20000),
        (
            FlowSpec(UDP, PROVIDER, (5060, 5060), (5060, 5060), 6, 5, 700, 450, 2.0),
            FlowSpec(UDP, PROVIDER, (5060, 5060), (5060, 5060), 2, 2, 450, 400, 0.5, at_end=True),
        ),
        tos=184,  # DSCP EF: carriers' SIP trunks mark voice
        even_ports=True,
        rtcp=True,
        sizes=((0.6, 200.0, 200.0), (0.4, 60.0, 60.0)),
    ),
)

#: A SIP carrier's session border controllers and media gateways. No real
#: carrier is modelled, so the documentation range (RFC 5737) stands in.
CARRIER_CIDRS = ("198.51.100.0/24",)

#: Public DNS resolvers the subscribers query.
RESOLVERS = ("1.1.1.1", "8.8.8.8", "9.9.9.9", "2606:4700:4700::1111", "2001:4860:4860::8888")

#: Background: (app, is_voip). Calls come first, in CALL_APPS order.
BACKGROUND_APPS = ("web", "video", "dns")

#: Web and video also reach provider ranges (Instagram, Office, WeChat...):
#: a provider range alone does not make a flow VoIP.
WEB_PROVIDER_SHARE = 0.2
WEB_PROVIDERS = ("meta", "microsoft_office365", "tencent", "whatsapp", "zoom")
VIDEO_PROVIDER_SHARE = 0.2
VIDEO_PROVIDERS = ("meta",)
#: Share of web and video over QUIC (UDP 443) rather than TCP 443.
QUIC_SHARE = 0.35

#: Call durations: lognormal, median 150 s, clipped to 15 s .. 30 min.
CALL_MEDIAN_S, CALL_SIGMA, CALL_MIN_S, CALL_MAX_S = 150.0, 0.8, 15.0, 1800.0
#: Video sessions: median 10 minutes, 30 s .. 1 h; 2.5-6 Mbit/s downstream.
VIDEO_MEDIAN_S, VIDEO_SIGMA, VIDEO_MIN_S, VIDEO_MAX_S = 600.0, 0.9, 30.0, 3600.0
#: Voice packets per second per direction (20 ms frames) before loss/jitter.
VOICE_PPS = 50.0
#: RTCP: a compound report (SR + SDES, IP level) about every 5 s each way.
RTCP_PPS, RTCP_BYTES = 0.2, 110.0


def app_names() -> list[str]:
    return [a.name for a in CALL_APPS] + list(BACKGROUND_APPS)
