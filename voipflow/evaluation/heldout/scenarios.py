"""The synthetic held-out captures: VoIP of several apps and the traffic that mimics it.

Each function builds one capture (:class:`~voipflow.evaluation.heldout.traffic.Capture`)
from a seeded RNG; every conversation is labelled by construction. Port
choices follow the apps' published documents (Microsoft 365 URLs and IP
ranges: Teams media UDP 3478-3481, client ports 50000-50059; Zoom "Firewall
rules": UDP 8801-8810; Google "Prepare your network for Meet": UDP 19302-19309
and its media ranges; WhatsApp/Meta calling over UDP to Meta's networks;
RFC 3550 even RTP ports with RTCP on the next odd port; SIP over TLS on 5061;
SIP trunks whose SBC and media gateway differ, voice marked DSCP EF as RFC
4594 recommends).
Provider addresses are drawn from the shipped provider lists; every other
peer is a random public address that no list contains.

Confounders are the traffic that flow classifiers mistake for calls: games
(Valve's SRCDS 27015, Xbox 3074, Epic's 9000-9100, Riot's 5000-5500 and
random ports), WireGuard/OpenVPN tunnels (their default ports and others),
QUIC video, DNS/NTP, IoT telemetry (MQTT 1883, CoAP 5683, sensor streams)
and non-call traffic to VoIP providers' networks, and a game from a household
whose SIP phone registers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from voipflow.evaluation.heldout import payloads as pl
from voipflow.evaluation.heldout import traffic as tr
from voipflow.evaluation.heldout.traffic import Addresses, Capture

UDP, TCP = 17, 6


def _clip(rng: np.random.Generator, mean: float, sd: float, lo: int, hi: int) -> Callable[[], int]:
    return lambda: int(np.clip(rng.normal(mean, sd), lo, hi))


def whatsapp(cap: Capture, ad: Addresses) -> None:
    rng = cap.rng
    t = cap.t0
    for i in range(3):  # relayed calls: ICE checks and media on the relay's STUN port
        sub = ad.subscriber(v6=i == 2)
        relay = ad.provider("meta", v6=True) if i == 2 else ad.provider("whatsapp")
        c = cap.conv(UDP, sub, ad.port(), relay, 3478, "whatsapp.relay", "VoIP", "whatsapp")
        s = tr.stun_checks(c, rng, t)
        tr.voice(c, rng, s, float(rng.uniform(20, 90)), "opus", dtx=bool(i % 2))
        t += float(rng.uniform(5, 40))
    # ICE: checks with the relay, media from the same socket to another Meta host/port
    sub, sock = ad.subscriber(), ad.port()
    c = cap.conv(UDP, sub, sock, ad.provider("whatsapp"), 3478, "whatsapp.stun", "VoIP", "whatsapp")
    s = tr.stun_checks(c, rng, t, count=6)
    m = cap.conv(
        UDP,
        sub,
        sock,
        ad.provider("meta"),
        ad.port(40000, 60000),
        "whatsapp.media",
        "VoIP",
        "whatsapp",
    )
    tr.voice(m, rng, s, float(rng.uniform(40, 100)), "opus")
    # No STUN in the capture at all: media straight to Meta's networks.
    for codec, vid in (("opus", False), ("opus_hq", True)):
        sub = ad.subscriber()
        c = cap.conv(
            UDP,
            sub,
            ad.port(),
            ad.provider("meta"),
            ad.port(1024, 65000),
            "whatsapp.nostun",
            "VoIP",
            "whatsapp",
        )
        d = float(rng.uniform(30, 90))
        tr.voice(c, rng, t, d, codec, dtx=not vid)
        if vid:
            tr.video(c, rng, t, d, kbps=float(rng.uniform(250, 600)), fps=15, forward=True)
            tr.video(c, rng, t, d, kbps=float(rng.uniform(250, 600)), fps=15, forward=False)


def teams(cap: Capture, ad: Addresses) -> None:
    rng = cap.rng
    t = cap.t0
    # Client -> Teams transport relays on 3478-3481 (audio, video, sharing), no STUN.
    for port, vid in ((3478, False), (3479, False), (3480, True)):
        sub = ad.subscriber()
        cport = ad.port(50000, 50020) if rng.random() < 0.5 else ad.port()
        c = cap.conv(
            UDP,
            sub,
            cport,
            ad.provider("microsoft_skype_teams"),
            port,
            f"teams.relay{port}",
            "VoIP",
            "teams",
        )
        d = float(rng.uniform(20, 90))
        tr.voice(c, rng, t, d, "silk", dtx=True)
        if vid:
            tr.video(c, rng, t, d, kbps=float(rng.uniform(400, 1000)), fps=30, forward=False)
        t += float(rng.uniform(2, 20))
    # Peer to peer between two Teams clients on their media ports, addresses in no list.
    for _ in range(2):
        a, b = ad.public(), ad.public()
        c = cap.conv(
            UDP, a, ad.port(50000, 50020), b, ad.port(50000, 50020), "teams.p2p", "VoIP", "teams"
        )
        tr.voice(c, rng, t, float(rng.uniform(30, 90)), "silk")
    # IPv6 relay
    c = cap.conv(
        UDP,
        ad.subscriber(v6=True),
        ad.port(),
        ad.provider("microsoft_skype_teams", v6=True),
        3479,
        "teams.relay6",
        "VoIP",
        "teams",
    )
    tr.voice(c, rng, t, float(rng.uniform(30, 90)), "silk")


def zoom(cap: Capture, ad: Addresses) -> None:
    rng = cap.rng
    t = cap.t0
    for i, vid in enumerate((False, True, True)):
        c = cap.conv(
            UDP,
            ad.subscriber(),
            ad.port(),
            ad.provider("zoom"),
            8801 + i,
            "zoom.media",
            "VoIP",
            "zoom",
        )
        d = float(rng.uniform(20, 90))
        tr.voice(c, rng, t, d, "opus")
        if vid:
            tr.video(c, rng, t, d, kbps=float(rng.uniform(400, 1000)), fps=25, forward=False)
    # A Zoom media server whose address the shipped list does not carry.
    c = cap.conv(
        UDP, ad.subscriber(), ad.port(), ad.public(), 8801, "zoom.unlisted", "VoIP", "zoom"
    )
    tr.voice(c, rng, t, float(rng.uniform(30, 90)), "opus")


def meet(cap: Capture, ad: Addresses) -> None:
    rng = cap.rng
    t = cap.t0
    for port in (19305, 3478):
        c = cap.conv(
            UDP,
            ad.subscriber(),
            ad.port(),
            ad.provider("google_meet"),
            port,
            "meet.media",
            "VoIP",
            "meet",
        )
        d = float(rng.uniform(20, 90))
        s = tr.stun_checks(c, rng, t, count=3)
        tr.voice(c, rng, s, d, "opus", dtx=True)
        tr.video(c, rng, s, d, kbps=float(rng.uniform(300, 800)), fps=30, forward=False)
    # ICE: STUN with Google's server, then peer-to-peer media from the same socket.
    sub, sock = ad.subscriber(), ad.port()
    c = cap.conv(UDP, sub, sock, ad.provider("google_meet"), 19302, "meet.stun", "VoIP", "meet")
    s = tr.stun_checks(c, rng, t, count=4)
    p = cap.conv(UDP, sub, sock, ad.public(), ad.port(), "meet.p2p", "VoIP", "meet")
    tr.voice(p, rng, s, float(rng.uniform(30, 90)), "opus")


def discord(cap: Capture, ad: Addresses) -> None:
    """Discord voice: UDP from the client to a voice server in Discord's networks
    (ports 50000-65535), Opus at 20 ms, no STUN."""
    rng = cap.rng
    for i in range(2):
        c = cap.conv(
            UDP,
            ad.subscriber(),
            ad.port(),
            ad.provider("discord"),
            ad.port(50000, 65535),
            "discord.voice",
            "VoIP",
            "discord",
        )
        tr.voice(c, rng, cap.t0 + 5 * i, float(rng.uniform(30, 120)), "opus", dtx=True)


def rtp_trunk(cap: Capture, ad: Addresses) -> None:
    """SBC to SBC media, signalling elsewhere: RTP on even ports, RTCP on the next odd one."""
    rng = cap.rng
    sbc_a, sbc_b = ad.public(), ad.public()
    for i in range(6):
        pa, pb = ad.port(10000, 20000, even=True), ad.port(16384, 32767, even=True)
        codec = ("g711", "g729", "amrwb")[i % 3]
        start = cap.t0 + float(rng.uniform(0, 30))
        d = float(rng.uniform(20, 150))
        c = cap.conv(UDP, sbc_a, pa, sbc_b, pb, f"rtp.{codec}", "VoIP", "rtp")
        tr.voice(c, rng, start, d, codec, srtp=False, loss=0.002)
        r = cap.conv(UDP, sbc_a, pa + 1, sbc_b, pb + 1, "rtcp", "VoIP", "rtp")
        tr.rtcp(r, rng, start, d)
    # Subscriber handsets behind CGNAT towards a carrier media gateway.
    gw = ad.public()
    for ptime in (20, 30):
        sub = ad.subscriber()
        c = cap.conv(
            UDP,
            sub,
            ad.port(),
            gw,
            ad.port(16384, 32767, even=True),
            f"rtp.nat{ptime}",
            "VoIP",
            "rtp",
        )
        tr.voice(c, rng, cap.t0, float(rng.uniform(20, 90)), "g711", ptime, srtp=False)


def _sip_dialog(c: tr.Conversation, t: float, messages: list[tuple[float, bool, str, int]]) -> None:
    """SIP over UDP: (delay, from the subscriber, start line, IP-level size) messages."""
    for delay, fwd, line, size in messages:
        t += delay
        c.send(t, fwd, pl.sip(line, size - 28))


def sip_split(cap: Capture, ad: Addresses) -> None:
    """SIP trunking where the carrier splits signalling and media: the subscriber's
    SIP goes to the session border controller, its RTP (even ports) to a media
    gateway that the SDP names. Some calls with RTCP, some without, some
    marked DSCP EF; one marked call whose signalling is not in the capture
    (SIP over TLS to another SBC). Confounder: a household whose SIP phone
    registers, and whose game console plays on even ports (a known blind spot)."""
    rng = cap.rng
    sbc, gw = ad.public(), ad.public()
    invite = [
        (0.0, True, "INVITE sip:+4930123@sbc SIP/2.0", 980),
        (0.03, False, "SIP/2.0 100 Trying", 380),
        (1.5, False, "SIP/2.0 180 Ringing", 520),
        (4.0, False, "SIP/2.0 200 OK", 1010),
        (0.03, True, "ACK sip:+4930123@gw SIP/2.0", 430),
    ]
    bye = [(0.0, True, "BYE sip:+4930123@gw SIP/2.0", 470), (0.03, False, "SIP/2.0 200 OK", 420)]
    for i, (codec, with_rtcp, tos) in enumerate(
        (("g711", True, 0), ("g729", False, 0), ("g711", False, 184), ("amrwb", False, 184))
    ):
        sub = ad.subscriber(v6=i == 3)
        gw_i = ad.public(v6=True) if i == 3 else gw
        sbc_i = ad.public(v6=True) if i == 3 else sbc
        start = cap.t0 + float(rng.uniform(0, 20))
        d = float(rng.uniform(30, 120))
        s = cap.conv(UDP, sub, 5060, sbc_i, 5060, "sip.split", "VoIP", "sip")
        _sip_dialog(s, start, invite)
        _sip_dialog(s, start + 5.6 + d, bye)
        pa, pb = ad.port(10000, 20000, even=True), ad.port(16384, 32767, even=True)
        m = cap.conv(UDP, sub, pa, gw_i, pb, f"rtp.split_{codec}", "VoIP", "rtp")
        m.tos = tos
        tr.voice(m, rng, start + 5.6, d, codec, srtp=False)
        if with_rtcp:
            r = cap.conv(UDP, sub, pa + 1, gw_i, pb + 1, "rtcp.split", "VoIP", "rtp")
            tr.rtcp(r, rng, start + 5.6, d)
    # EF-marked media whose signalling took another path (not captured)
    sub = ad.subscriber()
    m = cap.conv(
        UDP, sub, ad.port(10000, 20000, even=True), gw, ad.port(16384, 32767, even=True),
        "rtp.ef_only", "VoIP", "rtp",
    )  # fmt: skip
    m.tos = 184
    tr.voice(m, rng, cap.t0 + 3, float(rng.uniform(30, 90)), "g711", srtp=False)
    # A household: its SIP phone registers, its console plays on even ports
    home = ad.subscriber()
    reg = cap.conv(UDP, home, 5060, sbc, 5060, "sip.register", "VoIP", "sip")
    register = [
        (0.0, True, "REGISTER sip:sbc SIP/2.0", 620),
        (0.04, False, "SIP/2.0 401 Unauthorized", 540),
        (0.05, True, "REGISTER sip:sbc SIP/2.0", 780),
        (0.04, False, "SIP/2.0 200 OK", 560),
    ]
    _sip_dialog(reg, cap.t0, register)
    g = cap.conv(
        UDP, home, ad.port(even=True), ad.public(), ad.port(20000, 30000, even=True),
        "game.sip_household", "Game",
    )  # fmt: skip
    d = float(rng.uniform(60, 180))
    tr.periodic(g, rng, cap.t0 + 10, d, 30, _clip(rng, 90, 15, 40, 400), True, jitter=0.15)
    tr.periodic(g, rng, cap.t0 + 10, d, 30, _clip(rng, 160, 50, 40, 600), False, jitter=0.15)


def webrtc_p2p(cap: Capture, ad: Addresses) -> None:
    """Peer-to-peer SRTP between random ports with no STUN in the capture: stats only."""
    rng = cap.rng
    for i in range(4):
        c = cap.conv(
            UDP, ad.subscriber(), ad.port(), ad.public(), ad.port(), "webrtc.p2p", "VoIP", "rtp"
        )
        tr.voice(c, rng, cap.t0, float(rng.uniform(30, 150)), ("opus", "opus_hq")[i % 2], dtx=i < 2)


def sip_tls(cap: Capture, ad: Addresses) -> None:
    """SIP over TLS (5061) and SRTP on even ports to the same carrier SBC."""
    rng = cap.rng
    for _ in range(2):
        sub, sbc = ad.subscriber(), ad.public()
        s = cap.conv(TCP, sub, ad.port(), sbc, 5061, "sip.tls", "VoIP", "sip")
        d = float(rng.uniform(30, 90))
        tr.tcp_session(
            s, rng, cap.t0,
            [(0.0, True, 517), (0.05, False, 3200), (0.05, True, 1200), (0.1, False, 900),
             (0.3, False, 1100), (0.1, True, 600), (d, True, 700), (0.05, False, 500)],
        )  # fmt: skip
        m = cap.conv(
            UDP,
            sub,
            ad.port(even=True),
            sbc,
            ad.port(10000, 20000, even=True),
            "srtp",
            "VoIP",
            "rtp",
        )
        tr.voice(m, rng, cap.t0 + 0.8, d, "amrwb")


def games(cap: Capture, ad: Addresses) -> None:
    """Real-time games: inputs up at the tick rate, snapshots down, for minutes."""
    rng = cap.rng
    kinds = [
        # kind, server port, client rate, client size (mean, sd), server rate, server size
        ("game.fps_srcds", 27015, 64, (70, 12), 64, (260, 120)),
        ("game.fps_random", ad.port(20000, 30000), 60, (90, 15), 60, (330, 150)),
        ("game.xbox", 3074, 30, (110, 20), 30, (180, 60)),
        ("game.battle_royale", ad.port(9000, 9100), 30, (80, 15), 30, (450, 250)),
        ("game.moba", ad.port(5000, 5500), 30, (75, 10), 30, (120, 40)),
        ("game.mobile", ad.port(10000, 12000), 20, (100, 25), 20, (140, 40)),
        ("game.mobile_sym", ad.port(40000, 50000), 25, (120, 20), 25, (125, 20)),
        ("game.racing", ad.port(7000, 8000), 50, (140, 20), 50, (200, 50)),
    ]
    # A console game: NAT type test against the platform's STUN server (consoles
    # document UDP 3478-3479), then the match from the same socket, peer to peer.
    sub, sock = ad.subscriber(), ad.port()
    c = cap.conv(UDP, sub, sock, ad.public(), 3478, "game.console_stun", "Game")
    s = tr.stun_checks(c, rng, cap.t0, count=3, every=0.2)
    c = cap.conv(UDP, sub, sock, ad.public(), ad.port(), "game.console_p2p", "Game")
    tr.periodic(
        c, rng, s, float(rng.uniform(60, 180)), 30, _clip(rng, 90, 20, 40, 400), True, jitter=0.15
    )
    tr.periodic(
        c, rng, s, float(rng.uniform(60, 180)), 30, _clip(rng, 90, 20, 40, 400), False, jitter=0.15
    )
    for kind, sport, crate, csize, srate, ssize in kinds:
        c = cap.conv(UDP, ad.subscriber(), ad.port(), ad.public(), sport, kind, "Game")
        start = cap.t0 + float(rng.uniform(0, 20))
        d = float(rng.uniform(60, 180))
        tr.periodic(c, rng, start, d, crate, _clip(rng, *csize, 40, 1200), True, jitter=0.15)
        tr.periodic(c, rng, start, d, srate, _clip(rng, *ssize, 40, 1300), False, jitter=0.15)


def tunnels(cap: Capture, ad: Addresses) -> None:
    """WireGuard and OpenVPN over UDP: bulk, idle, and one carrying a call."""
    rng = cap.rng
    t = cap.t0

    def wg(kind: str, port: int, mix: str) -> None:
        c = cap.conv(UDP, ad.subscriber(), ad.port(), ad.public(), port, kind, "VPN")
        c.send(t, True, pl.wireguard(rng, "init"))
        c.send(t + 0.04, False, pl.wireguard(rng, "resp"))
        d = float(rng.uniform(30, 90))
        if mix == "bulk":
            tr.periodic(
                c,
                rng,
                t + 0.1,
                d,
                40,
                lambda: 0,
                True,
                lambda _: pl.wireguard(rng, "data", int(rng.integers(40, 600))),
                jitter=0.9,
            )
            tr.periodic(
                c,
                rng,
                t + 0.1,
                d,
                60,
                lambda: 0,
                False,
                lambda _: pl.wireguard(rng, "data", int(rng.integers(200, 1380))),
                jitter=0.9,
            )
        elif mix == "idle":
            tr.periodic(
                c,
                rng,
                t + 0.1,
                d,
                1 / 25,
                lambda: 0,
                True,
                lambda _: pl.wireguard(rng, "keepalive"),
                jitter=0.0,
            )
        else:  # a voice call inside the tunnel: 20 ms frames, both ways
            for fwd in (True, False):
                tr.periodic(
                    c,
                    rng,
                    t + 0.1,
                    d,
                    50,
                    lambda: 0,
                    fwd,
                    lambda _: pl.wireguard(rng, "data", int(rng.integers(110, 140))),
                    jitter=0.1,
                )

    wg("vpn.wireguard_bulk", 51820, "bulk")
    wg("vpn.wireguard_idle", 51820, "idle")
    wg("vpn.wireguard_bulk_port", ad.port(1024, 65000), "bulk")
    wg("vpn.wireguard_call", ad.port(1024, 65000), "call")
    for kind, port in (("vpn.openvpn", 1194), ("vpn.openvpn_port", ad.port(1195, 1300))):
        c = cap.conv(UDP, ad.subscriber(), ad.port(), ad.public(), port, kind, "VPN")
        c.send(t, True, pl.openvpn(rng, 7, 54))
        c.send(t + 0.05, False, pl.openvpn(rng, 8, 66))
        d = float(rng.uniform(30, 90))
        tr.periodic(
            c,
            rng,
            t + 0.2,
            d,
            30,
            lambda: 0,
            True,
            lambda _: pl.openvpn(rng, 9, int(rng.integers(80, 700))),
            jitter=0.9,
        )
        tr.periodic(
            c,
            rng,
            t + 0.2,
            d,
            60,
            lambda: 0,
            False,
            lambda _: pl.openvpn(rng, 9, int(rng.integers(300, 1400))),
            jitter=0.9,
        )


def quic_video(cap: Capture, ad: Addresses) -> None:
    """Streaming video over QUIC on 443: large packets down, ACKs up."""
    rng = cap.rng
    for i in range(4):
        peer = ad.provider("meta") if i == 3 else ad.public(v6=i == 2)
        sub = ad.subscriber(v6=i == 2)
        c = cap.conv(UDP, sub, ad.port(), peer, 443, "quic.video", "Video")
        t = cap.t0 + i
        c.send(t, True, pl.quic_initial(rng))
        c.send(t + 0.03, False, pl.quic_initial(rng))
        d = float(rng.uniform(30, 60))
        # segments every ~2 s: a burst of full packets, acked every second packet
        seg = t + 0.1
        while seg < t + d:
            n = int(rng.integers(60, 200))
            for k in range(n):
                c.send(seg + k * 0.0004, False, pl.quic_short(rng, int(rng.integers(1200, 1350))))
                if k % 2:
                    c.send(
                        seg + k * 0.0004 + 0.02, True, pl.quic_short(rng, int(rng.integers(40, 70)))
                    )
            seg += float(rng.uniform(1.5, 4))


def dns_ntp(cap: Capture, ad: Addresses) -> None:
    rng = cap.rng
    resolver = ad.public()
    for i in range(40):
        name = f"host{i}.example.net"
        c = cap.conv(UDP, ad.subscriber(), ad.port(), resolver, 53, "dns", "Network")
        t = cap.t0 + float(rng.uniform(0, 120))
        txid = int(rng.integers(0, 1 << 16))
        c.send(t, True, pl.dns_query(rng, name, txid))
        c.send(
            t + float(rng.uniform(0.005, 0.08)),
            False,
            pl.dns_answer(rng, name, txid, int(rng.integers(1, 4))),
        )
    for _ in range(8):
        c = cap.conv(
            UDP,
            ad.subscriber(),
            123 if rng.random() < 0.5 else ad.port(),
            ad.public(),
            123,
            "ntp",
            "System",
        )
        t = cap.t0 + float(rng.uniform(0, 60))
        for k in range(int(rng.integers(1, 5))):
            c.send(t + k * 64, True, pl.ntp(rng, 3))
            c.send(t + k * 64 + 0.03, False, pl.ntp(rng, 4))


def iot(cap: Capture, ad: Addresses) -> None:
    rng = cap.rng
    t = cap.t0
    # MQTT: CONNECT, then a publish every 5 s and keepalives, for 10 minutes.
    c = cap.conv(TCP, ad.subscriber(), ad.port(), ad.public(), 1883, "iot.mqtt", "IoT-Scada")
    tr.tcp_session(
        c,
        rng,
        t,
        [(0.0, True, 30), (0.04, False, 4)]
        + [(5.0, True, int(rng.integers(40, 120))) for _ in range(120)],
    )
    # CoAP confirmable POSTs every 10 s.
    c = cap.conv(UDP, ad.subscriber(), ad.port(), ad.public(), 5683, "iot.coap", "IoT-Scada")
    for k in range(60):
        c.send(t + 10 * k, True, pl.coap(rng, k, int(rng.integers(30, 90))))
        c.send(t + 10 * k + 0.08, False, pl.coap(rng, k, 6, response=True))
    # Telemetry on a vendor port: 1 Hz readings, and a 25 Hz sensor stream with 1 Hz acks.
    c = cap.conv(
        UDP,
        ad.subscriber(),
        ad.port(),
        ad.public(),
        ad.port(10000, 30000),
        "iot.telemetry_1hz",
        "IoT-Scada",
    )
    tr.periodic(c, rng, t, 600, 1.0, _clip(rng, 120, 20, 60, 300), True)
    tr.periodic(c, rng, t + 0.05, 600, 1.0, lambda: 20, False)
    c = cap.conv(
        UDP,
        ad.subscriber(),
        ad.port(),
        ad.public(),
        ad.port(10000, 30000),
        "iot.sensor_25hz",
        "IoT-Scada",
    )
    tr.periodic(c, rng, t, 300, 25.0, _clip(rng, 90, 10, 60, 200), True, jitter=0.02)
    tr.periodic(c, rng, t + 0.05, 300, 1.0, lambda: 16, False)


def provider_non_call(cap: Capture, ad: Addresses) -> None:
    """Chat, web and sync traffic to VoIP providers' networks: not calls."""
    rng = cap.rng
    t = cap.t0
    for prov, port, kind in (
        ("whatsapp", 443, "whatsapp.chat"),
        ("whatsapp", 5222, "whatsapp.chat_xmpp"),
        ("microsoft_skype_teams", 443, "teams.web"),
        ("zoom", 443, "zoom.web"),
    ):
        c = cap.conv(TCP, ad.subscriber(), ad.port(), ad.provider(prov), port, kind, "Chat")
        ex = [
            (float(rng.uniform(0.5, 20)), bool(rng.random() < 0.5), int(rng.integers(60, 3000)))
            for _ in range(40)
        ]
        tr.tcp_session(c, rng, t, ex)
    # Meta's networks also serve short video over QUIC (443) and push over UDP keepalives.
    c = cap.conv(
        UDP,
        ad.subscriber(),
        ad.port(),
        ad.provider("meta"),
        ad.port(40000, 50000),
        "meta.keepalive",
        "Chat",
    )
    tr.periodic(c, rng, t, 300, 1 / 15, lambda: 40, True)
    tr.periodic(c, rng, t + 0.05, 300, 1 / 15, lambda: 40, False)


def p2p_session(cap: Capture, ad: Addresses) -> None:
    """Calls that leave the app's relay for a peer no list knows, and a look-alike.

    RFC 8445: a call may start on a relayed candidate and move to a peer's
    host or server-reflexive candidate, here on another local socket (odd
    ports, no STUN port, the peer in no list); a losing candidate pair's
    checks leave the media socket towards another peer. The look-alike is a
    household whose phone keeps WhatsApp's UDP keep-alives to Meta up while
    its console plays: no call, whatever the session context says.
    """
    rng = cap.rng
    t = cap.t0
    for _ in range(3):
        sub = ad.subscriber()
        relay = cap.conv(
            UDP,
            sub,
            ad.port(),
            ad.provider("whatsapp"),
            ad.port(40000, 60000),
            "whatsapp.relay_start",
            "VoIP",
            "whatsapp",
        )
        tr.voice(relay, rng, t, float(rng.uniform(5, 15)), "opus")
        sock = ad.port() | 1
        p2p = cap.conv(
            UDP, sub, sock, ad.public(), ad.port() | 1, "whatsapp.p2p", "VoIP", "whatsapp"
        )
        tr.voice(p2p, rng, t + 10, float(rng.uniform(30, 90)), "opus")
        lost = cap.conv(
            UDP, sub, sock, ad.public(), ad.port(), "whatsapp.p2p_check", "VoIP", "whatsapp"
        )
        tr.stun_checks(lost, rng, t + 9, count=2)
        t += float(rng.uniform(5, 30))
    sub = ad.subscriber()
    c = cap.conv(
        UDP,
        sub,
        ad.port(),
        ad.provider("meta"),
        ad.port(40000, 50000),
        "meta.keepalive_household",
        "Chat",
    )
    tr.periodic(c, rng, cap.t0, 300, 1 / 15, lambda: 40, True)
    tr.periodic(c, rng, cap.t0 + 0.05, 300, 1 / 15, lambda: 40, False)
    g = cap.conv(
        UDP, sub, ad.port(), ad.public(), ad.port(20000, 30000), "game.household_chat", "Game"
    )
    d = float(rng.uniform(60, 180))
    tr.periodic(g, rng, cap.t0 + 20, d, 30, _clip(rng, 90, 15, 40, 400), True, jitter=0.15)
    tr.periodic(g, rng, cap.t0 + 20, d, 30, _clip(rng, 160, 50, 40, 600), False, jitter=0.15)


#: capture name -> builder
SCENARIOS: dict[str, Callable[[Capture, Addresses], None]] = {
    "syn_voip_whatsapp.pcap": whatsapp,
    "syn_voip_teams.pcap": teams,
    "syn_voip_zoom.pcap": zoom,
    "syn_voip_meet.pcap": meet,
    "syn_voip_discord.pcap": discord,
    "syn_voip_rtp_trunk.pcap": rtp_trunk,
    "syn_voip_webrtc_p2p.pcap": webrtc_p2p,
    "syn_voip_sip_tls.pcap": sip_tls,
    "syn_voip_sip_split.pcap": sip_split,
    "syn_games.pcap": games,
    "syn_tunnels.pcap": tunnels,
    "syn_quic_video.pcap": quic_video,
    "syn_dns_ntp.pcap": dns_ntp,
    "syn_iot.pcap": iot,
    "syn_provider_non_call.pcap": provider_non_call,
}

#: Captures added after figures were reported on the ones above: built after
#: them, so the earlier captures keep their seeds (and their figures).
ADDED_SCENARIOS: dict[str, Callable[[Capture, Addresses], None]] = {
    "syn_voip_p2p_session.pcap": p2p_session,
}
