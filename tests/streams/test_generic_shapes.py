"""Generic evidence of rules-7 that needs no app's ports or ranges."""

from __future__ import annotations

from tests.streams.classify_support import CLIENT, T0, both, run

RELAY = "203.0.113.60"  # in no provider list
TCP = 6


def test_turn_over_tcp_carrying_media_is_a_call() -> None:
    # 10 s of 40 packets/s each way of 200-byte packets to TCP 3478 (RFC 6062)
    stream = both(
        CLIENT, 50221, RELAY, 3478, packets=400, bytes=80_000, flow_end_ms=T0 + 10_000, protocol=TCP
    )
    r = run(stream)
    assert r.is_voip.tolist() == [True, True]
    assert r.app_names().tolist() == ["other_voip", "other_voip"]
    assert r.role_names().tolist() == ["relay", "relay"]


def test_a_few_packets_to_tcp_3478_are_no_call() -> None:
    # a connection attempt or one allocation over TCP: not a media stream
    short = both(
        CLIENT, 50222, RELAY, 3478, packets=3, bytes=300, flow_end_ms=T0 + 50, protocol=TCP
    )
    assert not run(short).is_voip.any()
    # a stream of bulk-sized segments is no media either
    bulk = both(
        CLIENT,
        50223,
        RELAY,
        3478,
        packets=400,
        bytes=560_000,
        flow_end_ms=T0 + 10_000,
        protocol=TCP,
    )
    assert not run(bulk).is_voip.any()


def test_ice_by_shape_leaves_a_named_flow_its_app() -> None:
    # the exchange is on Zoom's documented media port: it stays Zoom's
    check = both(CLIENT, 41000, RELAY, 8801, packets=1, bytes=60)
    media = both(CLIENT, 41000, RELAY, 9002, packets=1000, bytes=160_000, flow_end_ms=T0 + 20_000)
    r = run(check + media)
    assert r.is_voip.tolist() == [True] * 4
    assert r.app_names().tolist() == ["zoom", "zoom", "other_voip", "other_voip"]
