"""Aggregation: sum invariants, split/merge invariance, idempotence, window closing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.paths import REPO
from tests.streams.aggregate_support import rows_of
from voipflow.schemas import flowbatch as fb
from voipflow.schemas.usage import validate_usage
from voipflow.streams.aggregate import (
    ALL,
    HashUnion,
    apply_partial,
    batch_partials,
    close_windows,
    encode_state,
    media_call_seconds,
    new_state,
    subscriber_hash,
    unique_pairs,
    unpack_hashes,
)
from voipflow.streams.classify import Classification, Classifier
from voipflow.streams.config import WorkerConfig
from voipflow.streams.enrich import Enricher
from voipflow.streams.providers import load_providers

CFG = WorkerConfig(
    prefix_table=REPO / "data" / "cities" / "demo-cities.csv",
    home_networks="10.0.0.0/8,2001:db8::/32",
)
ENRICHER = Enricher(CFG)
ENRICHER.start()
CLF = Classifier(load_providers(), ice_memory=False)
T0 = 1_700_000_000_000


def city_names() -> list[tuple[str, str, str]]:
    return [(c.name, c.region, c.country) for c in ENRICHER.registry.cities]


def make(seed: int, n: int) -> fb.FlowBatch:
    rng = np.random.default_rng(seed)
    home = (0x0A000000 + rng.integers(1, 14, n) * 65536 + rng.integers(0, 40, n)).astype(np.uint32)
    other = rng.integers(0x01000000, 0x09000000, n).astype(np.uint32)
    up = rng.random(n) < 0.5
    src = np.where(up, home, other)
    dst = np.where(up, other, home)
    start = T0 + rng.integers(0, 240_000, n)
    return fb.make_batch(
        {
            "src_addr": fb.ipv4_to_addr16(src),
            "dst_addr": fb.ipv4_to_addr16(dst),
            "src_port": rng.integers(1024, 65535, n),
            "dst_port": rng.choice([3478, 5060, 8801, 443, 53, 40000], n),
            "protocol": rng.choice([6, 17], n),
            "packets": rng.integers(1, 2000, n),
            "bytes": rng.integers(40, 2_000_000, n),
            "flow_start_ms": start,
            "flow_end_ms": start + rng.integers(0, 30_000, n),
            "sampling_rate": rng.choice([1, 10, 100], n),
        }
    )


def partials_of(b: fb.FlowBatch, result: Classification | None = None) -> dict:
    enr = ENRICHER.enrich(b)
    return batch_partials(b, enr, result or CLF.classify(b), city_names(), 60)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 300))
def test_all_rows_sum_to_the_sampling_corrected_input(seed: int, n: int) -> None:
    b = make(seed, n)
    enr = ENRICHER.enrich(b)
    result = CLF.classify(b)
    parts = batch_partials(b, enr, result, city_names(), 60)
    rate = b["sampling_rate"].astype(np.int64)
    home = enr.home
    want_bytes = int((b["bytes"].astype(np.int64) * rate)[home].sum())
    want_voip = int((b["bytes"].astype(np.int64) * rate)[home & result.is_voip].sum())
    got_all = sum(a[ALL].bytes for p in parts.values() for a in p.windows.values())
    got_voip = sum(
        aw.bytes
        for p in parts.values()
        for a in p.windows.values()
        for app, aw in a.items()
        if app != ALL
    )
    flows = sum(a[ALL].flows for p in parts.values() for a in p.windows.values())
    assert (got_all, got_voip, flows) == (want_bytes, want_voip, int(home.sum()))
    # Subscribers: per VoIP app row exactly the distinct hashes of its records;
    # ALL rows carry none (only their bytes are read, for the VoIP share).
    names = city_names()
    window = b["flow_end_ms"].astype(np.int64) // 60_000 * 60_000
    hashes = subscriber_hash(enr.subscriber_addr)
    app_names = result.app_names()
    for p in parts.values():
        cid = [c[0] for c in names].index(p.city)
        for w, apps in p.windows.items():
            assert len(apps[ALL].subscribers) == 0
            for app, aw in apps.items():
                if app == ALL:
                    continue
                rows = (
                    home
                    & result.is_voip
                    & (enr.city_id == cid)
                    & (window == w)
                    & (app_names == app)
                )
                assert set(aw.subscribers.tolist()) == set(hashes[rows].tolist())
                # Sorted and distinct as they are: the partial packs them as such.
                assert aw.subscribers.tolist() == sorted(set(hashes[rows].tolist()))


def _totals(state: dict) -> dict:
    msgs = close_windows(copy.deepcopy(state), "x", 60, 0, watermark_ms=2**62, produced_ms=1)
    return {
        (m["window_start_ms"], m["app"]): (
            m["flows"],
            m["packets"],
            m["bytes"],
            m["subscribers"],
            round(m["call_seconds"], 2),
            round(m["voip_share"], 9),
        )
        for m in msgs
    }


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 300), cut=st.floats(0.05, 0.95))
def test_split_batches_merge_to_the_same_state(seed: int, n: int, cut: float) -> None:
    """Aggregation is split-invariant for the same verdicts. The verdicts are
    made once for the whole batch: the classifier itself uses evidence from
    the batch (both directions, RTP beside RTCP), so classifying the halves
    apart may rightly call a record otherwise."""
    b = make(seed, n)
    result = CLF.classify(b)
    whole = partials_of(b, result)
    k = max(1, int(n * cut))
    first = partials_of(b.take(np.arange(k)), rows_of(result, 0, k))
    second = partials_of(b.take(np.arange(k, n)), rows_of(result, k, n))
    for city in whole:
        one = new_state()
        apply_partial(one, whole[city].to_json("flows.v1:0", 1))
        two = new_state()
        if city in first:
            apply_partial(two, first[city].to_json("flows.v1:0", 1))
        if city in second:
            apply_partial(two, second[city].to_json("flows.v1:1", 7))
        t1, t2 = _totals(one), _totals(two)
        # Call-seconds pair directions within a batch, so a split can only add.
        assert {k: v[:4] for k, v in t1.items()} == {k: v[:4] for k, v in t2.items()}


def test_redelivered_partials_are_skipped() -> None:
    parts = partials_of(make(3, 200))
    city = next(iter(parts))
    st_ = new_state()
    msgs = [parts[city].to_json("flows.v1:2", off) for off in (5, 6)]
    assert [apply_partial(st_, m) for m in msgs] == ["applied", "applied"]
    before = _totals(st_)
    assert apply_partial(st_, msgs[0]) == "duplicate"
    assert apply_partial(st_, msgs[1]) == "duplicate"
    assert _totals(st_) == before
    assert apply_partial(st_, parts[city].to_json("flows.v1:3", 0)) == "applied"


@pytest.mark.parametrize(
    "spoil",
    [
        lambda row: row.__setitem__(4, "not base64!"),
        lambda row: row.__setitem__(4, "AAAA"),  # 3 bytes: not whole uint64 hashes
        lambda row: row.__setitem__(0, "7"),
        lambda row: row.__setitem__(1, True),
        lambda row: row.pop(),
        lambda row: row.__setitem__(4, "AgAAAAAAAAABAAAAAAAAAA=="),  # [2, 1]: not sorted
    ],
)
def test_a_malformed_partial_changes_nothing(spoil) -> None:  # type: ignore[no-untyped-def]
    """Checked before any change: the worker keeps states in memory between writes."""
    parts = partials_of(make(3, 200))
    city = next(iter(parts))
    st_ = new_state()
    apply_partial(st_, parts[city].to_json("flows.v1:2", 5))
    bad = parts[city].to_json("flows.v1:2", 6)
    last_window = list(bad["win"].values())[-1]
    spoil(last_window[next(app for app in last_window if app != ALL)])
    before = encode_state(st_)
    with pytest.raises((ValueError, TypeError)):
        apply_partial(st_, bad)
    assert encode_state(st_) == before


def test_windows_close_after_lateness_and_late_records_are_counted() -> None:
    b = make(5, 400)
    parts = partials_of(b)
    city = max(parts, key=lambda c: len(parts[c].windows))
    part = parts[city].to_json("flows.v1:0", 1)
    st_ = new_state()
    apply_partial(st_, part)
    voip_windows = [int(w) for w, apps in part["win"].items() if set(apps) - {ALL}]
    first_window = min(voip_windows)
    # Windows before it (all traffic, no VoIP) close first and publish nothing.
    close_windows(st_, city, 60, 30, watermark_ms=first_window + 30_000)
    # Watermark inside the lateness allowance of the first window: nothing closes.
    assert close_windows(st_, city, 60, 30, watermark_ms=first_window + 60_000 + 29_000) == []
    msgs = close_windows(st_, city, 60, 30, watermark_ms=first_window + 60_000 + 30_000)
    assert msgs and {m["window_start_ms"] for m in msgs} == {first_window}
    for m in msgs:
        validate_usage(m)
        assert 0 <= m["voip_share"] <= 1
        assert m["subscribers"] == len(m["subscriber_hashes"])
    # A record for the closed window arriving now is late: counted, not added.
    late = copy.deepcopy(part)
    late["off"] = 2
    late["win"] = {str(first_window): part["win"][str(first_window)]}
    apply_partial(st_, late)
    assert st_["late"] == part["win"][str(first_window)][ALL][0]
    assert str(first_window) not in st_["win"]


def test_subscriber_hash_is_stable_and_distinguishes_versions() -> None:
    a = np.array([fb.text_to_addr16("10.0.0.1"), fb.text_to_addr16("::a00:1")], dtype="S16")
    h = subscriber_hash(a)
    assert h[0] != h[1]
    assert subscriber_hash(a[:1])[0] == h[0]
    assert h.dtype == np.uint64


def conversations(specs: list[tuple[int, int, int, int, float, int]]) -> fb.FlowBatch:
    """Both directions of UDP conversations between a subscriber and a public peer.

    Each spec: (subscriber port, peer port, packets per direction, bytes per
    packet, seconds, sampling rate); packets are as exported (sampled).
    """
    cols: dict[str, list] = {k: [] for k in ("src", "dst", "sp", "dp", "pk", "by", "dur", "rate")}
    for i, (sub_port, peer_port, pkts, size, secs, rate) in enumerate(specs):
        sub = fb.text_to_addr16(f"10.1.0.{i + 1}")
        peer = fb.text_to_addr16(f"203.0.113.{i + 1}")
        directions = ((sub, peer, sub_port, peer_port), (peer, sub, peer_port, sub_port))
        for src, dst, sp, dp in directions:
            for k, v in zip(cols, (src, dst, sp, dp, pkts, pkts * size, secs, rate), strict=True):
                cols[k].append(v)
    dur_ms = (np.array(cols["dur"]) * 1000).astype(np.int64)
    return fb.make_batch(
        {
            "src_addr": np.array(cols["src"], dtype="S16"),
            "dst_addr": np.array(cols["dst"], dtype="S16"),
            "src_port": np.array(cols["sp"]),
            "dst_port": np.array(cols["dp"]),
            "protocol": np.full(len(dur_ms), 17),
            "packets": np.array(cols["pk"]),
            "bytes": np.array(cols["by"]),
            "flow_start_ms": np.full(len(dur_ms), T0),
            "flow_end_ms": T0 + dur_ms,
            "sampling_rate": np.array(cols["rate"]),
        }
    )


def test_call_seconds_count_media_by_its_statistics_on_any_port() -> None:
    """TURN-relayed media on STUN/TURN ports is call time; STUN checks and SIP are not."""
    b = conversations(
        [
            (40000, 3478, 3000, 120, 60.0, 1),  # WhatsApp/Teams media relayed over TURN
            (40002, 19305, 2250, 150, 45.0, 1),  # Meet media on Google's STUN/TURN ports
            (40004, 8801, 1500, 140, 30.0, 1),  # Zoom media
            (40006, 3478, 100, 120, 20.0, 10),  # TURN media sampled 1:10 (50 packets/s)
            (40008, 3478, 3, 100, 1.0, 1),  # STUN connectivity check
            (40010, 19302, 2, 90, 0.3, 1),  # STUN binding to Google's server
            (5060, 5060, 6, 700, 2.0, 1),  # SIP signalling
        ]
    )
    result = CLF.classify(b)
    assert result.is_voip.all()  # every one is VoIP: only media is call time
    secs = media_call_seconds(b, result)
    per_conversation = secs.reshape(-1, 2)
    # One direction of each pair carries the pair's seconds.
    assert ((per_conversation > 0).sum(axis=1) <= 1).all()
    assert per_conversation.sum(axis=1).tolist() == [60.0, 45.0, 30.0, 20.0, 0.0, 0.0, 0.0]
    parts = partials_of(b)
    (city,) = parts
    call_s = sum(
        aw.call_seconds
        for apps in parts[city].windows.values()
        for app, aw in apps.items()
        if app != ALL
    )
    assert call_s == 155.0


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_unique_pairs_matches_numpy_unique_of_rows(n: int) -> None:
    """The fast distinct pairs are exactly numpy's distinct rows (few groups,
    many repeated subscriber hashes, hashes above 2**63)."""
    rng = np.random.default_rng(n)
    a = rng.integers(0, 9, n).astype(np.uint64)
    b = rng.integers(0, 40, n).astype(np.uint64) * np.uint64(2**58)
    want = np.unique(np.stack([a, b]).T, axis=0)
    got = unique_pairs(a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert (got == want).all()


@pytest.mark.parametrize("write_every_partial", [False, True])
def test_a_state_kept_in_memory_encodes_as_one_decoded_after_every_partial(
    write_every_partial: bool,
) -> None:
    """The worker merges a burst of partials into a state held in memory (hashes
    as arrays) and writes it once: the bytes are those of the old way, a
    JSON round trip after every partial. Written after every partial instead,
    each write still carries the hashes added since the last (a hash set is
    packed once and kept until hashes are added)."""
    import json

    b = make(11, 600)
    result = CLF.classify(b)
    thirds = [partials_of(b.take(np.arange(i, 600, 3)), rows_of_every(result, i)) for i in range(3)]
    city = next(c for c in thirds[0] if c in thirds[1] and c in thirds[2])
    mem, trip = new_state(), new_state()
    for off, parts in enumerate(thirds):
        msg = json.loads(json.dumps(parts[city].to_json("flows.v1:0", off)))
        apply_partial(mem, copy.deepcopy(msg))
        apply_partial(trip, msg)
        trip = json.loads(encode_state(trip))
        if write_every_partial:
            assert encode_state(mem) == encode_state(trip)
    assert any(isinstance(row[4], HashUnion) for w in mem["win"].values() for row in w.values())
    assert encode_state(mem) == encode_state(trip)


def rows_of_every(result: Classification, start: int) -> Classification:
    """The verdicts of every third record from ``start``, without partners."""
    rows = np.arange(start, len(result.is_voip), 3)
    return Classification(
        result.app_code[rows],
        result.is_voip[rows],
        result.confidence[rows],
        result.evidence[rows],
        np.full(len(rows), -1),
        result.apps,
        result.role[rows],
    )


@pytest.mark.parametrize("sizes", [(0, 5), (5, 0), (1000, 3), (1000, 3, 0, 7, 7), (0,)])
def test_hash_union_is_the_distinct_union(sizes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(sizes))
    pool = rng.integers(0, 2**64 - 1, 1500, dtype=np.uint64, endpoint=True)
    parts = [np.unique(rng.choice(pool, n)) for n in sizes]
    union = HashUnion(*parts)
    assert (union.array() == np.unique(np.concatenate(parts))).all()
    union.add(np.unique(rng.choice(pool, 9)))
    want = np.unique(np.concatenate([*parts, union.parts[-1]]))
    assert union.array().tolist() == want.tolist()


def test_a_name_holding_the_hash_slot_text_encodes_plainly() -> None:
    """The hash sets are spliced into the JSON at a placeholder; a city or app
    name that happens to hold the placeholder's text falls back to plain JSON."""
    import json

    state = new_state()
    state["win"]["0"] = {
        "\x00hashes\x00": [1, 2, 3, 0.0, HashUnion(np.array([5, 9], np.uint64))],
        "b": [1, 2, 3, 0.0, HashUnion(np.array([7], np.uint64))],
    }
    got = json.loads(encode_state(state))
    assert unpack_hashes(got["win"]["0"]["\x00hashes\x00"][4]).tolist() == [5, 9]
    assert unpack_hashes(got["win"]["0"]["b"][4]).tolist() == [7]
