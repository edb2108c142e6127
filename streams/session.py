"""Generic call evidence that needs no app knowledge: flow shapes and session context.

The classifier's app-specific rules (ranges, documented ports) find what a
list names; a new app, a P2P call whose peers and relays no list knows, or a
few-packet ICE check falls through them. This module holds the evidence that
rests on protocol documents alone, computed over whole batches:

* :func:`stun_shaped`: a binding exchange by its flow shape, whatever its
  ports. RFC 8489 s. 5: a STUN message is a 20-byte header and TLV
  attributes; an ICE connectivity check (RFC 8445 s. 7.1.1) carries
  USERNAME, PRIORITY, ICE-CONTROLLING/-CONTROLLED, MESSAGE-INTEGRITY and
  FINGERPRINT, about 100 bytes, its response XOR-MAPPED-ADDRESS,
  MESSAGE-INTEGRITY and FINGERPRINT, about 60. With UDP and IP headers
  (28-48 bytes) a check is 48-200 bytes on the wire. Each request gets one
  response (retransmissions aside, RFC 8489 s. 6.2.1), so the two directions
  carry about as many packets, and a check sequence is a few packets
  (Ta pacing, RFC 8445 s. 14): never a stream.
* :func:`rtp_voice_shaped`: voice RTP by RFC 3550/3551: one packet per
  packetisation interval (RFC 3551 s. 4.2: 20 ms default; 10-60 ms for the
  common codecs, so 16-100 packets/s), voice-sized packets, both directions.
* :class:`HostSessions`: session context per subscriber host. A host that
  sends call media to a calling app's servers (its published ranges: relays,
  media servers) or that ran STUN is in a session of that app for as long
  as a TURN allocation lives (RFC 8656 s. 3.2: 10
  minutes by default, refreshed while the call runs). Its media-shaped UDP
  to peers no list knows, and its ICE-shaped checks, are that call: RFC 8445
  puts media on host, server-reflexive and relayed candidates, i.e. on
  peers and relays whose addresses only the signalling knew. Other traffic
  to the app's servers does not open a session: a phone keeps its chat and
  push connections (TCP, or UDP keep-alives) up all day; and call signalling
  opens none, since the classifier's R7b already gives a signalling host's
  media RTP's stricter shape.
* :func:`relay_sockets`: ICE by shape on a socket. A client that asks a
  TURN server for an allocation does so with STUN requests to the server's
  STUN port (RFC 8656 s. 3.1, s. 7), and its media then runs from the same
  socket to the relayed transport address the server allocated on itself,
  another port of the same host (RFC 8656 s. 2, s. 3.4); RFC 8445 s. 7.2
  does the same with binding checks before media on a candidate pair. A
  lasting media stream from a socket that ran a STUN-shaped exchange with
  the same far host on another port is that call, whatever the ports: the
  app need not be in any list, nor its relays on a registered port.
* :func:`call_sockets`: sockets that carry a call's media. A short flow of
  media- or STUN-sized packets on such a socket (consent checks, RFC 7675;
  the first or last seconds of media cut into their own record by the
  exporter's timeouts) belongs to that call.

Memory is bounded per exporter: at most ``max_hosts`` hosts (the least
recently seen go first) and ``max_age_ms`` of idleness
(``benchmarks/session_memory.py`` measures it at a million hosts).
"""

from __future__ import annotations

import numpy as np

from voipflow.streams.flowpairs import IceMemory, in_sorted, mix64

#: Wire size of STUN binding messages: a bare 20-byte header over UDP/IPv4 is
#: 48 bytes; a check with its attributes over IPv6 stays under 200.
STUN_WIRE_BYTES = (48.0, 200.0)
#: A check sequence is a handful of transactions per candidate pair, each
#: retransmitted a few times at most (RFC 8489 s. 6.2.1: Rc = 7).
STUN_MAX_PACKETS = 30.0
#: Requests and responses pair up: the busier direction carries at most this
#: many times the other's packets (lost responses, retransmissions).
STUN_PAIR_RATIO = 3.0
#: Packets/s of voice RTP: one per packetisation interval of 10-60 ms
#: (RFC 3551 s. 4.2, s. 4.5), with slack for jitter and timer granularity.
RTP_VOICE_PPS = (14.0, 110.0)
#: How long a host stays in an app's session after its last call-related UDP:
#: a TURN allocation's default lifetime (RFC 8656 s. 3.2).
SESSION_MAX_AGE_MS = 600_000
#: Hosts remembered per exporter: an access network's active subscribers.
SESSION_MAX_HOSTS = 1 << 20


def stun_shaped(pkts: np.ndarray, rev_pkts: np.ndarray) -> np.ndarray:
    """Of UDP records of STUN's wire size (``STUN_WIRE_BYTES``, the caller's
    filter), those whose counts look like a check exchange: both directions,
    few packets, requests and responses paired."""
    both = (pkts > 0) & (rev_pkts > 0)
    few = (pkts + rev_pkts) <= STUN_MAX_PACKETS
    paired = np.maximum(pkts, rev_pkts) <= STUN_PAIR_RATIO * np.minimum(pkts, rev_pkts)
    out: np.ndarray = both & few & paired
    return out


def rtp_voice_shaped(pps: np.ndarray) -> np.ndarray:
    """Of voice-sized, lasting, two-way media (the caller's filter), those at a
    packetisation interval's rate."""
    out: np.ndarray = (pps >= RTP_VOICE_PPS[0]) & (pps <= RTP_VOICE_PPS[1])
    return out


class HostSessions:
    """Subscriber hosts in a calling app's session (host hash -> app code, last seen)."""

    def __init__(
        self, max_age_ms: int = SESSION_MAX_AGE_MS, max_hosts: int = SESSION_MAX_HOSTS
    ) -> None:
        self.memory = IceMemory(max_age_ms=max_age_ms, max_size=max_hosts)

    def __len__(self) -> int:
        return len(self.memory)

    @property
    def nbytes(self) -> int:
        return self.memory.nbytes

    def open(self, hosts: np.ndarray, apps: np.ndarray, seen_ms: np.ndarray) -> None:
        """Hosts seen in a session of ``apps`` (codes) at ``seen_ms``."""
        self.memory.update(hosts, apps, seen_ms)

    def lookup(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """App code + 1 of the session either end is in (0: none)."""
        k = len(src)
        found = self.memory.lookup(np.concatenate([src, dst]))
        out: np.ndarray = np.maximum(found[:k], found[k:])
        return out


def call_sockets(
    src_ep: np.ndarray,
    dst_ep: np.ndarray,
    src_addr: np.ndarray,
    dst_addr: np.ndarray,
    carrier: np.ndarray,
    app: np.ndarray,
    query: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``query`` (an index array) sharing an endpoint with a row of
    ``carrier``, and that carrier's app.

    The shared endpoint must face another host than in the carrier: ICE checks
    and media of one socket go to the call's other candidates (RFC 8445 s.
    6.1.2), while a second socket between the same two hosts is another
    candidate pair, i.e. another session, unless it has its own evidence.
    """
    if not len(carrier) or not len(query):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    eps = np.concatenate([src_ep[carrier], dst_ep[carrier]])
    eps_app = np.concatenate([app[carrier], app[carrier]])
    # (endpoint, the host it faced) of the carriers
    faced = np.sort(_pair(eps, np.concatenate([dst_addr[carrier], src_addr[carrier]])))
    order = np.argsort(eps, kind="stable")
    eps, eps_app = eps[order], eps_app[order]
    q_src, q_dst = src_ep[query], dst_ep[query]
    by_src = in_sorted(q_src, eps)
    by_dst = in_sorted(q_dst, eps)
    # the (endpoint, faced host) test only for the few that share an endpoint
    s = np.flatnonzero(by_src)
    by_src[s] = ~in_sorted(_pair(q_src[s], dst_addr[query[s]]), faced)
    d = np.flatnonzero(by_dst)
    by_dst[d] = ~in_sorted(_pair(q_dst[d], src_addr[query[d]]), faced)
    found = by_src | by_dst
    key = np.where(by_src, q_src, q_dst)[found]
    return query[found], eps_app[np.searchsorted(eps, key)]


def relay_sockets(
    src_ep: np.ndarray,
    dst_ep: np.ndarray,
    src_addr: np.ndarray,
    dst_addr: np.ndarray,
    conversation: np.ndarray,
    anchor: np.ndarray,
    query: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``query`` (media streams, an index array) on a socket that ran a
    STUN-shaped exchange (``anchor`` rows) with the same far host in another
    conversation (another port), and the anchor rows that vouch for them.

    Both are keyed by (socket, far host) of either end: the allocation or
    check to the server's STUN port and the media to its relayed address
    share the client's socket and the server's host (RFC 8656 s. 2). A
    server socket that talked to one client briefly and to another at length
    does not match: the far hosts differ.
    """
    if not len(anchor) or not len(query):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    a_keys = np.concatenate(
        [_pair(src_ep[anchor], dst_addr[anchor]), _pair(dst_ep[anchor], src_addr[anchor])]
    )
    keys = np.sort(a_keys)
    q_src = _pair(src_ep[query], dst_addr[query])
    q_dst = _pair(dst_ep[query], src_addr[query])
    same_flow = in_sorted(conversation[query], np.sort(conversation[anchor]))
    hit = (in_sorted(q_src, keys) | in_sorted(q_dst, keys)) & ~same_flow
    if not hit.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    used = np.sort(np.concatenate([q_src[hit], q_dst[hit]]))
    n = len(anchor)
    vouch = in_sorted(a_keys[:n], used) | in_sorted(a_keys[n:], used)
    return query[hit], anchor[vouch]


def _pair(endpoint: np.ndarray, addr: np.ndarray) -> np.ndarray:
    out: np.ndarray = mix64(endpoint * np.uint64(5) + addr)
    return out
