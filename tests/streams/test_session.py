"""Generic call evidence: STUN by shape, session context per host, a call's sockets."""

from __future__ import annotations

import numpy as np

from tests.streams.classify_support import CLIENT, T0, both, run, voice
from voipflow.streams.classify import Evidence
from voipflow.streams.session import HostSessions, call_sockets, relay_sockets, stun_shaped

META = "157.240.1.1"  # in Meta's published ranges (data/providers/meta.txt)
PEER = "198.51.100.9"  # in no list


def test_stun_shape_is_paired_and_few() -> None:
    pkts = np.array([3.0, 3.0, 200.0, 10.0])
    rev = np.array([3.0, 0.0, 200.0, 1.0])
    # a check exchange; one way only; a stream; unpaired
    assert stun_shaped(pkts, rev).tolist() == [True, False, False, False]


def test_host_sessions_expire_and_stay_bounded() -> None:
    s = HostSessions(max_age_ms=1_000, max_hosts=4)
    hosts = np.arange(1, 7, dtype=np.uint64)
    s.open(hosts, np.full(6, 2, np.uint8), np.arange(6, dtype=np.uint64))
    assert len(s) == 4  # the least recently seen went first
    assert s.lookup(np.array([6], np.uint64), np.array([99], np.uint64)).tolist() == [3]
    assert s.lookup(np.array([1], np.uint64), np.array([99], np.uint64)).tolist() == [0]
    s.open(np.array([50], np.uint64), np.array([1], np.uint8), np.array([5_000], np.uint64))
    assert len(s) == 1  # the others idled past max_age_ms
    # 17 bytes per host, and the membership filter at its least: 4,096 one-byte slots
    assert s.nbytes == 17 + 4096


def test_call_sockets_need_another_peer() -> None:
    src = np.array([1, 1, 3], np.uint64)  # endpoints
    dst = np.array([2, 7, 2], np.uint64)
    src_a = np.array([10, 10, 30], np.uint64)  # their hosts
    dst_a = np.array([20, 70, 20], np.uint64)
    app = np.array([5, 0, 0], np.uint8)
    hit, hit_app = call_sockets(src, dst, src_a, dst_a, np.array([0]), app, np.array([1, 2]))
    # socket 1 towards another host: the call's; socket 3 to the carrier's far
    # end from another host: also shares endpoint 2 but faces host 30, not 10.
    assert hit.tolist() == [1, 2]
    assert hit_app.tolist() == [5, 5]
    same_pair = call_sockets(
        np.array([1, 4], np.uint64),
        np.array([2, 2], np.uint64),
        np.array([10, 10], np.uint64),
        np.array([20, 20], np.uint64),
        np.array([0]),
        np.array([5, 0], np.uint8),
        np.array([1]),
    )[0]
    assert same_pair.tolist() == []  # a second socket between the same hosts


def test_media_to_an_unlisted_peer_of_a_host_in_a_session_is_its_call() -> None:
    p2p = both(CLIENT, 40001, PEER, 51001, **voice())  # odd ports: no RTP convention
    assert not run(p2p).is_voip.any()
    stun = both(CLIENT, 40010, "203.0.113.1", 3478, packets=2, bytes=200)
    r = run(stun + p2p)
    assert r.is_voip.tolist() == [True] * 4
    assert all(e & Evidence.HOST_SESSION for e in r.evidence[2:])
    # Keep-alives to a calling app's networks open no session.
    keepalive = both(CLIENT, 40007, META, 45000, packets=20, bytes=1360, flow_end_ms=T0 + 300_000)
    assert not run(keepalive + p2p).is_voip[2:].any()


def test_short_exchange_on_a_call_socket_is_that_call() -> None:
    call = both(CLIENT, 40000, META, 45000, **voice())  # WhatsApp media to a Meta relay
    check = both(CLIENT, 40000, PEER, 50000, packets=1, bytes=100)  # a check to a peer
    # another socket, one query each way (no triggered check: not the session's either)
    other = both(CLIENT, 40002, PEER, 50000, packets=1, bytes=100)
    r = run(call + check + other)
    assert r.is_voip.tolist() == [True] * 4 + [False] * 2
    assert r.app_names().tolist()[:4] == ["whatsapp"] * 4
    assert all(e & Evidence.CALL_SOCKET for e in r.evidence[2:4])
    assert all(e & Evidence.STUN_SHAPE for e in r.evidence[2:])


def test_relay_sockets_need_the_same_far_host_on_another_flow() -> None:
    # (socket, far host): anchor 0 is socket 1 <-> server endpoint 2 on host 20
    src = np.array([1, 1, 1, 4], np.uint64)
    dst = np.array([2, 3, 5, 3], np.uint64)
    src_a = np.array([10, 10, 10, 40], np.uint64)
    dst_a = np.array([20, 20, 50, 20], np.uint64)
    conv = np.array([100, 101, 102, 103], np.uint64)
    hit, vouch = relay_sockets(src, dst, src_a, dst_a, conv, np.array([0]), np.array([1, 2, 3]))
    # row 1: same socket, same far host, another port; row 2: another far
    # host; row 3: another client of the same server
    assert hit.tolist() == [1]
    assert vouch.tolist() == [0]
    same_flow = relay_sockets(src, dst, src_a, dst_a, conv, np.array([0]), np.array([0]))[0]
    assert same_flow.tolist() == []


def test_media_after_a_stun_shaped_exchange_with_its_server_is_a_call() -> None:
    server = "203.0.113.50"  # in no list, no STUN or app port
    alloc = both(CLIENT, 41000, server, 7000, packets=1, bytes=60)  # request, response
    media = both(CLIENT, 41000, server, 7002, **voice())
    assert not run(media).is_voip.any()  # statistics alone are no call
    r = run(alloc + media)
    assert r.is_voip.tolist() == [True] * 4
    assert all(e & Evidence.ICE_SHAPE for e in r.evidence)
    assert r.role_names().tolist() == ["ice", "ice", "media", "media"]
    # A game server's endpoint: one client's short exchange vouches for no
    # other client's stream.
    other = both("192.168.1.11", 41000, server, 7000, packets=1, bytes=60)
    game = both(CLIENT, 41000, server, 7000, **voice(), flow_start_ms=T0 + 1)
    assert not run(other + game).is_voip.any()


def test_checks_of_a_host_in_a_session_to_an_unlisted_peer_are_its_call() -> None:
    stun = both(CLIENT, 40010, "203.0.113.1", 3478, packets=2, bytes=200)  # opens the session
    # a check each way on another socket (RFC 8445 triggered checks): 2 + 2 packets
    checks = both(CLIENT, 40020, PEER, 50020, packets=2, bytes=200)
    ping = both(CLIENT, 40030, PEER, 50030, packets=1, bytes=100)  # one query, one answer
    assert not run(checks).is_voip.any()
    r = run(stun + checks + ping)
    assert r.is_voip.tolist() == [True] * 4 + [False] * 2
    assert all(e & Evidence.HOST_SESSION for e in r.evidence[2:4])
    assert r.role_names().tolist()[2:4] == ["ice", "ice"]
