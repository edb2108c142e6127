"""VoIP classification of flow records: evidence combined into app, confidence, verdict.

Everything is computed over whole batches with numpy: port categories come
from 65536-entry lookup tables (:mod:`voipflow.streams.ports`) indexed by the
port columns, provider ranges
from one :class:`~streams.prefixes.PrefixTable` look-up per address column,
direction pairing, RTP/RTCP pairing and socket/host memories from 64-bit
hashes (:mod:`voipflow.streams.flowpairs`), media statistics from the counter columns.
No Python work per record.

Evidence bits (``evidence`` column of voip-flows.v2; the names live in the contract,
:class:`voipflow.schemas.voipflows.Evidence`):

====  ==================  ====================================================
bit   name                meaning
====  ==================  ====================================================
0     EXPORTER_APP        the exporter's application id / nDPI L7 id / name is
                          a VoIP or calling application
1     EXPORTER_NOT_VOIP   the exporter named a known non-VoIP application
2     PROVIDER            one side is in a VoIP provider's published ranges
3     SIGNALLING_PORT     SIP 5060/5061, H.323 1719/1720, SCCP 2000, MGCP
                          2427/2727, IAX 4569
4     STUN_PORT           STUN/TURN 3478-3481 (+5349/TCP), Google 19302-19309
5     APP_PORT            an app's documented media ports (Zoom 8801-8810,
                          Teams client 50000-50059, Viber, TeamSpeak, Mumble)
6     UDP                 transported over UDP
7     VOICE_SIZE          mean packet size 50-300 bytes (voice codecs + headers)
8     VIDEO_SIZE          mean packet size 300-1300 bytes
9     MEDIA_RATE          2-400 packets/s one way (sampling corrected)
10    LONG                >= 1 s, >= 12 packets one way and >= 24 in the
                          conversation (sampling corrected)
11    BIDIRECTIONAL       the reverse direction exists (paired record in the
                          batch, or RFC 5103 reverse counters)
12    EPHEMERAL_PORTS     both ports >= 1024
13    SERVICE_PORT        a well-known non-VoIP service port (DNS, NTP, QUIC,
                          HTTP(S), VPNs, ...): counts against VoIP
14    SAMPLED             packet sampling applied (statistics are estimates)
15    ICE_SIBLING         the subscriber's UDP socket (address, port) also
                          talked STUN/TURN (in this batch or recently): ICE
                          runs connectivity checks and media on one socket
16    RTP_RTCP_PAIR       media-like UDP on even ports with its RTCP flow on
                          both ports + 1 in the batch (or that RTCP flow)
17    SIGNALLING_PEER     the two hosts exchanged call signalling (SIP, H.323,
                          ... on their ports) in this batch or recently
18    DSCP_VOICE          UDP marked DSCP EF (46) or VOICE-ADMIT (44)
19    SIGNALLING_HOST     RTP-shaped media (voice-sized, both ports even) of a
                          host that did call signalling with anyone recently
20    HOST_SESSION        rule R10: a host in a calling app's session
21    STUN_SHAPE          STUN's wire size and a paired few-packet exchange
22    CALL_SOCKET         rule R11: short flow on a socket carrying a call
23    RTP_SHAPE           rule R12: voice RTP by rate on even ports
24    ICE_SHAPE           rule R13: media on a socket that ran a STUN-shaped
                          exchange with the same far host, and that exchange
====  ==================  ====================================================

Ports: between two ports of 1024 and up, the side with the more specific
category decides (a VoIP port over a service port). A system port (< 1024:
IANA assigns them to services and clients never draw them) facing a higher
port is the server's, and decides alone: a video flow from client port 5060
to 443 is QUIC, not SIP; a query from port 3478 to 53 is DNS, not STUN.

Rules (:meth:`Classifier.classify`). Confidence is the strongest rule that
applies; a flow is VoIP when it reaches the threshold
(``WorkerConfig.voip_threshold``, 0.5). Each rule rests on a protocol
standard or a vendor's published document, never on a capture:

R1 (0.9)  Signalling on its registered port: SIP 5060/5061 (RFC 3261 s. 19.1.2),
          H.323 RAS/H.225 1719/1720 (ITU-T H.225.0, IANA), SCCP 2000, MGCP
          2427/2727 (RFC 3435), IAX2 4569 (RFC 5456). Not SIP over UDP whose
          mean packet is under ``SIP_MIN_MEAN_BYTES``: a message carrying the
          mandatory headers (RFC 3261 s. 8.1.1) is ~300 bytes, so such a flow
          is CRLF keep-alives (RFC 5626 s. 3.5.1, no call) or another protocol
          using the port (VPNs listen there to pass firewalls).
R2 (0.8, 0.95 with a provider)  STUN/TURN ports 3478-3481 and 5349 (RFC 8489,
          RFC 8656; Microsoft 365's Teams media ports), Google's 19302-19309
          (Google Meet network guide). Over TCP towards a provider, or (0.8)
          as TURN over TCP carrying a call (RFC 6062): media-sized, at a media
          rate, both ways, a stream's worth of packets.
R3 (0.6-0.7, 0.95 with the same app's range)  Documented media ports: Zoom
          8801-8810 (Zoom firewall rules), Viber (Viber's port list), TeamSpeak
          9987 and Mumble 64738 (their default server ports); Teams client
          ports 50000-50059 (Microsoft 365 network guide) only with both sides
          in the range, as they overlap common ephemeral ranges.
R4 (0.95 / 0.45)  A provider's published range (data/providers, each file
          names its source) with media statistics is that provider's call; the
          range alone is not (0.45): chat, push keep-alives and CDNs share it.
          Ranges filed ``voip: media`` (Telegram: its networks carry chat
          over UDP too) count only for what a call looks like (0.9): UDP,
          voice-sized packets at a media rate, lasting, both directions.
R5 (0.85) ICE (RFC 8445): the socket that ran STUN checks carries the call's
          media and checks to relays and peers no list knows. Neither the
          STUN exchange nor a sibling may touch a well-known service port (a
          resolver's socket is not an ICE client's; DNS, NTP... stay what
          their port says), except UDP 443, where TURN relays listen. The
          memory is refreshed by the siblings themselves: a socket stays an
          ICE socket while a call uses it.
R6 (0.8)  RTP with its RTCP: RFC 3550 s. 11 puts RTP on an even port and RTCP
          on the next odd one; a media-like flow and its +1/+1 neighbour are
          a media session, both flows VoIP.
R7 (0.85) Media between hosts that exchanged call signalling: SDP (RFC 4566)
          and H.245 put the media of a call at the signalling peer (an SBC or
          gateway anchors it); also H.245 control over dynamic TCP ports
          between H.225 peers (ITU-T H.323).
R7b (0.8) RTP-shaped media (voice-sized, both ports even as RFC 3550 s. 11
          asks) of a host that did call signalling with anyone in the hour:
          SDP's connection line may put the far end anywhere (carriers split
          SBC and media gateway), but a user agent's own media leaves from
          its own host.
R7c (0.8) Voice-sized media marked DSCP EF or VOICE-ADMIT: RFC 4594's
          telephony class (RFC 3246, RFC 5865), set by phones, gateways and
          SBCs; other traffic is not marked so (none in the corpus is).
R8 (0.45) Media statistics alone: voice-like UDP both ways is a call or a
          game, a sensor stream, a tunnel carrying small packets; with no
          protocol evidence it stays below the threshold.
R9 (0.97 / cap 0.2)  The exporter's own DPI verdict, either way.
R10 (0.75) Session context (:mod:`voipflow.streams.session`): media-shaped UDP (R8's
          statistics, both directions) between unlisted hosts, one of which
          is in a calling app's session (it sent call media to the app's
          ranges or ran STUN within a TURN allocation's lifetime), is that
          app's call: RFC 8445 puts media on peers and relays only the
          signalling knew. So are its ICE checks to such peers (rules-7):
          STUN-shaped, short, and at least two packets each way, as the
          peer's triggered check makes them (RFC 8445 s. 7.3.1.4); a
          one-query exchange (a DHT ping, a game's probe) is not.
R11 (0.7) Short (not LONG) media or STUN-shaped flows on a socket that carries
          a call's media in the same batch (consent checks, RFC 7675; media cut by
          the exporter's timeouts).
R12 (0.45) Voice RTP by shape on even ports (RFC 3550 s. 11, RFC 3551
          s. 4.2 packetisation rates) without signalling in view: recorded
          as evidence, below the threshold (games tick at the same rates with
          packets of the same sizes; as a verdict it took two corpus flows
          and breaks the rule that statistics alone are not a call).
R13 (0.75) ICE by shape (``relay_sockets`` in streams/session.py): a lasting
          two-way media stream between ephemeral ports from a socket that ran
          a STUN-shaped exchange (RFC 8489 sizes, paired, a few packets) with
          the same far host on another port, and that exchange: a TURN
          allocation on the server's STUN port, then media to the relayed
          address it allocated on itself (RFC 8656 s. 2-3), or binding checks
          then media (RFC 8445 s. 7). Needs no port or range of the app.

Thresholds (module constants): voice 50-300 bytes mean IP packet (G.729 20 ms
over IPv4 is 60 bytes, G.711 30 ms over IPv6 300); video up to 1300 (RTP
keeps packets under the path MTU); 2-400 packets/s one way (Opus DTX sends a
frame per 400 ms in silence, RFC 7587; video calls stay within a few hundred);
"long" is a second and a couple dozen packets, enough to tell a stream from
a few-packet exchange. All counts are multiplied by the sampling rate first;
a rate and a duration need two exported packets (one interval): a
one-packet record has neither, whatever its first and last times say.

Known blind spots (measured by the held-out captures, ``voipflow/evaluation/heldout``):
peer-to-peer media whose STUN or signalling is not in view (R8 only); SIP on
non-standard ports; STUN used by consoles and games (R2/R5 call it VoIP);
calls inside VPN tunnels; a host that does SIP makes its other RTP-shaped
media VoIP (R7b: a game on even ports from a SIP phone's household). Telegram
calls count through its ranges only (``voip: media``): the corpus's older
nDPI labels them chat, which costs corpus precision (docs/classifier.md).

Two verdicts per flow: ``app`` (the rules above: which calling application,
whatever the flow's part in the call) and ``role`` (signalling, control,
media, relay, ice: :mod:`voipflow.streams.roles`, from the same masks).

``CLASSIFIER_VERSION`` changes whenever rules or data semantics change
(rules-6: the role verdict; rules-7: ICE by shape, R13).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from voipflow.schemas.flowbatch import FlowBatch
from voipflow.schemas.voipflows import Evidence
from voipflow.streams.flowpairs import (
    FlowHashes,
    IceMemory,
    flow_hashes,
    in_sorted,
    pair_directions,
    shifted_conversation,
)
from voipflow.streams.ports import (
    IS_APP_PORT,
    IS_SIGNALLING,
    IS_STUN,
    P_NONE,
    P_SERVICE,
    P_SIP,
    P_STUN,
    P_TEAMS,
    P_VIBER,
    PORT_APPS,
    PORT_RANK,
    TCP_PORTS,
    UDP_PORTS,
    without_ports,
)
from voipflow.streams.providers import ProviderRanges
from voipflow.streams.roles import CARRIES_MEDIA, ROLE_NAMES, assign_roles
from voipflow.streams.session import (
    STUN_WIRE_BYTES,
    HostSessions,
    call_sockets,
    relay_sockets,
    rtp_voice_shaped,
    stun_shaped,
)

CLASSIFIER_VERSION = "rules-7"

# Flow statistics of voice and video media (see "Thresholds" in the docstring).
#: Mean IP packet size of voice: G.729 20 ms over IPv4 (60 B) .. G.711 30 ms over IPv6 (300 B).
VOICE_BYTES = (50.0, 300.0)
#: Largest mean of video media: RTP video stays under the path MTU (~1200 B payloads).
VIDEO_MAX_BYTES = 1300.0
#: Packets/s of one direction of media: Opus DTX's 2.5/s floor .. video's few hundred.
MEDIA_PPS = (2.0, 400.0)
#: "Long" media: a second or more, 12+ packets one way and 24+ in the conversation.
LONG_S, LONG_OWN_PACKETS, LONG_PACKETS = 1.0, 12.0, 24.0
#: SIP dialogs over UDP average well above this (a message with RFC 3261's
#: mandatory headers is ~300 B); below it the flow is keep-alives or not SIP.
SIP_MIN_MEAN_BYTES = 200.0
#: How long host pairs that exchanged call signalling are remembered (REGISTER
#: refreshes default to an hour, RFC 3261 section 10.2.1.1).
PEER_MEMORY_MS = 3_600_000
#: The one service port an ICE socket's relay may listen on (TURN over UDP 443).
TURN_SHARED_PORT = 443
#: A packet rate and a flow duration need two observed packets.
RATE_MIN_PACKETS = 2
#: DSCP code points of telephony: EF (RFC 3246, RFC 4594 "Telephony") and
#: VOICE-ADMIT (RFC 5865, capacity-admitted voice).
DSCP_EF, DSCP_VOICE_ADMIT = 46, 44


#: App names the classifier can give; index = app code. Provider files may add more.
BASE_APPS: tuple[str, ...] = (
    "",  # not VoIP / unknown
    "teams",
    "whatsapp",
    "sip",
    "rtp",
    "zoom",
    "meet",
    "signal",
    "telegram",
    "facetime",
    "webex",
    "discord",
    "viber",
    "h323",
    "sccp",
    "mgcp",
    "iax",
    "other_voip",
)

# nDPI protocol ids (ndpi_protocol_ids.h) of calling applications -> app name.
NDPI_VOIP_IDS: dict[int, str] = {
    38: "teams",  # Skype call
    45: "whatsapp",  # WhatsApp call
    87: "rtp",
    94: "mgcp",
    95: "iax",
    100: "sip",
    101: "other_voip",  # Truphone
    144: "viber",
    158: "h323",
    162: "other_voip",  # TeamSpeak
    164: "sccp",
    165: "rtp",  # RTCP
    181: "other_voip",  # Megaco
    194: "other_voip",  # KakaoTalk voice
    201: "meet",  # Hangout/Duo
    216: "other_voip",  # IMO
    255: "other_voip",  # Snapchat call
    268: "whatsapp",  # Facebook VoIP (Messenger calls)
    269: "signal",  # Signal VoIP
    270: "other_voip",  # Fuze
}
# Exporter application names (lower case substrings) -> app name.
NAME_APPS: tuple[tuple[str, str], ...] = (
    ("teams", "teams"),
    ("skype", "teams"),
    ("whatsapp", "whatsapp"),
    ("sip", "sip"),
    ("rtp", "rtp"),
    ("rtcp", "rtp"),
    ("zoom", "zoom"),
    ("meet", "meet"),
    ("hangout", "meet"),
    ("signal", "signal"),
    ("telegram", "telegram"),
    ("facetime", "facetime"),
    ("webex", "webex"),
    ("discord", "discord"),
    ("viber", "viber"),
    ("h323", "h323"),
    ("h.323", "h323"),
)
# Names that describe the call part of an app (a name "whatsapp" alone is chat).
CALL_WORDS = ("call", "voip", "voice", "audio", "video", "media", "rtp", "sip", "h323", "h.323")


@dataclass(slots=True)
class Classification:
    """Per-record verdicts of one batch."""

    app_code: np.ndarray  # u1, index into ``apps``
    is_voip: np.ndarray  # bool
    confidence: np.ndarray  # f4
    evidence: np.ndarray  # u4
    partner: np.ndarray  # i8: index of the reverse-direction record, -1 none
    apps: tuple[str, ...]
    role: np.ndarray  # u1, index into roles.ROLE_NAMES (0 where not VoIP)

    def app_names(self) -> np.ndarray:
        """App names per record (object array; '' where not VoIP)."""
        names = np.array(self.apps, dtype=object)
        out: np.ndarray = names[self.app_code]
        return out

    def role_names(self) -> np.ndarray:
        """Role names per record (object array; '' where not VoIP)."""
        out: np.ndarray = np.array(ROLE_NAMES, dtype=object)[self.role]
        return out

    def carries_media(self) -> np.ndarray:
        """Per record: a VoIP flow whose role carries the call's media (media, relay)."""
        out: np.ndarray = CARRIES_MEDIA[self.role]
        return out


class Classifier:
    """VoIP classifier over flow batches; provider ranges are given at construction."""

    def __init__(
        self,
        providers: ProviderRanges,
        threshold: float = 0.5,
        ice_memory: bool = True,
        without: frozenset[str] = frozenset(),
    ) -> None:
        """``without`` names apps whose specific knowledge is switched off (their
        provider ranges, documented ports and exporter ids): what the generic
        evidence finds of an app the classifier knows nothing of
        (``voipflow eval --leave-one-app-out``)."""
        self.providers = providers
        self.without = frozenset(without)
        self.ice_memory = ice_memory
        # One memory per exporter: a flows.v1 batch comes from one exporter and
        # one exporter's batches are processed in order on one partition, so
        # verdicts do not depend on how partitions interleave across workers.
        self._ctx: dict[bytes, _Context] = {}
        self.threshold = np.float32(threshold)
        apps = list(BASE_APPS)
        for a in providers.apps:
            if a not in apps:
                apps.append(a)
        self.apps: tuple[str, ...] = tuple(apps)
        self._code = {a: i for i, a in enumerate(self.apps)}
        self._provider_app = np.array(
            [self._code[p.app] for p in providers.providers] + [0], dtype=np.uint8
        )
        # Ranges that are evidence by themselves, and ranges that are evidence
        # only for flows that look like a call (``voip: media``).
        self._provider_voip = np.array(
            [p.voip and not p.media_only for p in providers.providers] + [False]
        )
        self._provider_media = np.array([p.voip for p in providers.providers] + [False])
        known = np.array([p.app not in self.without for p in providers.providers] + [True])
        self._provider_voip &= known
        self._provider_media &= known
        self._ndpi = np.zeros(65536, dtype=np.uint8)
        for pid, app in NDPI_VOIP_IDS.items():
            if app not in self.without:
                self._ndpi[pid] = self._code[app]
        self._name_apps = tuple((w, a) for w, a in NAME_APPS if a not in self.without)
        self._udp_ports = without_ports(UDP_PORTS, self.without)
        self._tcp_ports = without_ports(TCP_PORTS, self.without)
        self._port_code = np.array(
            [self._code.get(PORT_APPS.get(c, ""), 0) for c in range(P_SERVICE + 1)],
            dtype=np.uint8,
        )

    def code(self, app: str) -> int:
        return self._code[app]

    def _exporter_apps(self, batch: FlowBatch) -> tuple[np.ndarray, np.ndarray]:
        """(app code, named-but-not-VoIP) from the exporter's L7 id and app name."""
        app = self._ndpi[batch["l7_proto"].astype(np.int64)]
        names = batch["application_name"]
        if not isinstance(names, pa.Array):
            names = pa.array(list(names), pa.string())
        if _all_empty(names):
            named = np.zeros(len(batch), dtype=bool)  # the usual batch: no names at all
        else:
            named = np.asarray(pc.not_equal(names, "").to_numpy(zero_copy_only=False), bool)
        if named.any():
            lower = pc.utf8_lower(names)
            is_call = np.zeros(len(batch), dtype=bool)
            for word in CALL_WORDS:
                is_call |= np.asarray(
                    pc.match_substring(lower, word).to_numpy(zero_copy_only=False), bool
                )
            for word, name in self._name_apps:
                hit = np.asarray(
                    pc.match_substring(lower, word).to_numpy(zero_copy_only=False), bool
                )
                # "sip"/"rtp"/"h323" are calls by themselves; app names need a call word.
                hit &= is_call
                app = np.where((app == 0) & hit, np.uint8(self._code[name]), app)
        exporter_other = ((batch["l7_proto"] > 0) | named) & (app == 0)
        return app.astype(np.uint8), exporter_other

    def classify(self, batch: FlowBatch) -> Classification:
        n = len(batch)
        proto = batch["protocol"]
        udp = proto == 17
        tcp = proto == 6
        sp = batch["src_port"].astype(np.int64)
        dp = batch["dst_port"].astype(np.int64)
        both_ports = np.stack([sp, dp], 1)
        ports = np.where(udp[:, None], self._udp_ports[both_ports], 0)
        ports = np.where(tcp[:, None], self._tcp_ports[both_ports], ports)
        # Between two ports of 1024 and up, the side with the more specific
        # category decides (signalling over STUN over app ports; a VoIP port
        # over a service port). A system port (< 1024, IANA assigns them to
        # services; clients never draw them) facing a higher one is the
        # server: the other port is a client's random pick and says nothing
        # (client port 5060 towards 443 is not SIP, 3478 towards 53 is DNS).
        src_cat, dst_cat = ports[:, 0], ports[:, 1]
        rank = PORT_RANK[ports]
        pcat = np.where(rank[:, 1] > rank[:, 0], dst_cat, src_cat)
        src_system = sp < 1024
        dst_system = dp < 1024
        pcat = np.where(src_system != dst_system, np.where(src_system, src_cat, dst_cat), pcat)
        service = pcat == P_SERVICE
        pcat = np.where(service, P_NONE, pcat)
        # A service port on either side rules out ICE evidence: a STUN exchange
        # there is no client socket's, and DNS, NTP... never carry a call. UDP
        # 443 alone may face an ICE socket: TURN relays listen there where only
        # web ports are open (Meet's network guide; Signal's relays), and
        # QUIC never runs on an ICE socket (browsers give it its own).
        src_svc = src_cat == P_SERVICE
        dst_svc = dst_cat == P_SERVICE
        any_service = src_svc | dst_svc | service
        no_ice = (src_svc & (sp != TURN_SHARED_PORT)) | (dst_svc & (dp != TURN_SHARED_PORT))

        prov_s = self.providers.table.lookup(batch["src_addr"])
        prov_d = self.providers.table.lookup(batch["dst_addr"])
        prov = np.where(prov_d >= 0, prov_d, prov_s)
        prov = np.where(prov >= 0, prov, len(self.providers.providers))
        provider = self._provider_voip[prov]
        provider_media = self._provider_media[prov]
        prov_app = self._provider_app[prov]

        exp_app, exp_other = self._exporter_apps(batch)

        rate = np.maximum(batch["sampling_rate"].astype(np.float64), 1.0)
        pkts = batch["packets"].astype(np.float64)
        byts = batch["bytes"].astype(np.float64)
        rpkts = batch["reverse_packets"].astype(np.float64)
        rbyts = batch["reverse_bytes"].astype(np.float64)
        start = batch["flow_start_ms"].astype(np.int64)
        end = batch["flow_end_ms"].astype(np.int64)
        dur = np.maximum(end - start, 0) / 1000.0
        hashes = flow_hashes(batch)
        partner = pair_directions(batch, hashes)
        bidir = (partner >= 0) | (rpkts > 0)
        # Statistics of the whole conversation where the reverse is known.
        p_pk = np.where(partner >= 0, pkts[partner], 0.0) + rpkts
        p_by = np.where(partner >= 0, byts[partner], 0.0) + rbyts
        all_pk = pkts + p_pk
        mean = np.divide(byts + p_by, all_pk, out=np.zeros(n), where=all_pk > 0)
        est_pk = all_pk * rate
        # A rate and a duration need two observed packets: a one-packet record
        # has neither, whatever its first and last times say (sampled records
        # too: their times are those of the sampled packets).
        timed = (pkts >= RATE_MIN_PACKETS) & (dur > 0)
        pps = np.divide(pkts * rate, dur, out=np.zeros(n), where=timed)
        voice = (mean >= VOICE_BYTES[0]) & (mean <= VOICE_BYTES[1])
        video = (mean > VOICE_BYTES[1]) & (mean <= VIDEO_MAX_BYTES)
        media_rate = timed & (pps >= MEDIA_PPS[0]) & (pps <= MEDIA_PPS[1])
        own_pk = pkts * rate
        long_ = timed & (dur >= LONG_S) & (own_pk >= LONG_OWN_PACKETS) & (est_pk >= LONG_PACKETS)
        dscp = batch["tos"] >> 2
        dscp_voice = udp & ((dscp == DSCP_EF) | (dscp == DSCP_VOICE_ADMIT))
        ephemeral = (sp >= 1024) & (dp >= 1024)
        sampled = rate > 1

        ev = np.zeros(n, dtype=np.uint32)

        def setbit(mask: np.ndarray, bit: Evidence) -> None:
            np.bitwise_or(ev, mask * np.uint32(bit), out=ev)

        setbit(exp_app > 0, Evidence.EXPORTER_APP)
        setbit(exp_other, Evidence.EXPORTER_NOT_VOIP)
        setbit(provider_media, Evidence.PROVIDER)
        sig = IS_SIGNALLING[pcat]
        stun = IS_STUN[pcat]
        appport = IS_APP_PORT[pcat]
        setbit(sig, Evidence.SIGNALLING_PORT)
        setbit(stun, Evidence.STUN_PORT)
        setbit(appport, Evidence.APP_PORT)
        setbit(udp, Evidence.UDP)
        setbit(voice, Evidence.VOICE_SIZE)
        setbit(video, Evidence.VIDEO_SIZE)
        setbit(media_rate, Evidence.MEDIA_RATE)
        setbit(long_, Evidence.LONG)
        setbit(bidir, Evidence.BIDIRECTIONAL)
        setbit(ephemeral, Evidence.EPHEMERAL_PORTS)
        setbit(service, Evidence.SERVICE_PORT)
        setbit(sampled, Evidence.SAMPLED)
        setbit(dscp_voice, Evidence.DSCP_VOICE)

        conf = np.zeros(n, dtype=np.float32)
        app = np.zeros(n, dtype=np.uint8)

        def rule_at(rows: np.ndarray, c: float, app_codes: np.ndarray | int) -> None:
            """``rule`` over the rows of an index array (codes per row or one)."""
            keep = conf[rows] < c
            better = rows[keep]
            conf[better] = np.float32(c)
            codes = np.asarray(app_codes, dtype=np.uint8)
            app[better] = codes if codes.ndim == 0 else codes[keep]

        def rule(mask: np.ndarray, c: float, app_codes: np.ndarray | int) -> None:
            """Raise confidence to ``c`` where ``mask``; the app of the strongest rule wins.

            Most masks are sparse: the work is on the rows they select."""
            rows = np.flatnonzero(mask)
            codes = np.asarray(app_codes, dtype=np.uint8)
            rule_at(rows, c, codes if codes.ndim == 0 else codes[rows])

        port_app = self._port_code[np.minimum(pcat, P_SERVICE)]
        stun_app = np.where(provider, prov_app, port_app)
        udp_or_tcp = udp | tcp
        media = udp & ~service & (voice | video) & media_rate & long_
        generic_media = int(self._code["rtp"])

        # (R1) Signalling on its registered ports. SIP over UDP averaging under
        # SIP_MIN_MEAN_BYTES is not a SIP dialog (see the module docstring).
        sip_too_small = udp & (pcat == P_SIP) & (mean < SIP_MIN_MEAN_BYTES)
        signalling = sig & udp_or_tcp & ~sip_too_small
        rule(signalling, 0.9, port_app)
        # (R2) STUN/TURN over UDP; over TCP only towards a provider (TURN-TCP
        # to anyone else is too generic).
        rule(stun & udp, 0.8, stun_app)
        rule(stun & udp_or_tcp & provider, 0.95, prov_app)
        # TURN over TCP (RFC 6062, RFC 8656 s. 3.1) carrying a call: media-sized
        # records at a media rate both ways, a stream's worth of packets.
        turn_tcp = stun & tcp & bidir & (voice | video) & media_rate & (est_pk >= LONG_PACKETS)
        rule(turn_tcp, 0.8, stun_app)
        # (R3) Documented app media ports, stronger with the same app's range.
        # Teams' client ports fall inside common ephemeral ranges: alone they
        # need both sides in the range.
        teams_port = pcat == P_TEAMS
        teams_both = (ports[:, 0] == P_TEAMS) & (ports[:, 1] == P_TEAMS)
        rule(appport & udp & ~teams_port, 0.7, port_app)
        rule(appport & tcp & (pcat == P_VIBER), 0.6, port_app)
        rule(teams_port & udp & teams_both, 0.6, port_app)
        rule(appport & udp & provider & (prov_app == port_app), 0.95, prov_app)
        # (R4) A provider's range over UDP outside well-known services is not
        # enough alone (games, chat and keep-alives share those networks), but
        # with media statistics it is a call of that provider's app.
        rule(provider & udp & ~service, 0.45, prov_app)
        rule(provider & media, 0.95, prov_app)
        # Ranges that also carry the app's chat over UDP (``voip: media``)
        # count only for what a call looks like: voice-sized media at a
        # media rate, lasting, both directions present.
        call_media = media & voice & bidir
        rule(provider_media & call_media, 0.9, prov_app)
        # (R5) ICE: the socket that ran STUN/TURN checks carries the call's
        # media, to relays and peers whose addresses no list knows.
        sibling, sibling_app = self._ice_siblings(
            hashes, batch, udp, ports, provider, prov_app, stun, any_service, no_ice
        )
        setbit(sibling, Evidence.ICE_SIBLING)
        rule(sibling, 0.85, np.where(provider, prov_app, sibling_app))
        # (R6) Media statistics alone are not a call: real-time games, sensor
        # streams and tunnels carrying small packets look the same. They need
        # a protocol-level corroboration: the RTCP flow beside RTP ...
        candidate = media & ephemeral
        rtp_pair, rtcp_pair = _rtp_rtcp_pairs(hashes, candidate, udp & ephemeral & ~service, sp, dp)
        setbit(rtp_pair | rtcp_pair, Evidence.RTP_RTCP_PAIR)
        rule(rtp_pair | rtcp_pair, 0.8, generic_media)
        # (R7) ... or call signalling between the same two hosts (SIP, H.323,
        # ... in this batch or recently): SDP/H.245 put the media there.
        query = candidate | (tcp & ephemeral)
        peer_app = self._signalling_peers(hashes, batch, signalling, port_app, query)
        peer = (peer_app > 0) & ~signalling
        setbit(peer, Evidence.SIGNALLING_PEER)
        rule(peer & candidate, 0.85, generic_media)
        h245 = peer & tcp & ephemeral & (peer_app == self._code["h323"] + 1)
        rule(h245, 0.8, int(self._code["h323"]))
        # (R7b) ... or RTP-shaped media (voice-sized, both ports even: RFC 3550
        # s. 11) of a host that did call signalling with anyone within the
        # hour: SDP's connection line may put the far end of the media on any
        # address (carriers split SBC and media gateway), but a user agent's
        # own media leaves from its own host.
        rtp_like = candidate & voice & ((sp & 1) == 0) & ((dp & 1) == 0) & ~peer
        ua = self._signalling_hosts(hashes, batch, signalling, rtp_like)
        setbit(ua, Evidence.SIGNALLING_HOST)
        rule(ua, 0.8, generic_media)
        # (R7c) ... or voice-sized media marked for telephony: DSCP EF (46) or
        # VOICE-ADMIT (44) is what RFC 4594 / RFC 5865 assign to voice, set by
        # the phone, gateway or SBC (an operator's own marking is trusted
        # evidence; other traffic is not marked so).
        rule(dscp_voice & candidate & voice, 0.8, generic_media)
        rule(media & ephemeral, 0.45, generic_media)
        # (R10-R12) Generic evidence (streams/session.py): session context per
        # subscriber host, ICE checks by shape, RTP by shape. Worked on the
        # rows that can qualify (index arrays), not on whole-batch masks.

        sizes = udp & (mean >= STUN_WIRE_BYTES[0]) & (mean <= STUN_WIRE_BYTES[1]) & ~any_service
        small = np.flatnonzero(sizes)
        stun_rows = small[stun_shaped(pkts[small] * rate[small], p_pk[small] * rate[small])]
        ev[stun_rows] |= np.uint32(Evidence.STUN_SHAPE)
        # A session opens with call evidence, not with any UDP to the app's
        # networks: push keep-alives and chat reach the same ranges all day.
        # Ranges filed ``voip: media`` count for the flow that looks like a
        # call and for nothing else: they open no session and lend no socket.
        # Call signalling opens none: R7b gives a signalling host's media a
        # stricter shape (RTP's even ports), since households share a host.
        opener = np.flatnonzero((provider & media) | (stun & udp & ~any_service))
        o_prov = provider[opener]
        client = np.where(
            o_prov,
            np.where(prov_d[opener] >= 0, hashes.src_addr[opener], hashes.dst_addr[opener]),
            np.where(IS_STUN[ports[opener, 1]], hashes.src_addr[opener], hashes.dst_addr[opener]),
        )
        o_app = np.where(o_prov, prov_app[opener], port_app[opener])
        o_app = np.where(o_app > 0, o_app, np.uint8(self._code["other_voip"])).astype(np.uint8)
        media_rows = np.flatnonzero(candidate & bidir)
        # ... and its ICE checks to peers no list knows: STUN-shaped, short,
        # and a check each way (the peer's triggered check, RFC 8445 s.
        # 7.3.1.4: request and response in both directions), which a
        # one-query exchange (a DHT ping, a game's probe) is not.
        checks = stun_rows[
            ~long_[stun_rows]
            & ephemeral[stun_rows]
            & (own_pk[stun_rows] >= 2)
            & (p_pk[stun_rows] * rate[stun_rows] >= 2)
            & (conf[stun_rows] < self.threshold)  # found ones keep their app
        ]
        query = np.concatenate([media_rows, checks])  # disjoint: checks are not LONG
        query = query[(prov[query] >= len(self.providers.providers))]
        query = query[~any_service[query]]
        found = self._sessions(hashes, batch, opener, client, o_app, query)
        in_session = query[found > 0]
        ev[in_session] |= np.uint32(Evidence.HOST_SESSION)
        rule_at(in_session, 0.75, (found[found > 0] - 1).astype(np.uint8))
        # (R13) ICE by shape: a media stream from a socket that ran a
        # STUN-shaped exchange with the same far host on another port (TURN
        # allocation then media to the relayed address, RFC 8656; checks then
        # media, RFC 8445), with no port or list saying so.
        relay_query = media_rows[
            ~any_service[media_rows]
            & ephemeral[media_rows]
            & ~provider_media[media_rows]
            & (conf[media_rows] < self.threshold)
        ]
        relayed, vouching = relay_sockets(
            hashes.src_ep,
            hashes.dst_ep,
            hashes.src_addr,
            hashes.dst_addr,
            hashes.conversation,
            stun_rows[~long_[stun_rows]],
            relay_query,
        )
        shape_rows = np.concatenate([relayed, vouching])
        shape_rows = shape_rows[conf[shape_rows] < self.threshold]  # others keep their app
        ev[shape_rows] |= np.uint32(Evidence.ICE_SHAPE)
        rule_at(shape_rows, 0.75, int(self._code["other_voip"]))
        voice_rows = media_rows[voice[media_rows]]
        rtp_rows = voice_rows[
            rtp_voice_shaped(pps[voice_rows]) & (((sp[voice_rows] | dp[voice_rows]) & 1) == 0)
        ]
        ev[rtp_rows] |= np.uint32(Evidence.RTP_SHAPE)
        rule_at(rtp_rows, 0.45, generic_media)  # alone not a call: games tick at these rates
        # (R8) The exporter's own DPI verdict trumps heuristics either way.
        rule(exp_app > 0, 0.97, exp_app)
        # (R11) Short media and checks on a socket that carries a call's media.
        media_only_peer = provider_media & ~provider
        carrier = np.flatnonzero(conf >= self.threshold)
        carrier = carrier[
            udp[carrier]
            & (voice[carrier] | video[carrier])
            & ~signalling[carrier]
            & ~media_only_peer[carrier]
        ]
        if len(carrier):
            # short: a lasting flow carries its own evidence (or is no call)
            short = np.flatnonzero(
                udp & ~long_ & (voice | video | sizes) & ~any_service & ~media_only_peer
            )
            short = short[conf[short] < self.threshold]
            if len(stun_rows) < len(small):  # STUN-sized but not STUN-shaped: not short media
                shaped = np.zeros(n, dtype=bool)
                shaped[stun_rows] = True
                short = short[voice[short] | video[short] | shaped[short]]
            hit, hit_app = call_sockets(
                hashes.src_ep, hashes.dst_ep, hashes.src_addr, hashes.dst_addr, carrier, app, short
            )
            ev[hit] |= np.uint32(Evidence.CALL_SOCKET)
            rule_at(hit, 0.7, hit_app)
        conf[exp_other] = np.minimum(conf[exp_other], np.float32(0.2))

        is_voip = conf >= self.threshold
        app[~is_voip] = 0
        stun_shape = np.zeros(n, dtype=bool)
        stun_shape[stun_rows] = True
        role = assign_roles(
            is_voip,
            udp,
            tcp,
            sized=voice | video,
            stream=media,
            lasting=long_,
            stun_sized=(mean >= STUN_WIRE_BYTES[0]) & (mean < VOICE_BYTES[0]),
            stun_shape=stun_shape,
            stun_port=stun,
            turn_port=pcat == P_STUN,
            rtcp=rtcp_pair,
            signalling=signalling | h245,
        )
        return Classification(app, is_voip, conf, ev, partner, self.apps, role)

    def _ice_siblings(
        self,
        hashes: FlowHashes,
        batch: FlowBatch,
        udp: np.ndarray,
        ports: np.ndarray,
        provider: np.ndarray,
        prov_app: np.ndarray,
        stun: np.ndarray,
        any_service: np.ndarray,
        no_ice: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Records sharing a client socket with a STUN/TURN exchange, and that exchange's app.

        The STUN exchange may have no well-known service port on either side:
        such a socket is a server's (a resolver's port 53 must never become an
        ICE socket because some client queried it from port 3478). Nor may a
        sibling (``no_ice``): DNS, NTP... are what their port says, whichever
        socket they leave from; only UDP 443 may be a relay.
        """
        n = len(batch)
        src_h, dst_h = hashes.src_ep, hashes.dst_ep
        stun_cat = IS_STUN[ports]
        anchor = udp & stun & (stun_cat[:, 0] != stun_cat[:, 1]) & ~any_service
        # The client socket is the side that is not on the STUN port.
        client = np.where(stun_cat[:, 1], src_h, dst_h)
        other_voip = np.uint8(self._code["other_voip"])
        anchor_app = np.where(provider, prov_app, other_voip).astype(np.uint8)
        memory = self._context(batch).ice
        if not anchor.any() and not len(memory):
            return np.zeros(n, dtype=bool), np.zeros(n, dtype=np.uint8)
        # This batch's anchors count whatever their age (the memory keeps a
        # batch's own entries); older batches' until idle for its max age.
        if anchor.any():
            memory.update(
                client[anchor], anchor_app[anchor], batch["flow_end_ms"][anchor].astype(np.uint64)
            )
        # only UDP records off service ports can be siblings
        query = np.flatnonzero(udp & ~anchor & ~no_ice)
        both_ends = memory.lookup(np.concatenate([src_h[query], dst_h[query]]))
        by_src = both_ends[: len(query)]
        found = np.maximum(by_src, both_ends[len(query) :])
        sibling = np.zeros(n, dtype=bool)
        sibling[query] = found > 0
        app = np.zeros(n, dtype=np.uint8)
        app[query] = np.where(found > 0, found - 1, 0)
        hit = found > 0
        if hit.any():
            # A socket stays an ICE socket while the call's media uses it: a call
            # outlives the memory's age, and its STUN exchange (at the start, or
            # keep-alives that may stop after two minutes) need not recur.
            rows = query[hit]
            socket = np.where(by_src[hit] > 0, src_h[rows], dst_h[rows])
            memory.update(
                socket,
                (found[hit] - 1).astype(np.uint8),
                batch["flow_end_ms"][rows].astype(np.uint64),
            )
        return sibling, app

    def _signalling_peers(
        self,
        hashes: FlowHashes,
        batch: FlowBatch,
        signalling: np.ndarray,
        port_app: np.ndarray,
        query: np.ndarray,
    ) -> np.ndarray:
        """Per ``query`` record: app code + 1 of signalling seen between its two
        hosts, 0 if none (and 0 for records not queried)."""
        memory = self._context(batch).peers
        out = np.zeros(len(batch), dtype=np.int16)
        if not signalling.any() and not len(memory):
            return out
        pair = hashes.host_pair(signalling | query)
        if signalling.any():
            memory.update(
                pair[signalling],
                port_app[signalling],
                batch["flow_end_ms"][signalling].astype(np.uint64),
            )
        out[query] = memory.lookup(pair[query])
        return out

    def _signalling_hosts(
        self,
        hashes: FlowHashes,
        batch: FlowBatch,
        signalling: np.ndarray,
        query: np.ndarray,
    ) -> np.ndarray:
        """``query`` records one of whose hosts did call signalling (this batch or
        within ``PEER_MEMORY_MS``)."""
        memory = self._context(batch).hosts
        out = np.zeros(len(batch), dtype=bool)
        if not signalling.any() and not len(memory):
            return out
        if signalling.any():
            ends = np.concatenate([hashes.src_addr[signalling], hashes.dst_addr[signalling]])
            seen = batch["flow_end_ms"][signalling].astype(np.uint64)
            memory.update(ends, np.zeros(len(ends), np.uint8), np.concatenate([seen, seen]))
        sel = np.flatnonzero(query)
        if len(sel):
            found = memory.lookup(np.concatenate([hashes.src_addr[sel], hashes.dst_addr[sel]]))
            out[sel] = (found[: len(sel)] > 0) | (found[len(sel) :] > 0)
        return out

    def _sessions(
        self,
        hashes: FlowHashes,
        batch: FlowBatch,
        opener: np.ndarray,
        client: np.ndarray,
        opener_app: np.ndarray,
        query: np.ndarray,
    ) -> np.ndarray:
        """Per ``query`` row: app code + 1 of the session one of its hosts is in
        (``opener`` rows open sessions of ``opener_app`` for ``client`` hosts)."""
        sessions = self._context(batch).sessions
        if not len(opener) and not len(sessions):
            return np.zeros(len(query), dtype=np.int16)
        if len(opener):
            sessions.open(client, opener_app, batch["flow_end_ms"][opener].astype(np.uint64))
        if not len(query):
            return np.zeros(0, dtype=np.int16)
        return sessions.lookup(hashes.src_addr[query], hashes.dst_addr[query])

    def _context(self, batch: FlowBatch) -> _Context:
        if not self.ice_memory or not len(batch):
            return _Context()
        key = bytes(batch["exporter_addr"][0])
        ctx = self._ctx.get(key)
        if ctx is None:
            if len(self._ctx) >= 4096:  # bound: forget the oldest exporter's context
                self._ctx.pop(next(iter(self._ctx)))
            ctx = self._ctx[key] = _Context()
        return ctx

    def reset_context(self) -> None:
        """Forget cross-batch context (between unrelated captures in an evaluation)."""
        self._ctx.clear()


def _all_empty(names: pa.Array) -> bool:
    """Every string of an Arrow string array is empty or null: its first and
    last value offsets are equal (two reads, not a comparison per record)."""
    if not isinstance(names, pa.StringArray) or not len(names):
        return False
    offsets = names.buffers()[1]
    if offsets is None:
        return False
    at = np.frombuffer(offsets, dtype=np.int32)
    return bool(at[names.offset] == at[names.offset + len(names)])


@dataclass(slots=True)
class _Context:
    """What the classifier remembers of one exporter's earlier batches."""

    ice: IceMemory = field(default_factory=IceMemory)  # STUN client sockets
    peers: IceMemory = field(  # host pairs that exchanged call signalling
        default_factory=lambda: IceMemory(max_age_ms=PEER_MEMORY_MS)
    )
    hosts: IceMemory = field(  # hosts that did call signalling (with anyone)
        default_factory=lambda: IceMemory(max_age_ms=PEER_MEMORY_MS)
    )
    sessions: HostSessions = field(default_factory=HostSessions)  # hosts in an app's session


def _rtp_rtcp_pairs(
    hashes: FlowHashes,
    rtp_candidate: np.ndarray,
    udp_cand: np.ndarray,
    sp: np.ndarray,
    dp: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """RTP records (even ports, media-like) whose RTCP flow (both ports + 1) is in
    the batch, and those RTCP records (RFC 3550 section 11)."""
    n = len(sp)
    rtp_pair = np.zeros(n, dtype=bool)
    rtcp_pair = np.zeros(n, dtype=bool)
    rtp_sel = np.flatnonzero(rtp_candidate & ((sp & 1) == 0) & ((dp & 1) == 0))
    if not len(rtp_sel):
        return rtp_pair, rtcp_pair
    rtcp_sel = np.flatnonzero(udp_cand & ((sp & 1) == 1) & ((dp & 1) == 1))
    if not len(rtcp_sel):
        return rtp_pair, rtcp_pair
    conv = hashes.conversation
    rtcp_keys = np.sort(conv[rtcp_sel])
    wanted = shifted_conversation(hashes, rtp_sel, sp, dp, +1)
    hit = in_sorted(wanted, rtcp_keys)
    rtp_pair[rtp_sel[hit]] = True
    rtcp_pair[rtcp_sel[in_sorted(conv[rtcp_sel], np.sort(wanted[hit]))]] = True
    return rtp_pair, rtcp_pair
