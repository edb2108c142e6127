"""Per-exporter traffic: per-record reference sums, split/merge invariance, idempotence,
window closing on reception time, idle ticks, and the traffic.v1 contract."""

from __future__ import annotations

import copy
import itertools
import json
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.paths import REPO
from tests.streams.aggregate_support import rows_of
from voipflow.schemas import flowbatch as fb
from voipflow.schemas.traffic import (
    COUNTERS,
    TrafficError,
    TrafficVersionError,
    decode_traffic,
    encode_traffic,
    traffic_key,
    validate_traffic,
)
from voipflow.storage.sink.tables import BadMessage, parse_traffic
from voipflow.streams.classify import Classification, Classifier
from voipflow.streams.config import WorkerConfig
from voipflow.streams.enrich import SOURCE_NONE, Enricher
from voipflow.streams.pipeline import ExporterStates, FlowPipeline, PartialError
from voipflow.streams.providers import load_providers
from voipflow.streams.traffic import (
    apply_traffic,
    batch_traffic,
    close_traffic,
    new_traffic_state,
    split_window_key,
)

CFG = WorkerConfig(
    prefix_table=REPO / "data" / "cities" / "demo-cities.csv",
    home_networks="10.0.0.0/8,2001:db8::/32",
    window_s=60,
    lateness_s=30,
    idle_close_s=100,
)
ENRICHER = Enricher(CFG)
ENRICHER.start()
CLF = Classifier(load_providers(), ice_memory=False)
T0 = 1_700_000_040_000  # a window start
EXPORTERS = ["192.0.2.1", "192.0.2.2", "2001:db8:ffff::1"]


def make(seed: int, n: int, span_ms: int = 240_000) -> fb.FlowBatch:
    """Records of several exporters and domains: placed, unlocated (10.13+) and unhomed."""
    rng = np.random.default_rng(seed)
    # 10.1-10.12 are cities of the demo table; 10.13-10.15 are home without a city.
    home = (0x0A000000 + rng.integers(1, 16, n) * 65536 + rng.integers(0, 40, n)).astype(np.uint32)
    other = rng.integers(0x01000000, 0x09000000, n).astype(np.uint32)
    kind = rng.integers(0, 3, n)  # 0 upstream, 1 downstream, 2 neither side at home
    src = np.where(kind == 0, home, other)
    dst = np.where(kind == 1, home, rng.integers(0x01000000, 0x09000000, n).astype(np.uint32))
    dst = np.where(kind == 0, other, dst)
    received = T0 + np.sort(rng.integers(0, span_ms, n))
    start = received - rng.integers(0, 600_000, n)  # exporters' clocks: anything earlier
    exporters = rng.choice(len(EXPORTERS), n)
    return fb.make_batch(
        {
            "time_received_ms": received,
            "exporter_addr": np.array(
                [fb.text_to_addr16(EXPORTERS[i]) for i in exporters], dtype="S16"
            ),
            "observation_domain_id": rng.choice([0, 7], n),
            "src_addr": fb.ipv4_to_addr16(src),
            "dst_addr": fb.ipv4_to_addr16(dst),
            "src_port": rng.integers(1024, 65535, n),
            "dst_port": rng.choice([3478, 5060, 8801, 443, 53, 40000], n),
            "protocol": rng.choice([6, 17], n),
            "packets": rng.integers(1, 2000, n),
            "bytes": rng.integers(40, 2_000_000, n),
            "reverse_packets": np.where(rng.random(n) < 0.2, rng.integers(1, 100, n), 0),
            "reverse_bytes": np.where(rng.random(n) < 0.2, rng.integers(40, 9000, n), 0),
            "flow_start_ms": start,
            "flow_end_ms": start + rng.integers(0, 30_000, n),
            "sampling_rate": rng.choice([0, 1, 10, 100], n),
        }
    )


def reference(b: fb.FlowBatch, window_s: int = 60) -> dict[tuple[str, int, int], list[int]]:
    """(exporter, window start, domain) -> counters, one record at a time in plain Python."""
    enr = ENRICHER.enrich(b)
    voip = CLF.classify(b).is_voip
    out: dict[tuple[str, int, int], list[int]] = defaultdict(lambda: [0] * len(COUNTERS))
    w_ms = window_s * 1000
    for i in range(len(b)):
        recv = int(b["time_received_ms"][i]) or int(b["flow_end_ms"][i])
        key = (
            fb.addr_to_text(bytes(b["exporter_addr"][i])),
            recv // w_ms * w_ms,
            int(b["observation_domain_id"][i]),
        )
        rate = max(int(b["sampling_rate"][i]), 1)
        pk = int(b["packets"][i]) + int(b["reverse_packets"][i])
        by = int(b["bytes"][i]) + int(b["reverse_bytes"][i])
        home = bool(enr.home[i])
        placed = home and int(enr.city_source[i]) != SOURCE_NONE
        is_voip = home and bool(voip[i])
        row = (1, pk, by, pk * rate, by * rate, placed, home and not placed, not home, is_voip)
        acc = out[key]
        for k, v in enumerate(row):
            acc[k] += int(v)
        acc[9] += by * rate if is_voip else 0
    return dict(out)


def partials_of(
    b: fb.FlowBatch, offset: int = 0, result: Classification | None = None
) -> dict[str, dict[str, Any]]:
    parts = batch_traffic(b, ENRICHER.enrich(b), result or CLF.classify(b), 60)
    return {e: p.to_json("flows.v1:0", offset) for e, p in parts.items()}


def close_all(states: dict[str, dict[str, Any]]) -> dict[tuple[str, int, int], list[int]]:
    out = {}
    for exporter, state in states.items():
        for m in close_traffic(state, exporter, 60, 0, watermark_ms=2**62, produced_ms=1):
            validate_traffic(m)
            out[(m["exporter"], m["window_start_ms"], m["observation_domain_id"])] = [
                m[c] for c in COUNTERS
            ]
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 300))
def test_partials_equal_the_per_record_reference(seed: int, n: int) -> None:
    b = make(seed, n)
    got = {
        (e, *split_window_key(k)): v for e, p in partials_of(b).items() for k, v in p["win"].items()
    }
    assert got == reference(b)
    for flows, *_rest in got.values():
        assert flows > 0
    for v in got.values():  # every record is placed, unlocated or unhomed
        assert v[0] == v[5] + v[6] + v[7]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(2, 300),
    cuts=st.lists(st.integers(1, 299), max_size=5),
    replay=st.lists(st.integers(0, 5), max_size=4),
)
def test_split_batches_with_redeliveries_close_to_the_whole(
    seed: int, n: int, cuts: list[int], replay: list[int]
) -> None:
    """Any split of the stream, partials re-delivered at random, gives the same
    windows (for the same verdicts: the classifier uses evidence from the whole
    batch, so the chunks take their rows of the whole batch's verdicts)."""
    b = make(seed, n)
    result = CLF.classify(b)
    bounds = [0, *sorted({c for c in cuts if c < n}), n]
    states: dict[str, dict[str, Any]] = defaultdict(new_traffic_state)
    delivered = []
    for off, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        chunk = b.take(np.arange(lo, hi))
        for exporter, part in partials_of(chunk, off, rows_of(result, lo, hi)).items():
            delivered.append((exporter, part))
            assert apply_traffic(states[exporter], copy.deepcopy(part)) == "applied"
    for idx in replay:
        if idx < len(delivered):
            exporter, part = delivered[idx]
            assert apply_traffic(states[exporter], copy.deepcopy(part)) == "duplicate"
    assert close_all(states) == reference(b)


def test_windows_close_on_reception_time_and_late_records_are_counted() -> None:
    b = make(1, 400, span_ms=60_000)  # all received within [T0, T0 + 60 s)
    state = new_traffic_state()
    for exporter, part in partials_of(b, 1).items():
        if exporter == "192.0.2.1":
            apply_traffic(state, part)
    assert state["wm"] < T0 + 60_000
    # Not yet: the window ends at T0 + 60 s and has 30 s of lateness.
    assert close_traffic(state, "192.0.2.1", 60, 30, watermark_ms=T0 + 89_999) == []
    out = close_traffic(state, "192.0.2.1", 60, 30, watermark_ms=T0 + 90_000, produced_ms=5)
    assert {m["window_start_ms"] for m in out} == {T0}
    assert {m["observation_domain_id"] for m in out} == {0, 7}
    assert state["win"] == {} and state["closed"] == T0 + 60_000
    ref = reference(b)
    assert sum(m["flows"] for m in out) == sum(v[0] for k, v in ref.items() if k[0] == "192.0.2.1")
    # A re-delivered batch is a duplicate; a new batch for the closed window is late.
    again = partials_of(b, 1)["192.0.2.1"]
    assert apply_traffic(state, again) == "duplicate"
    late = partials_of(b, 2)["192.0.2.1"]
    assert apply_traffic(state, late) == "applied"
    assert state["late"] == sum(c[0] for c in late["win"].values())
    assert state["win"] == {}


def test_empty_batch_and_unset_reception_time() -> None:
    assert batch_traffic(make(1, 1).take(np.arange(0)), *_enrich_classify(make(1, 1)), 60) == {}
    b0 = make(2, 50)
    b0.columns["time_received_ms"] = np.zeros(50, dtype=np.uint64)
    windows = {split_window_key(k)[0] for p in partials_of(b0).values() for k in p["win"]}
    want = set((b0["flow_end_ms"].astype(np.int64) // 60_000 * 60_000).tolist())
    assert windows == want


def _enrich_classify(b: fb.FlowBatch) -> tuple[Any, Any]:
    return ENRICHER.enrich(b), CLF.classify(b)


@pytest.mark.parametrize(
    "partial",
    [
        {"src": "t:0", "off": 1, "max_ms": 1, "win": {"0|0": [1, 2]}},
        {"src": "t:0", "off": 1, "max_ms": 1, "win": {"0|0": [1] * 9 + [-1]}},
        {"src": "t:0", "off": 1, "max_ms": 1, "win": {"0|0": [1] * 9 + [True]}},
        {"src": "t:0", "off": 1, "max_ms": 1, "win": {"x|0": [1] * 10}},
    ],
)
def test_malformed_partials_are_refused_and_change_nothing(partial: dict[str, Any]) -> None:
    state = new_traffic_state()
    before = copy.deepcopy(state)
    with pytest.raises(ValueError):
        apply_traffic(state, partial)
    assert state == before  # keys and counters are checked before the offset is claimed


def test_exporter_states_publish_closed_windows_and_idle_ticks() -> None:
    pipe = FlowPipeline(CFG)
    pipe.start()
    states = ExporterStates(CFG)
    b = make(3, 200, span_ms=30_000)
    out = pipe.process(fb.encode(b), "flows.v1:0", 4)
    assert set(out.traffic) == set(EXPORTERS)
    value = out.traffic["192.0.2.2"]
    st_, msgs, outcome = states.handle("192.0.2.2", None, value, now_ms=1_000)
    assert (outcome, msgs) == ("applied", [])
    _, msgs, outcome = states.handle("192.0.2.2", st_, value, now_ms=1_000)
    assert (outcome, msgs) == ("duplicate", [])
    tick = json.dumps({"tick": 0}).encode()
    # Idle for 100 s (idle_close_s): from then on event time follows the
    # wall clock, from the newest reception time, until it passes the
    # window's end plus the lateness (T0 + 60 s + 30 s).
    need = T0 + 90_000 - int(st_["wm"])
    assert need > 0
    _, msgs, _ = states.handle("192.0.2.2", st_, tick, now_ms=1_000 + 99_999)
    assert msgs == []
    _, msgs, _ = states.handle("192.0.2.2", st_, tick, now_ms=1_000 + 100_000 + need - 1)
    assert msgs == []
    _, msgs, outcome = states.handle("192.0.2.2", st_, tick, now_ms=1_000 + 100_000 + need)
    assert outcome == "tick"
    decoded = [decode_traffic(v) for _, v in msgs]
    assert [k for k, _ in msgs] == [traffic_key("192.0.2.2", T0)] * len(msgs)
    ref = {k: v for k, v in reference(b).items() if k[0] == "192.0.2.2"}
    assert {(m["exporter"], m["window_start_ms"], m["observation_domain_id"]) for m in decoded} == (
        set(ref)
    )
    for m in decoded:
        want = ref[(m["exporter"], m["window_start_ms"], m["observation_domain_id"])]
        assert [m[c] for c in COUNTERS] == want
    assert st_["win"] == {}


@pytest.mark.parametrize("value", [b"{", b"[1]", b'{"src": "x"}', b'{"src":"a:0","off":1,"win":3}'])
def test_bad_exporter_partials_raise(value: bytes) -> None:
    with pytest.raises(PartialError):
        ExporterStates(CFG).handle("192.0.2.1", None, value)


def _message(**change: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "schema": "traffic.v1",
        "window_start_ms": T0,
        "window_s": 60,
        "exporter": "192.0.2.1",
        "observation_domain_id": 0,
        **dict.fromkeys(COUNTERS, 3),
        "produced_ms": T0 + 90_000,
    }
    msg.update(change)
    return {k: v for k, v in msg.items() if v is not None}


def test_traffic_messages_round_trip_and_land_in_one_row() -> None:
    msg = _message(bytes_est=2**63, voip_flows=0)
    assert decode_traffic(encode_traffic(msg)) == msg
    cols, n = parse_traffic(encode_traffic(msg))
    assert n == 1
    assert cols["exporter"][0] == fb.text_to_addr16("192.0.2.1")
    assert int(cols["bytes_est"][0]) == 2**63
    assert cols["window_start"][0] == np.datetime64(T0 // 1000, "s")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"schema": "traffic.v2"}, TrafficVersionError),
        ({"flows": None}, TrafficError),
        ({"flows": -1}, TrafficError),
        ({"flows": 1.0}, TrafficError),
        ({"exporter": ""}, TrafficError),
        ({"observation_domain_id": 2**32}, TrafficError),
        ({"extra": 1}, TrafficError),
    ],
)
def test_invalid_traffic_messages_are_refused(change: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        validate_traffic(_message(**change))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{", "bad_json"),
        (json.dumps(_message(schema="voip-usage.v1")).encode(), "wrong_schema"),
        (json.dumps(_message(exporter="nonsense")).encode(), "bad_value"),
        (json.dumps(_message(flows=None)).encode(), "missing_field"),
        (json.dumps(_message(flows=-5)).encode(), "bad_value"),
        (json.dumps(_message(bytes=2**64)).encode(), "bad_value"),
        (json.dumps(_message(extra=1)).encode(), "bad_value"),
    ],
)
def test_sink_refuses_bad_traffic_messages(value: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as info:
        parse_traffic(value)
    assert info.value.reason == reason
