"""The role verdict: each role from the protocol documents its rule rests on."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.streams.classify_support import CLF, CLIENT, T0, batch
from tests.streams.classify_support import both as conv
from tests.streams.classify_support import flow as rec
from voipflow.schemas import flowbatch as fb
from voipflow.schemas.voipflows import MEDIA_ROLES, ROLES
from voipflow.streams.aggregate import media_call_seconds
from voipflow.streams.classify import Classifier
from voipflow.streams.providers import load_providers
from voipflow.streams.roles import CARRIES_MEDIA, ROLE_NAMES

#: 20 s of 50 packets/s of 160-byte voice packets (RFC 3551's 20 ms frames).
VOICE = {"packets": 1000, "bytes": 160_000, "flow_end_ms": T0 + 20_000}


def test_each_role_from_its_protocol() -> None:
    rows = [
        rec(CLIENT, 5060, "198.51.100.7", 5060, bytes=900),  # SIP (RFC 3261)
        rec(CLIENT, 40000, "198.51.100.7", 1720, protocol=6, bytes=400),  # H.225.0
        *conv(CLIENT, 40002, "198.51.100.9", 3478, packets=3, bytes=300),  # STUN checks
        *conv(CLIENT, 50010, "52.113.10.1", 3478, **VOICE),  # media via a Teams relay
        *conv(CLIENT, 20000, "203.0.113.5", 30000, **VOICE),  # RTP ...
        *conv(CLIENT, 20001, "203.0.113.5", 30001, packets=4, bytes=400,
              flow_end_ms=T0 + 20_000),  # ... and its RTCP (RFC 3550 s. 11)
        rec(CLIENT, 40100, "52.113.10.1", 443, protocol=6, l7_proto=38, bytes=5000),  # TLS
        *conv(CLIENT, 40200, "9.9.9.9", 53),  # DNS: not VoIP
    ]  # fmt: skip
    r = CLF.classify(batch(rows))
    assert r.role_names().tolist() == [
        "signalling",
        "signalling",
        "ice",
        "ice",
        "relay",
        "relay",
        "media",
        "media",
        "control",
        "control",
        "control",
        "",
        "",
    ]
    # The app verdict is the same whatever the role: the relay's and the
    # control connection's app is Teams.
    assert r.app_names()[[4, 5, 10]].tolist() == ["teams"] * 3


def test_short_stun_shaped_flow_is_ice_but_a_lasting_one_is_media() -> None:
    """RFC 7983: STUN, DTLS and SRTP share a 5-tuple; checks are a few packets."""
    rows = [
        *conv(CLIENT, 50000, "198.51.100.9", 3478, packets=3, bytes=300),  # the checks
        *conv(CLIENT, 50000, "203.0.113.8", 41000, packets=3, bytes=300),  # a check to a peer
        *conv(CLIENT, 50000, "203.0.113.9", 42000, **VOICE),  # media to a peer
    ]
    r = Classifier(load_providers()).classify(batch(rows))
    assert r.is_voip.all()
    assert r.role_names().tolist() == ["ice"] * 4 + ["media"] * 2


def test_a_sampled_bare_binding_request_is_ice() -> None:
    """One sampled 48-byte packet: a STUN header without attributes over
    UDP/IPv4 (RFC 8489 s. 5), too small for any voice packet."""
    rows = [
        rec(CLIENT, 38152, "74.125.128.127", 19302, bytes=48, sampling_rate=10),  # Google STUN
        *conv(CLIENT, 39950, "198.51.100.9", 3478, packets=2, bytes=200),  # ICE socket ...
        rec(CLIENT, 39950, "35.158.183.167", 443, bytes=48, sampling_rate=10),  # ... to a relay
        rec(CLIENT, 39950, "35.158.183.168", 443, bytes=40, sampling_rate=10),  # not STUN-sized
    ]
    r = CLF.classify(batch(rows))
    assert r.is_voip.all()
    assert r.role_names().tolist() == ["ice", "ice", "ice", "ice", "control"]


def test_call_seconds_come_from_media_roles_only() -> None:
    rows = [
        *conv(CLIENT, 5060, "198.51.100.7", 5060, **{**VOICE, "bytes": 400_000}),  # SIP
        *conv(CLIENT, 50010, "52.113.10.1", 3478, **VOICE),  # relay
        *conv(CLIENT, 20000, "203.0.113.5", 30000, **VOICE),  # media
    ]
    b = batch(rows)
    r = CLF.classify(b)
    assert r.role_names().tolist() == ["signalling"] * 2 + ["relay"] * 2 + ["media"] * 2
    secs = media_call_seconds(b, r)
    assert secs[:2].tolist() == [0.0, 0.0]  # signalling stands for no call-seconds
    assert sorted(secs[2:4].tolist()) == [0.0, 20.0]  # a pair counts once
    assert sorted(secs[4:].tolist()) == [0.0, 20.0]


def test_role_names_are_the_contracts() -> None:
    assert ("", *ROLES) == ROLE_NAMES
    assert [ROLE_NAMES[i] for i in np.flatnonzero(CARRIES_MEDIA)] == list(MEDIA_ROLES)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 200))
def test_a_flow_has_a_role_exactly_when_it_is_voip(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    start = T0 + rng.integers(0, 60_000, n)
    b = fb.make_batch(
        {
            "src_addr": fb.ipv4_to_addr16(rng.integers(0x0A000000, 0x0A0000FF, n)),
            "dst_addr": fb.ipv4_to_addr16(rng.integers(0x34700000, 0x347000FF, n)),
            "src_port": rng.choice([5060, 3478, 8801, 20000, 20001, 40000, 53, 443], n),
            "dst_port": rng.choice([5060, 3478, 8801, 30000, 30001, 41000, 53, 443], n),
            "protocol": rng.choice([6, 17], n),
            "packets": rng.integers(1, 2000, n),
            "bytes": rng.integers(40, 2_000_000, n),
            "flow_start_ms": start,
            "flow_end_ms": start + rng.integers(0, 30_000, n),
        }
    )
    r = CLF.classify(b)
    assert np.array_equal(r.role > 0, r.is_voip)
    assert r.role.max() < len(ROLE_NAMES)
    # media and relay only over a transport that can carry a call's media
    media = r.carries_media()
    assert (b["protocol"][media & (r.role == ROLE_NAMES.index("media"))] == 17).all()
