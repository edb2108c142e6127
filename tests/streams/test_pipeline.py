"""The agents' plain core: one flows.v1 message in, per-city outputs; bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from tests.fixtures.paths import REPO
from voipflow.schemas import flowbatch as fb
from voipflow.schemas import voipflows as vf
from voipflow.schemas.usage import decode_usage
from voipflow.streams.aggregate import encode_state, new_state
from voipflow.streams.config import WorkerConfig
from voipflow.streams.pipeline import (
    VOIP_FLOWS_MAX_ROWS,
    CityStates,
    FlowPipeline,
    PartialError,
    bundle_by_partition,
    decode_bundle,
    encode_bundle,
)

CFG = WorkerConfig(
    prefix_table=REPO / "data" / "cities" / "demo-cities.csv",
    home_networks="10.0.0.0/8,2001:db8::/32",
    window_s=60,
    lateness_s=30,
    idle_close_s=100,
)
T0 = 1_700_000_040_000  # a window start


def message(n_voip: int = 3) -> bytes:
    rows = n_voip + 2
    src = ["10.1.0.5"] * n_voip + ["10.4.0.7", "8.8.8.8"]
    dst = ["157.240.1.1"] * n_voip + ["93.184.216.34", "10.4.0.7"]
    return fb.encode(
        fb.make_batch(
            {
                "src_addr": np.array([fb.text_to_addr16(a) for a in src], dtype="S16"),
                "dst_addr": np.array([fb.text_to_addr16(a) for a in dst], dtype="S16"),
                "src_port": [40000 + i for i in range(rows)],
                "dst_port": [3478] * n_voip + [443, 443],
                "protocol": [17] * n_voip + [6, 6],
                "packets": [10] * rows,
                "bytes": [1000] * rows,
                "flow_start_ms": [T0] * rows,
                "flow_end_ms": [T0 + 5000] * rows,
                "sampling_rate": [10] * rows,
                "application_name": pa.array([""] * rows),
            }
        )
    )


def test_one_batch_gives_voip_flows_and_partials_per_city() -> None:
    pipe = FlowPipeline(CFG)
    pipe.start()
    out = pipe.process(message(), "flows.v1:0", 12)
    assert out.records == 5 and out.voip_records == 3
    sample = pipe.metrics.registry.get_sample_value
    assert sample("voipflow_worker_voip_records_total", {"app": "whatsapp"}) == 3
    assert sample("voipflow_worker_voip_records_total", {"app": "zoom"}) is None
    assert [city for city, _ in out.voip_flows] == ["Berlin"]
    vb = vf.decode(out.voip_flows[0][1])
    assert len(vb) == 3
    assert vb["app"].to_pylist() == ["whatsapp"] * 3
    assert vb["city"].to_pylist() == ["Berlin"] * 3
    assert list(vb["direction"]) == [0, 0, 0]
    assert fb.addr_to_text(vb["subscriber_addr"][0]) == "10.1.0.5"
    assert set(out.partials) == {"Berlin", "Paris"}
    part = json.loads(out.partials["Berlin"])
    assert (part["src"], part["off"]) == ("flows.v1:0", 12)
    wa = part["win"][str(T0)]["whatsapp"]
    assert wa[:3] == [3, 300, 30000]  # sampling corrected


def test_a_city_with_more_voip_flows_than_a_message_holds_gets_several() -> None:
    pipe = FlowPipeline(CFG)
    pipe.start()
    n_voip = 2 * VOIP_FLOWS_MAX_ROWS + 7
    out = pipe.process(message(n_voip), "flows.v1:0", 1)
    assert [city for city, _ in out.voip_flows] == ["Berlin"] * 3
    sizes = [len(vf.decode(data)) for _, data in out.voip_flows]
    assert sizes == [VOIP_FLOWS_MAX_ROWS, VOIP_FLOWS_MAX_ROWS, 7]
    ports = np.concatenate([vf.decode(data)["subscriber_port"] for _, data in out.voip_flows])
    assert sorted(ports.tolist()) == [40000 + i for i in range(n_voip)]


def test_each_citys_message_holds_its_own_rows_only() -> None:
    # The voip-flows rows of a batch are built once and sliced by city: a
    # slice must carry its own rows, with its own geography, and no more.
    pipe = FlowPipeline(CFG, arrow_compression="lz4")
    pipe.start()
    n = 3 * VOIP_FLOWS_MAX_ROWS // 2
    berlin_every = 30  # one Berlin row in 30, the rest Paris, interleaved
    subscriber = ["10.1.0.5" if i % berlin_every == 0 else "10.4.0.7" for i in range(n)]
    value = fb.encode(
        fb.make_batch(
            {
                "src_addr": np.array([fb.text_to_addr16(a) for a in subscriber], dtype="S16"),
                "dst_addr": np.array([fb.text_to_addr16("157.240.1.1")] * n, dtype="S16"),
                "src_port": [20000 + i for i in range(n)],
                "dst_port": [3478] * n,
                "protocol": [17] * n,
                "packets": [10] * n,
                "bytes": [1000] * n,
                "flow_start_ms": [T0] * n,
                "flow_end_ms": [T0 + 5000] * n,
            }
        )
    )
    out = pipe.process(value, "flows.v1:0", 3)
    assert [city for city, _ in out.voip_flows] == ["Berlin", "Paris", "Paris"]
    decoded = [(city, vf.decode(data)) for city, data in out.voip_flows]
    for city, vb in decoded:
        assert set(vb["city"].to_pylist()) == {city}
        assert set(vb["country"].to_pylist()) == {"DE" if city == "Berlin" else "FR"}
        want = "10.1.0.5" if city == "Berlin" else "10.4.0.7"
        assert {fb.addr_to_text(a) for a in vb["subscriber_addr"]} == {want}
        ports = vb["subscriber_port"]
        assert all((p - 20000) % berlin_every == 0 for p in ports) == (city == "Berlin")
    assert [len(vb) for _, vb in decoded] == [
        len(range(0, n, berlin_every)),
        VOIP_FLOWS_MAX_ROWS,
        n - len(range(0, n, berlin_every)) - VOIP_FLOWS_MAX_ROWS,
    ]
    # The small city's message is written from its slice, not the whole batch.
    assert len(out.voip_flows[0][1]) < len(out.voip_flows[1][1]) / 5


@pytest.mark.parametrize(
    "value",
    [b"", b"garbage", message()[:50], fb.encode(fb.make_batch({"packets": [1]}))[:-9]],
)
def test_bad_messages_raise_batch_errors(value: bytes) -> None:
    pipe = FlowPipeline(CFG)
    pipe.start()
    with pytest.raises(fb.BatchError):
        pipe.process(value, "flows.v1:0", 1)


def test_voip_flows_batch_is_refused_on_the_flows_topic() -> None:
    pipe = FlowPipeline(CFG)
    pipe.start()
    with pytest.raises(fb.BatchVersionError):
        pipe.process(vf.encode(vf.make_voip_batch({"packets": [1]})), "flows.v1:0", 1)


def test_city_states_publish_closed_windows_once_and_skip_replays() -> None:
    pipe = FlowPipeline(CFG)
    pipe.start()
    states = CityStates(CFG)
    first = pipe.process(message(), "flows.v1:0", 1).partials["Berlin"]
    st, out, outcome = states.handle("Berlin", None, first, now_ms=T0)
    assert (outcome, out) == ("applied", [])
    st, out, outcome = states.handle("Berlin", st, first, now_ms=T0)
    assert outcome == "duplicate"
    # A later batch moves event time past the window and its lateness allowance.
    later = json.loads(first)
    later["off"], later["max_ms"] = 2, T0 + 60_000 + 30_000 + 5000
    later["win"] = {str(T0 + 60_000 + 30_000): later["win"][str(T0)]}
    st, out, outcome = states.handle("Berlin", st, json.dumps(later).encode(), now_ms=T0)
    assert outcome == "applied"
    assert [k for k, _ in out] == [f"Berlin|whatsapp|{T0}"]
    msg = decode_usage(out[0][1])
    assert (msg["flows"], msg["packets"], msg["bytes"], msg["subscribers"]) == (3, 300, 30000, 1)
    assert msg["voip_share"] == 1.0
    _, again, _ = states.handle("Berlin", st, json.dumps(later).encode(), now_ms=T0)
    assert again == []


def _partial_at(first: bytes, src: str, off: int, window_ms: int, max_ms: int) -> bytes:
    part = json.loads(first)
    part["src"], part["off"], part["max_ms"] = src, off, max_ms
    part["win"] = {str(window_ms): part["win"][str(T0)]}
    return json.dumps(part).encode()


def test_windows_wait_for_a_stalled_source_partition_until_it_is_idle() -> None:
    # Berlin's records come from two flows.v1 partitions. Partition 1 stalls
    # (its worker was killed) while partition 0 runs minutes ahead; when
    # partition 1 is replayed, its records must still find the window open.
    pipe = FlowPipeline(CFG)
    pipe.start()
    states = CityStates(CFG)
    first = pipe.process(message(), "flows.v1:0", 1).partials["Berlin"]
    idle_ms = int(CFG.source_idle_s * 1000)
    now = 1_000_000
    st, out, _ = states.handle(
        "Berlin", None, _partial_at(first, "flows.v1:0", 1, T0, T0 + 5000), now
    )
    st, out, _ = states.handle(
        "Berlin", st, _partial_at(first, "flows.v1:1", 1, T0, T0 + 5000), now
    )
    far = T0 + 5 * 60_000
    st, out, _ = states.handle(
        "Berlin", st, _partial_at(first, "flows.v1:0", 2, far, far), now + 1000
    )
    assert out == []  # partition 1 was heard within source_idle_s: it holds the window
    replayed = _partial_at(first, "flows.v1:1", 2, T0, T0 + 6000)
    st, out, outcome = states.handle("Berlin", st, replayed, now + idle_ms - 1000)
    assert (outcome, st["late"]) == ("applied", 0)
    assert out == []  # partition 1 is still behind
    # Partition 1 falls silent: after source_idle_s it no longer holds the window.
    st, out, _ = states.handle(
        "Berlin", st, _partial_at(first, "flows.v1:0", 3, far, far), now + 2 * idle_ms
    )
    (usage,) = [decode_usage(v) for k, v in out if k == f"Berlin|whatsapp|{T0}"]
    assert usage["flows"] == 3 * 3  # both partitions' first partials and the replayed one
    late = _partial_at(first, "flows.v1:1", 3, T0, T0 + 7000)
    st, _, outcome = states.handle("Berlin", st, late, now + 2 * idle_ms + 1)
    assert (outcome, st["late"]) == ("applied", 3)  # now it is late, and counted


def test_idle_tick_closes_the_last_windows() -> None:
    pipe = FlowPipeline(CFG)
    pipe.start()
    states = CityStates(CFG)
    part = pipe.process(message(), "flows.v1:0", 1).partials["Berlin"]
    st, _, _ = states.handle("Berlin", new_state(), part, now_ms=1000)
    tick = json.dumps({"tick": 0}).encode()
    _, out, _ = states.handle("Berlin", st, tick, now_ms=1000 + 50_000)  # not idle long enough
    assert out == []
    # Idle for idle_close_s (100 s): event time follows the wall clock from
    # then on, from the newest flow end (T0 + 5 s); the window (T0 .. T0 +
    # 60 s) closes once it is past its end plus the lateness (30 s).
    idle_close_ms = 100_000
    _, out, _ = states.handle("Berlin", st, tick, now_ms=1000 + idle_close_ms + 84_999)
    assert out == []  # a stalled input still finds the window open
    _, out, _ = states.handle("Berlin", st, tick, now_ms=1000 + idle_close_ms + 85_000)
    assert [k for k, _ in out] == [f"Berlin|whatsapp|{T0}"]


def test_a_stalled_source_holds_the_windows_past_its_idle_time_and_the_idle_close() -> None:
    # Berlin hears only from flows.v1:1, whose worker died: its records wait
    # in Kafka while the group reassigns it, for longer than source_idle_s and
    # idle_close_s. While the stall watch names it, neither the slower
    # partition's silence nor the idle ticks close the window.
    stalled: set[str] = {"flows.v1:1"}
    pipe = FlowPipeline(CFG)
    pipe.start()
    states = CityStates(CFG, stalled=lambda: frozenset(stalled))
    first = pipe.process(message(), "flows.v1:0", 1).partials["Berlin"]
    now = 1_000_000
    st, _, _ = states.handle(
        "Berlin", None, _partial_at(first, "flows.v1:1", 1, T0, T0 + 5000), now
    )
    far = T0 + 5 * 60_000
    much_later = now + 10 * int(max(CFG.source_idle_s, CFG.idle_close_s) * 1000)
    tick = json.dumps({"tick": 0}).encode()
    st, out, _ = states.handle("Berlin", st, tick, much_later)
    assert out == []  # the tick: idle far beyond idle_close_s, but its source is stalled
    st, out, _ = states.handle(
        "Berlin", st, _partial_at(first, "flows.v1:0", 2, far, far), much_later
    )
    assert out == []  # flows.v1:1 not heard for ages, but stalled: still holds
    replayed = _partial_at(first, "flows.v1:1", 2, T0, T0 + 6000)
    st, out, outcome = states.handle("Berlin", st, replayed, much_later + 1000)
    assert (outcome, st["late"], out) == ("applied", 0, [])
    # It moves again and catches up; once silent past source_idle_s, it
    # no longer holds the window.
    stalled.clear()
    st, out, _ = states.handle(
        "Berlin", st, _partial_at(first, "flows.v1:0", 3, far, far), much_later + 1000
    )
    assert out == []  # flows.v1:1 was heard just now
    st, out, _ = states.handle(
        "Berlin",
        st,
        _partial_at(first, "flows.v1:0", 4, far, far),
        much_later + 1000 + int(CFG.source_idle_s * 1000),
    )
    (usage,) = [decode_usage(v) for k, v in out if k == f"Berlin|whatsapp|{T0}"]
    assert usage["flows"] == 2 * 3


def test_without_a_stall_the_same_silence_closes_the_window() -> None:
    # The counterpart of the test above: nothing is stalled, so the idle tick
    # closes the window and the replayed records are late (and counted).
    pipe = FlowPipeline(CFG)
    pipe.start()
    states = CityStates(CFG)
    first = pipe.process(message(), "flows.v1:0", 1).partials["Berlin"]
    now = 1_000_000
    st, _, _ = states.handle(
        "Berlin", None, _partial_at(first, "flows.v1:1", 1, T0, T0 + 5000), now
    )
    much_later = now + 10 * int(max(CFG.source_idle_s, CFG.idle_close_s) * 1000)
    st, out, _ = states.handle("Berlin", st, json.dumps({"tick": 0}).encode(), much_later)
    assert [k for k, _ in out] == [f"Berlin|whatsapp|{T0}"]
    replayed = _partial_at(first, "flows.v1:1", 2, T0, T0 + 6000)
    st, _, _ = states.handle("Berlin", st, replayed, much_later + 1000)
    assert st["late"] == 3


@pytest.mark.parametrize("value", [b"{", b"[1]", b'{"src": "x"}'])
def test_bad_partials_raise(value: bytes) -> None:
    with pytest.raises(PartialError):
        CityStates(CFG).handle("Berlin", None, value)


def test_a_bundle_carries_each_keys_partial_and_applies_as_the_partial_alone() -> None:
    pipe = FlowPipeline(CFG)
    pipe.start()
    out = pipe.process(message(), "flows.v1:0", 1)
    parts = {**out.partials, **{"\x00" + e: d for e, d in out.traffic.items()}}
    assert len(parts) == 3  # Berlin, the city of 10.4.0.7, the exporter
    # Keys go to the partition the partitioner names, in key order within it.
    bundles = bundle_by_partition(parts, lambda key: len(key) % 2)
    assert sorted(bundles) == sorted({len(k) % 2 for k in parts})
    got = {}
    for partition, value in bundles.items():
        items = decode_bundle(value)
        assert [k for k, _ in items] == sorted(k for k in parts if len(k) % 2 == partition)
        got.update(items)
    assert got == {k: json.loads(v) for k, v in parts.items()}
    # A part applies exactly as the same partial sent alone.
    alone = CityStates(CFG).handle("Berlin", None, parts["Berlin"], now_ms=T0)
    bundled = CityStates(CFG).handle_message("Berlin", None, got["Berlin"], now_ms=T0)
    assert encode_state(alone[0]) == encode_state(bundled[0])
    assert alone[1:] == bundled[1:] == ([], "applied")
    assert decode_bundle(encode_bundle([])) == []


@pytest.mark.parametrize(
    "value",
    [
        b"{",
        b"[1]",
        b'{"tick": 1}',
        b'{"bundle": {"Berlin": {}}}',
        b'{"bundle": [["Berlin"]]}',
        b'{"bundle": [["", {}]]}',
        b'{"bundle": [["Berlin", [1]]]}',
        b'{"bundle": [["Berlin", {}], 7]}',
    ],
)
def test_bad_bundles_raise_before_any_part_is_used(value: bytes) -> None:
    with pytest.raises(PartialError, match="not a bundle"):
        decode_bundle(value)


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_voip_flows_compressed_in_arrow_decode_to_the_same_rows(codec: str) -> None:
    plain, packed = FlowPipeline(CFG), FlowPipeline(CFG, arrow_compression=codec)
    plain.start()
    packed.start()
    a = plain.process(message(40), "flows.v1:0", 1).voip_flows
    b = packed.process(message(40), "flows.v1:0", 1).voip_flows
    assert [c for c, _ in a] == [c for c, _ in b] == ["Berlin"]
    assert b[0][1] != a[0][1]  # really compressed, not the plain stream
    assert vf.decode(b[0][1]).to_arrow().equals(vf.decode(a[0][1]).to_arrow())


def test_arrow_compression_of_gzip_is_refused_naming_the_settings() -> None:
    from voipflow.schemas.topics import KafkaConfig
    from voipflow.streams.app import WorkerSettingError, compression_codecs

    assert compression_codecs(KafkaConfig(compression="lz4"), CFG) == (None, "lz4")
    assert compression_codecs(KafkaConfig(compression="none"), CFG) == (None, None)
    kafka_layer = CFG.model_copy(update={"compression_layer": "kafka"})
    assert compression_codecs(KafkaConfig(compression="gzip"), kafka_layer) == ("gzip", None)
    with pytest.raises(WorkerSettingError, match="VOIPFLOW_WORKER_COMPRESSION_LAYER"):
        compression_codecs(KafkaConfig(compression="gzip"), CFG)
