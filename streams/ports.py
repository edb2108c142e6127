"""Port tables of the classifier: well-known ports -> categories, as lookup arrays.

Pure data and tiny helpers, no flow logic: :mod:`voipflow.streams.classify` indexes
``UDP_PORTS`` / ``TCP_PORTS`` with a batch's port columns (one vectorised
look-up per column) and combines the categories with the flows' statistics.
Each entry cites where the port comes from (an RFC, IANA, the vendor's
published firewall list), so a reader can check it.
"""

from __future__ import annotations

import numpy as np

# Port categories (values of the lookup tables).
P_NONE, P_SIP, P_H323, P_SCCP, P_MGCP, P_IAX, P_STUN, P_GSTUN = 0, 1, 2, 3, 4, 5, 6, 7
P_ZOOM, P_TEAMS, P_VIBER, P_VOICECHAT, P_SERVICE = 8, 9, 10, 11, 12
PORT_APPS = {
    P_SIP: "sip",
    P_H323: "h323",
    P_SCCP: "sccp",
    P_MGCP: "mgcp",
    P_IAX: "iax",
    P_STUN: "other_voip",
    P_GSTUN: "other_voip",  # Google's public STUN serves many WebRTC apps
    P_ZOOM: "zoom",
    P_TEAMS: "teams",
    P_VIBER: "viber",
    P_VOICECHAT: "other_voip",
}
# Well-known non-VoIP services (IANA registrations, or the protocol's own
# documented default where IANA has none). A flow on one of these ports is
# that service, whatever its packet statistics.
UDP_SERVICE = [
    53, 853,            # DNS, DNS over QUIC (RFC 9250)
    67, 68, 69,         # DHCP, TFTP
    123,                # NTP: 48-byte packets at a steady rate
    137, 138,           # NetBIOS
    161, 162,           # SNMP
    389,                # CLDAP
    443,                # QUIC (HTTP/3): video streams of media-like sizes
    500, 4500, 1701,    # IKE, IPsec NAT-T, L2TP
    514,                # syslog
    520,                # RIP
    623,                # IPMI/RMCP
    1194, 51820,        # OpenVPN, WireGuard default ports
    1812, 1813,         # RADIUS
    1900, 3702, 5353, 5355,  # SSDP, WS-Discovery, mDNS, LLMNR
    2049,               # NFS
    4712, 4713,         # IEEE C37.118 synchrophasor streams (the standard's defaults):
                        # small periodic datagrams at 30-60/s, much like voice
    5683,               # CoAP (RFC 7252)
    11211,              # memcached
    17500,              # Dropbox LAN sync (IANA db-lsp)
    27015,              # Valve Source game servers (Valve's documented default)
]  # fmt: skip
TCP_SERVICE = [
    20, 21, 22, 23, 25, 53, 80, 110, 143, 443, 445, 465, 587, 853, 993, 995,  # IANA
    1433, 3306, 5432, 6379, 9092,  # databases and brokers
    3389,                          # RDP
    5222, 5223, 5228,              # XMPP / push channels (chat, not calls)
    8080, 8443,                    # HTTP alternates
]  # fmt: skip


def port_table(tcp: bool) -> np.ndarray:
    """Port -> category for UDP (``tcp=False``) or TCP: 65536 ``uint8`` entries."""
    t = np.zeros(65536, dtype=np.uint8)
    for p in TCP_SERVICE if tcp else UDP_SERVICE:
        t[p] = P_SERVICE
    if not tcp:
        t[6881:6890] = P_SERVICE  # BitTorrent DHT/uTP (BEP 5 default ports)
    t[5060:5062] = P_SIP  # RFC 3261 s. 19.1.2 (5061: SIP over TLS)
    t[3478:3482] = P_STUN  # RFC 8489 (3478); Microsoft 365: Teams media 3478-3481
    if tcp:
        t[1719] = t[1720] = P_H323  # IANA registers both for TCP and UDP
        t[2000] = P_SCCP  # Cisco Skinny (IANA cisco-sccp)
        t[5349] = P_STUN  # TURN over TLS (RFC 8656)
        t[4244] = t[5242] = t[5243] = P_VIBER  # Viber's published port list
        t[64738] = P_VOICECHAT  # Mumble's default server port
    else:
        t[1719] = P_H323
        t[2427] = t[2727] = P_MGCP  # RFC 3435: gateway, call agent
        t[4569] = P_IAX  # RFC 5456
        t[19302:19310] = P_GSTUN  # Google Meet network guide
        t[8801:8811] = P_ZOOM  # Zoom firewall rules: client media
        t[50000:50060] = P_TEAMS  # Microsoft 365: Teams client source ports
        # Viber's list (UDP 5243, 9785) and nDPI's default Viber ports (7985, 7987)
        t[5243] = t[7985] = t[7987] = t[9785] = P_VIBER
        t[9987] = t[64738] = P_VOICECHAT  # TeamSpeak 3, Mumble default ports
    return t


#: Precedence of port categories when the two sides disagree.
PORT_RANK = np.zeros(P_SERVICE + 1, dtype=np.int8)
for _rank, _cats in enumerate(
    [
        (P_SERVICE,),
        (P_TEAMS,),
        (P_VIBER, P_VOICECHAT),
        (P_ZOOM,),
        (P_GSTUN,),
        (P_STUN,),
        (P_SIP, P_H323, P_SCCP, P_MGCP, P_IAX),
    ],
    start=1,
):
    PORT_RANK[list(_cats)] = _rank

#: Port category -> kind, as lookup tables (cheaper than ``np.isin`` per batch).
IS_SIGNALLING = np.isin(np.arange(P_SERVICE + 1), (P_SIP, P_H323, P_SCCP, P_MGCP, P_IAX))
IS_STUN = np.isin(np.arange(P_SERVICE + 1), (P_STUN, P_GSTUN))
IS_APP_PORT = np.isin(np.arange(P_SERVICE + 1), (P_ZOOM, P_TEAMS, P_VIBER, P_VOICECHAT))

UDP_PORTS = port_table(tcp=False)
TCP_PORTS = port_table(tcp=True)
NO_PORTS = np.zeros(65536, dtype=np.uint8)

#: Port categories that are one app's own knowledge (its vendor's documents),
#: switched off with that app (``Classifier(without=...)``); STUN/TURN's
#: registered ports (RFC 8489) and the service ports are nobody's own.
PORT_OWNER = {
    P_SIP: "sip",
    P_H323: "h323",
    P_SCCP: "sccp",
    P_MGCP: "mgcp",
    P_IAX: "iax",
    P_GSTUN: "meet",
    P_ZOOM: "zoom",
    P_TEAMS: "teams",
    P_VIBER: "viber",
    P_VOICECHAT: "other_voip",
}


def without_ports(table: np.ndarray, without: frozenset[str]) -> np.ndarray:
    """``table`` with the port categories of the apps in ``without`` cleared."""
    off = [c for c, a in PORT_OWNER.items() if a in without]
    if not off:
        return table
    out: np.ndarray = np.where(np.isin(table, off), np.uint8(P_NONE), table).astype(np.uint8)
    return out
