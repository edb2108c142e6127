"""Classification: each kind of evidence, sampling, pairing, and what must stay non-VoIP."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.streams.classify_support import CLF, CLIENT, T0, batch, both, flow, run, voice
from voipflow.schemas import flowbatch as fb
from voipflow.streams.classify import Classifier, Evidence
from voipflow.streams.flowpairs import IceMemory, pair_directions
from voipflow.streams.providers import load_providers


def test_signalling_ports_and_stun_with_provider() -> None:
    r = run(
        [
            flow(CLIENT, 5060, "198.51.100.7", 5060, bytes=900),  # SIP over UDP
            flow(CLIENT, 40000, "198.51.100.7", 1720, protocol=6),  # H.323 call setup
            flow(CLIENT, 50000, "52.113.10.1", 3478),  # STUN to Teams relays
            flow(CLIENT, 40001, "157.240.1.1", 3478),  # STUN to Meta
            flow(CLIENT, 40002, "198.51.100.9", 3478),  # STUN to anyone
        ]
    )
    assert r.is_voip.tolist() == [True] * 5
    assert r.app_names().tolist() == ["sip", "h323", "teams", "whatsapp", "other_voip"]
    assert r.confidence[2] > r.confidence[4]
    assert r.evidence[2] & Evidence.PROVIDER and r.evidence[2] & Evidence.STUN_PORT
    assert r.evidence[0] & Evidence.SIGNALLING_PORT


def rtcp(src: str, sport: int, dst: str, dport: int) -> list[dict[str, Any]]:
    """The RTCP flow of an RTP conversation: a report every 5 s both ways."""
    return both(src, sport, dst, dport, packets=4, bytes=320, flow_end_ms=T0 + 20_000)


def test_media_statistics_alone_are_not_a_call() -> None:
    # Voice-like UDP both ways between ephemeral ports: games and sensor
    # streams look the same, so statistics alone stay below the threshold.
    pair = both(CLIENT, 40000, "198.51.100.20", 41000, **voice())
    r = run(pair)
    assert r.is_voip.tolist() == [False, False]
    assert r.partner.tolist() == [1, 0]
    assert all(e & Evidence.BIDIRECTIONAL and e & Evidence.VOICE_SIZE for e in r.evidence)
    assert 0 < r.confidence[0] < CLF.threshold


def test_rtcp_beside_rtp_makes_both_voip() -> None:
    rows = both(CLIENT, 40000, "198.51.100.20", 41000, **voice())
    rows += rtcp(CLIENT, 40001, "198.51.100.20", 41001)
    r = run(rows)
    assert r.is_voip.tolist() == [True] * 4
    assert r.app_names().tolist() == ["rtp"] * 4
    assert all(e & Evidence.RTP_RTCP_PAIR for e in r.evidence)
    # RFC 3550 pairs an even RTP port with the next odd one: odd "RTP" ports
    # with a +1 neighbour are not a pair, nor is RTCP next to something idle.
    odd = both(CLIENT, 40001, "198.51.100.20", 41001, **voice())
    odd += rtcp(CLIENT, 40002, "198.51.100.20", 41002)
    assert not run(odd).is_voip.any()
    idle = both(CLIENT, 40000, "198.51.100.20", 41000, packets=3, bytes=300)
    idle += rtcp(CLIENT, 40001, "198.51.100.20", 41001)
    assert not run(idle).is_voip.any()


def test_media_between_hosts_that_signalled_is_rtp() -> None:
    sbc = "198.51.100.7"
    rows = [
        *both(CLIENT, 5060, sbc, 5060, packets=4, bytes=2400),  # SIP dialog
        *both(CLIENT, 40001, sbc, 30001, **voice()),  # media on odd ports, no RTCP
        *both("10.9.9.9", 40002, "198.51.100.8", 30002, **voice()),  # other hosts
    ]
    r = run(rows)
    assert r.is_voip.tolist() == [True, True, True, True, False, False]
    assert r.app_names().tolist()[:4] == ["sip", "sip", "rtp", "rtp"]
    assert r.evidence[2] & Evidence.SIGNALLING_PEER
    assert not r.evidence[4] & Evidence.SIGNALLING_PEER
    # Only media-like traffic: a few packets between the same hosts are not.
    few = run([*both(CLIENT, 5060, sbc, 5060, bytes=900), flow(CLIENT, 40003, sbc, 30003)])
    assert few.is_voip.tolist() == [True, True, False]


def test_signalling_peers_span_batches_and_h245_follows_h225() -> None:
    clf = Classifier(load_providers())
    sbc = "198.51.100.7"
    run([flow(CLIENT, 5060, sbc, 5060, bytes=900)], clf)
    later = run(both(CLIENT, 40001, sbc, 30001, **voice()), clf)
    assert later.is_voip.all() and (later.evidence & Evidence.SIGNALLING_PEER).all()
    clf.reset_context()
    assert not run(both(CLIENT, 40001, sbc, 30001, **voice()), clf).is_voip.any()
    # H.323: H.225 on 1720, then H.245 on dynamic TCP ports between the same hosts.
    gk = "198.51.100.9"
    rows = [
        *both(CLIENT, 40010, gk, 1720, protocol=6, packets=10, bytes=900),
        *both(CLIENT, 40011, gk, 11001, protocol=6, packets=12, bytes=700),
        *both(CLIENT, 40012, "198.51.100.10", 11002, protocol=6, packets=12, bytes=700),
    ]
    r = run(rows, clf)
    assert r.app_names().tolist() == ["h323"] * 4 + ["", ""]


def test_sampled_voice_records_still_look_like_voice() -> None:
    # 1:10 sampling: a tenth of the packets, the rate announced.
    sbc = "198.51.100.20"
    sip = both(CLIENT, 5060, sbc, 5060, packets=1, bytes=800)
    pair = both(CLIENT, 40000, sbc, 41000, **voice(packets=100, bytes=16_000))
    for row in sip + pair:
        row["sampling_rate"] = 10
    r = run(sip + pair)
    assert r.is_voip.tolist() == [True] * 4
    assert all(e & Evidence.SAMPLED and e & Evidence.MEDIA_RATE for e in r.evidence[2:])
    unsampled_thin = both(CLIENT, 40000, sbc, 41000, **voice(packets=10, bytes=1600))
    assert not run(both(CLIENT, 5060, sbc, 5060, bytes=900) + unsampled_thin).is_voip[2:].any()


def test_ice_sibling_carries_the_stun_app_to_relay_media() -> None:
    rows = [
        flow(CLIENT, 45000, "157.240.1.1", 3478, packets=3, bytes=500),
        flow(CLIENT, 45000, "203.0.113.50", 61000, packets=15, bytes=1100),  # relay probe
        flow(CLIENT, 45001, "203.0.113.50", 61000, packets=15, bytes=1100),  # other socket
    ]
    r = run(rows)
    assert r.is_voip.tolist() == [True, True, False]
    assert r.app_names()[1] == "whatsapp"
    assert r.evidence[1] & Evidence.ICE_SIBLING


def test_ice_memory_spans_batches_and_forgets_old_sockets() -> None:
    clf = Classifier(load_providers())
    run([flow(CLIENT, 45000, "157.240.1.1", 3478)], clf)
    later = run([flow(CLIENT, 45000, "203.0.113.50", 61000, packets=15, bytes=1100)], clf)
    assert later.is_voip[0] and later.app_names()[0] == "whatsapp"
    clf.reset_context()
    assert not run([flow(CLIENT, 45000, "203.0.113.50", 61000)], clf).is_voip[0]
    mem = IceMemory(max_age_ms=1000, max_size=2)
    mem.update(
        np.array([1, 2, 3], np.uint64),
        np.array([5, 6, 7], np.uint8),
        np.array([0, 5000, 5001], np.uint64),
    )
    assert mem.lookup(np.array([1, 2, 3], np.uint64)).tolist() == [0, 7, 8]


def test_a_batch_reaching_back_past_the_age_keeps_all_its_sockets_until_the_next() -> None:
    """A batch's own sockets are all remembered, however old (a capture's batch can
    span more than the age); the next update forgets the idle ones."""
    mem = IceMemory(max_age_ms=1000, max_size=100)
    mem.update(np.array([10], np.uint64), np.array([1], np.uint8), np.array([0], np.uint64))
    # 11 is as old as 10, 12 is new: 10 and 11 are idle by time, but 11 is this batch's.
    mem.update(
        np.array([11, 12, 10], np.uint64),
        np.array([2, 3, 4], np.uint8),
        np.array([0, 9000, 0], np.uint64),
    )
    # 10 came again in this batch: it starts afresh with this batch's app.
    assert mem.lookup(np.array([10, 11, 12], np.uint64)).tolist() == [5, 3, 4]
    assert len(mem) == 3
    mem.update(np.array([13], np.uint64), np.array([1], np.uint8), np.array([9001], np.uint64))
    assert mem.lookup(np.array([10, 11, 12, 13], np.uint64)).tolist() == [0, 0, 4, 2]
    assert len(mem) == 2


def test_a_full_ice_memory_forgets_the_least_recently_seen_down_to_seven_eighths() -> None:
    mem = IceMemory(max_age_ms=10**9, max_size=80)
    rng = np.random.default_rng(3)
    hashes = rng.permutation(np.arange(1, 101, dtype=np.uint64) * 7919)
    seen = rng.permutation(np.arange(100, dtype=np.uint64))
    apps = (hashes % 5).astype(np.uint8)
    for part in np.array_split(np.arange(100), 4):  # four batches: the last one overflows
        mem.update(hashes[part], apps[part], seen[part])
    assert len(mem) == 70
    newest = seen >= 30
    found = mem.lookup(hashes)
    assert (found[newest] == apps[newest].astype(np.int16) + 1).all()
    assert (found[~newest] == 0).all()
    assert (np.diff(mem.hashes.astype(np.float64)) > 0).all()  # still sorted for lookups


@pytest.mark.parametrize(
    ("max_size", "per_step", "pool_size", "filters"),
    [
        (300, 40, 2_000, 1),
        (5_000, 400, 20_000, 3),  # grows its filter twice
        # Never full: idle entries stay in the arrays until the recent level
        # (thousands of entries a step) merges into the main one.
        (200_000, 2_000, 30_000, 4),
    ],
)
def test_ice_memory_filter_never_hides_a_remembered_socket(
    max_size: int, per_step: int, pool_size: int, filters: int
) -> None:
    """Full-width hashes through ageing, eviction, filter growth and rebuilds, and
    the merges of the recent level: a lookup finds exactly what a plain
    dictionary with the same rules holds."""
    age = 15 * 1_000
    mem = IceMemory(max_age_ms=age, max_size=max_size)
    rng = np.random.default_rng(11)
    pool = rng.integers(1, 2**63, pool_size, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    model: dict[int, tuple[int, int]] = {}  # hash -> (app, seen); every time distinct
    slots = {mem.filter_slots}
    for step in range(60):
        pick = pool[rng.integers(0, len(pool), per_step)]
        apps = rng.integers(0, 6, per_step).astype(np.uint8)
        seen = step * 1_000 + np.arange(per_step, dtype=np.uint64)
        mem.update(pick, apps, seen)
        # Entries idle past the age go before the batch is merged.
        newest = max([int(seen.max()), *(t for _, t in model.values())])
        model = {h: v for h, v in model.items() if v[1] + age >= newest}
        for h, a, t in zip(pick.tolist(), apps.tolist(), seen.tolist(), strict=True):
            old = model.get(h, (0, 0))
            model[h] = (max(old[0], a), max(old[1], t))
        if len(model) > max_size:
            kept = max_size - max_size // 8
            keep = sorted(model, key=lambda h: model[h][1])[len(model) - kept :]
            model = {h: model[h] for h in keep}
        assert len(mem) == len(model)
        found = mem.lookup(pool)
        want = [model[h][0] + 1 if h in model else 0 for h in pool.tolist()]
        assert found.tolist() == want
        slots.add(mem.filter_slots)
    assert len(slots) == filters


def test_non_voip_traffic_stays_out() -> None:
    rows = [
        *both(CLIENT, 40000, "8.8.8.8", 53, **voice()),  # DNS: service port
        *both(CLIENT, 40001, "157.240.1.1", 443, **voice()),  # QUIC to Meta
        *both(CLIENT, 40002, "157.240.1.1", 443, protocol=6, **voice()),  # TLS to Meta
        *both(
            CLIENT, 40003, "198.51.100.3", 42000, packets=8, bytes=800, flow_end_ms=T0 + 1200
        ),  # short game exchange
        flow(CLIENT, 40004, "198.51.100.4", 5060, packets=6, bytes=700),  # VPN on the SIP port
        # A game: 30 inputs/s up, 30 snapshots/s down for two minutes.
        *both(
            CLIENT,
            40006,
            "198.51.100.6",
            27500,
            packets=3600,
            bytes=3600 * 110,
            flow_end_ms=T0 + 120_000,
        ),
        # Push keep-alives to Meta: UDP both ways, small, one every 15 s.
        *both(
            CLIENT, 40007, "157.240.1.1", 45000, packets=20, bytes=1360, flow_end_ms=T0 + 300_000
        ),
        *both(
            CLIENT,
            40005,
            "198.51.100.5",
            43000,
            packets=2000,
            bytes=2_400_000,
            flow_end_ms=T0 + 20_000,
        ),  # bulk transfer
    ]
    r = run(rows)
    assert not r.is_voip.any(), r.app_names()
    assert (r.evidence[:2] & Evidence.SERVICE_PORT).all()


def test_exporter_verdict_wins_both_ways() -> None:
    rows = [
        flow(CLIENT, 40000, "198.51.100.3", 443, protocol=6, l7_proto=45),  # WhatsApp call id
        flow(CLIENT, 5060, "198.51.100.4", 5060, bytes=900),
        flow(CLIENT, 40001, "198.51.100.5", 40002),
    ]
    r = run(rows, names=["", "http", "Skype Call"])
    assert r.is_voip.tolist() == [True, False, True]
    assert r.app_names().tolist() == ["whatsapp", "", "teams"]
    assert r.evidence[1] & Evidence.EXPORTER_NOT_VOIP


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2), st.integers(0, 2)),
        min_size=1,
        max_size=30,
    )
)
def test_pairing_matches_brute_force(tuples: list[tuple[int, int, int, int]]) -> None:
    # A tuple that is its own reverse (same address and port both sides) is not paired.
    tuples = [t for t in tuples if (t[0], t[2]) != (t[1], t[3])] or [(0, 1, 0, 0)]
    rows = [flow(f"10.0.0.{a}", 1000 + p, f"10.0.0.{b}", 1000 + q) for a, b, p, q in tuples]
    partner = pair_directions(batch(rows))
    for i, (a, b, p, q) in enumerate(tuples):
        rev = [j for j, t in enumerate(tuples) if t == (b, a, q, p) and j != i]
        if rev:
            assert partner[i] in rev
        else:
            assert partner[i] == -1 or tuples[partner[i]] == (b, a, q, p)
        if partner[i] >= 0:
            assert tuples[partner[i]] == (b, a, q, p)


# -- service ports, rates, ICE sockets (rules-4) --------------------------------


def test_dns_from_a_stun_port_does_not_make_the_resolver_an_ice_socket() -> None:
    """A client that queried 1.1.1.1:53 from source port 3478 once: the resolver's
    socket is a server on a service port, never an ICE client socket, so every
    other subscriber's DNS query to it stays DNS (it used to become other_voip)."""
    clf = Classifier(load_providers())
    first = run(both("10.1.0.5", 3478, "1.1.1.1", 53, bytes=80), clf)
    assert not first.is_voip.any()
    assert (first.evidence & Evidence.SERVICE_PORT).all()
    assert not (first.evidence & Evidence.STUN_PORT).any()
    queries = [
        *both(CLIENT, 40000, "1.1.1.1", 53, bytes=80, flow_end_ms=T0 + 40),
        *both("10.1.0.6", 51234, "1.1.1.1", 53, bytes=90, flow_end_ms=T0 + 20),
        *both("2001:db8::6", 40001, "2606:4700:4700::1111", 53, bytes=90),
    ]
    for _ in range(2):  # the same batch again, and a later one
        r = run(queries, clf)
        assert not r.is_voip.any(), r.app_names()
        assert not (r.evidence & Evidence.ICE_SIBLING).any()


def test_ice_evidence_never_overrides_a_service_port() -> None:
    """A real ICE socket (it ran STUN) that also reaches a resolver or NTP: those
    flows are what their port says; the media from the socket is still VoIP."""
    rows = [
        flow(CLIENT, 45000, "198.51.100.9", 3478, packets=3, bytes=500),  # STUN
        *both(CLIENT, 45000, "8.8.8.8", 53, bytes=80),
        *both(CLIENT, 45000, "198.51.100.11", 123, bytes=76),
        flow(CLIENT, 45000, "203.0.113.50", 61000, packets=15, bytes=1100),  # media
    ]
    r = run(rows)
    assert r.is_voip.tolist() == [True, False, False, False, False, True]
    assert r.evidence[5] & Evidence.ICE_SIBLING
    assert not (r.evidence[1:5] & Evidence.ICE_SIBLING).any()


def test_flow_hashes_tell_ipv4_sockets_apart() -> None:
    """IPv4-mapped addresses share their high 64 bits (zero): the hashes of
    (address, port) must still differ for every distinct socket."""
    rng = np.random.default_rng(7)
    n = 200_000
    v4 = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    ports = rng.integers(0, 65536, n).astype(np.uint16)
    v4[:1000] = v4[0]  # one address, many ports
    ports[1000:2000] = ports[0]  # one port, many addresses
    addrs = fb.ipv4_to_addr16(v4)
    b = fb.make_batch(
        {"src_addr": addrs, "dst_addr": addrs, "src_port": ports, "dst_port": ports,
         "protocol": np.full(n, 17, np.uint8)}
    )  # fmt: skip
    from voipflow.streams.flowpairs import flow_hashes

    h = flow_hashes(b)
    sockets = np.unique(v4.astype(np.uint64) << np.uint64(16) | ports.astype(np.uint64))
    assert len(np.unique(h.src_ep)) == len(sockets)
    assert len(np.unique(h.src_addr)) == len(np.unique(v4))
    # the same 32 bits as IPv4 and as an IPv6 address are different hosts
    v6 = np.zeros((n, 2), ">u8")
    v6[:, 1] = v4
    b6 = fb.make_batch({"src_addr": v6.view("S16").reshape(-1), "protocol": np.full(n, 17)})
    assert not np.isin(flow_hashes(b6).src_addr, h.src_addr).any()


def test_one_packet_has_no_rate_and_no_duration() -> None:
    """A rate needs two packets: a one-packet record is not media-rate, whatever
    its times say, sampled or not."""
    rows = [
        flow(CLIENT, 40000, "198.51.100.1", 40002, packets=1, bytes=120, flow_end_ms=T0 + 50),
        flow(CLIENT, 40004, "198.51.100.1", 40006, packets=1, bytes=120, flow_end_ms=T0 + 5000,
             sampling_rate=100),
        flow(CLIENT, 40008, "198.51.100.1", 40010, packets=2, bytes=240, flow_end_ms=T0 + 500),
        flow(CLIENT, 40012, "198.51.100.1", 40014, packets=3, bytes=360, flow_end_ms=T0 + 2000,
             sampling_rate=10),
    ]  # fmt: skip
    r = run(rows)
    rate = (r.evidence & Evidence.MEDIA_RATE) > 0
    long_ = (r.evidence & Evidence.LONG) > 0
    assert rate.tolist() == [False, False, True, True]
    assert long_.tolist() == [False, False, False, True]


def test_a_client_port_alone_is_not_voip() -> None:
    """Video and web whose random client port happens to be a VoIP port (SIP
    5060, Zoom 8808, H.323 1719, STUN 3478) towards a service on a system port:
    the server's port says what the flow is."""
    video = {"packets": 29_000, "bytes": 35_000_000, "flow_end_ms": T0 + 60_000}
    rows = [
        *both(CLIENT, 5060, "198.51.100.30", 443, **video),  # QUIC video
        *both(CLIENT, 8808, "198.51.100.30", 443, **video),
        *both(CLIENT, 1719, "198.51.100.30", 443, protocol=6, **video),  # TLS video
        *both(CLIENT, 5060, "198.51.100.31", 80, protocol=6, packets=40, bytes=30_000),
        *both(CLIENT, 3478, "198.51.100.32", 123, bytes=76),  # NTP
    ]
    r = run(rows)
    assert not r.is_voip.any(), r.app_names()
    assert (r.evidence & Evidence.SERVICE_PORT).all()
    voip_ports = Evidence.SIGNALLING_PORT | Evidence.APP_PORT | Evidence.STUN_PORT
    assert not (r.evidence & voip_ports).any()
    # Between two registered ports the VoIP port still decides: STUN from a
    # client whose port is IPsec NAT-T's, SIP between two 5060s.
    stun = flow(CLIENT, 4500, "198.51.100.9", 3478)
    r = run([stun, flow(CLIENT, 5060, "198.51.100.7", 5060, bytes=900)])
    assert r.is_voip.tolist() == [True, True]


# -- SIP trunks: media away from the signalling peer (rules-4) ------------------


def test_rtp_of_a_host_that_did_sip_is_voip_wherever_it_goes() -> None:
    """Carriers split signalling (SBC) and media (gateway): the subscriber's SIP
    goes to one address, its RTP (even ports) to another."""
    sbc, gw = "198.51.100.7", "198.51.100.70"
    rows = [
        *both(CLIENT, 5060, sbc, 5060, packets=6, bytes=4200),  # INVITE dialog
        *both(CLIENT, 12000, gw, 16000, **voice()),  # RTP, even ports
        *both(CLIENT, 12003, gw, 16005, **voice()),  # odd ports: not RTP's convention
        *both("10.9.9.9", 12000, gw, 16002, **voice()),  # a host that did no SIP
    ]
    r = run(rows)
    assert r.is_voip.tolist() == [True] * 4 + [False] * 4
    assert r.app_names().tolist()[2:4] == ["rtp", "rtp"]
    assert (r.evidence[2:4] & Evidence.SIGNALLING_HOST).all()
    assert not (r.evidence[4:] & Evidence.SIGNALLING_HOST).any()
    # across batches, and only for media-like flows
    clf = Classifier(load_providers())
    run(both(CLIENT, 5060, sbc, 5060, packets=6, bytes=4200), clf)
    later = run(
        [*both(CLIENT, 12002, gw, 16004, **voice()),
         *both(CLIENT, 12004, gw, 16006, packets=3, bytes=300)],
        clf,
    )  # fmt: skip
    assert later.is_voip.tolist() == [True, True, False, False]
    clf.reset_context()
    assert not run(both(CLIENT, 12002, gw, 16004, **voice()), clf).is_voip.any()
    # keep-alives are not a call's signalling (RFC 5626 CRLF pings)
    keepalive = both(CLIENT, 5060, sbc, 5060, packets=20, bytes=80)
    assert not run([*keepalive, *both(CLIENT, 12000, gw, 16000, **voice())]).is_voip.any()


def test_voice_marked_ef_is_voip() -> None:
    """DSCP EF (46, ToS 184) or VOICE-ADMIT (44) on voice-sized media: RFC 4594's
    telephony class; unmarked, or marked but not media, it is not enough."""
    gw = "198.51.100.70"
    rows = [
        *both(CLIENT, 12000, gw, 16000, tos=184, **voice()),
        flow(CLIENT, 12010, gw, 16010, tos=177, **voice()),  # VOICE-ADMIT + ECN bit
        flow(CLIENT, 12002, gw, 16002, **voice()),  # unmarked
        flow(CLIENT, 12004, gw, 16004, tos=184, packets=4, bytes=400),  # marked, a few packets
        flow(CLIENT, 12006, gw, 16006, tos=184, **voice(bytes=1_000_000)),  # video-sized
        flow(CLIENT, 12008, gw, 16008, tos=136, **voice()),  # AF41, video conferencing
    ]
    r = run(rows)
    assert r.is_voip.tolist() == [True, True, True, False, False, False, False]
    assert (r.evidence[:3] & Evidence.DSCP_VOICE).all()
    assert not r.evidence[6] & Evidence.DSCP_VOICE


# -- Telegram: ranges count only for call media (voip: media) -------------------


def test_telegram_ranges_count_only_for_call_media() -> None:
    reflector = "91.108.8.8"
    rows = [
        *both(CLIENT, 28150, reflector, 529, **voice()),  # a call through a reflector
        flow(CLIENT, 28152, reflector, 531, **voice()),  # one direction only
        *both(CLIENT, 28154, reflector, 533, packets=12, bytes=1300, flow_end_ms=T0 + 30_000),
        *both(CLIENT, 40000, "149.154.167.91", 443, protocol=6, **voice()),  # MTProto over TLS
    ]
    r = run(rows)
    assert r.is_voip.tolist() == [True, True] + [False] * 5, r.app_names()
    assert r.app_names().tolist()[:2] == ["telegram", "telegram"]
    assert (r.evidence[:5] & Evidence.PROVIDER).all()
