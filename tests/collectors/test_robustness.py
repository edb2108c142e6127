"""Robustness: malformed and hostile input only ever yields counted DecodeErrors.

Property tests (hypothesis) mutate real export packets from the fixtures
(truncation, byte flips, length fields, splices) and craft hostile templates
(huge field counts, zero-length records, template ids reused with other
layouts, zero-length sets). The decoder must return, count every problem
under a documented reason, never raise, and never report an internal error;
its bulk path, with the compiled core and with numpy, must do exactly what
decoding packet by packet does.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.collectors.compare import assert_same
from voipflow.collectors.codec.decoder import REASONS, Decoder, DecoderConfig
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.collectors.pcapfile import iter_udp
from voipflow.schemas.flowbatch import FLOW_COLUMNS, text_to_addr16

DATA = Path(__file__).parent / "data"
EXP = text_to_addr16("198.51.100.1")
REAL = [d.payload for p in sorted(DATA.glob("*.pcap")) for d in iter_udp(p.read_bytes())]
DOCUMENTED = set(REASONS)


def run(dgs: list[bytes], config: DecoderConfig | None = None) -> None:
    cfg = config or DecoderConfig()
    feed = [(d, EXP, 1_700_000_000_000 + i) for i, d in enumerate(dgs)]
    res = Decoder(TemplateCache(), replace(cfg, bulk_min_datagrams=1)).decode(feed)
    # The bulk path must take the same bad input the same way as one by one,
    # with the compiled core (the default when built) and with numpy.
    assert_same(Decoder(TemplateCache(), replace(cfg, bulk_min_datagrams=0)).decode(feed), res)
    pure = replace(cfg, bulk_min_datagrams=1, compiled_core=False)
    assert_same(Decoder(TemplateCache(), pure).decode(feed), res)
    for s in res.stats.values():
        assert set(s.errors) <= DOCUMENTED, s.errors
        assert "internal" not in s.errors, res.errors
    assert list(res.batch.columns) == list(FLOW_COLUMNS)
    assert all(len(c) == len(res.batch) for c in res.batch.columns.values())
    res.batch.to_arrow()  # the batch is a valid flows.v1 batch


real_packet = st.sampled_from(REAL)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(real_packet, st.integers(0, 2000))
@pytest.mark.slow
def test_truncated(pkt: bytes, cut: int) -> None:
    run([pkt, pkt[: cut % (len(pkt) + 1)]])


@settings(max_examples=400, deadline=None)
@given(real_packet, st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8))
@pytest.mark.slow
def test_mutated_bytes(pkt: bytes, flips: list[tuple[int, int]]) -> None:
    b = bytearray(pkt)
    for pos, val in flips:
        b[pos % len(b)] = val
    run([pkt, bytes(b)])


@settings(max_examples=300, deadline=None)
@given(real_packet, st.integers(0, 60), st.integers(0, 0xFFFF))
@pytest.mark.slow
def test_wrong_length_fields(pkt: bytes, at: int, value: int) -> None:
    b = bytearray(pkt)
    pos = (at * 2) % max(len(b) - 1, 1)
    struct.pack_into(">H", b, pos, value)
    run([bytes(b)])


@settings(max_examples=200, deadline=None)
@given(st.lists(real_packet, min_size=1, max_size=6))
@pytest.mark.slow
def test_spliced_and_reversed(pkts: list[bytes]) -> None:
    cut = [p[: len(p) // 2] + q[len(q) // 2 :] for p, q in itertools.pairwise(pkts)]
    run(pkts[::-1] + cut)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
@pytest.mark.slow
def test_random_bytes(data: bytes) -> None:
    run([data, b"\x00\x0a" + data, b"\x00\x09" + data, b"\x00\x05" + data])


def _ipfix(sets: bytes, seq: int = 0, domain: int = 1) -> bytes:
    return struct.pack(">HHIII", 10, 16 + len(sets), 1_700_000_000, seq, domain) + sets


def _set(set_id: int, body: bytes) -> bytes:
    return struct.pack(">HH", set_id, 4 + len(body)) + body


def test_huge_field_count_refused() -> None:
    body = struct.pack(">HH", 300, 60000) + b"\x00\x08\x00\x04" * 100
    dec = Decoder(TemplateCache())
    res = dec.decode([(_ipfix(_set(2, body)), EXP, 1)])
    assert res.stats[(EXP, 1)].errors == {"too_many_fields": 1}


def test_zero_length_records_refused_without_loop() -> None:
    tmpl = _set(2, struct.pack(">HH", 300, 1) + struct.pack(">HH", 8, 0))
    data = _set(300, b"\x00" * 64)
    res = Decoder(TemplateCache()).decode([(_ipfix(tmpl + data), EXP, 1)])
    st_ = res.stats[(EXP, 1)]
    assert st_.records == 0 and st_.decode_errors >= 1


def test_zero_length_set_is_bad_length() -> None:
    res = Decoder(TemplateCache()).decode([(_ipfix(struct.pack(">HH", 300, 0)), EXP, 1)])
    assert res.stats[(EXP, 1)].errors == {"bad_length": 1}


def test_template_redefined_mid_stream() -> None:
    t1 = _set(2, struct.pack(">HH", 300, 2) + struct.pack(">HHHH", 8, 4, 2, 4))
    t2 = _set(2, struct.pack(">HH", 300, 2) + struct.pack(">HHHH", 2, 8, 8, 4))
    d1 = _set(300, struct.pack(">II", 0x0A000001, 7) * 3)
    d2 = _set(300, struct.pack(">QI", 9, 0x0A000002) * 2)
    res = Decoder(TemplateCache()).decode(
        [(_ipfix(t1 + d1, 0), EXP, 1), (_ipfix(t2 + d2, 3), EXP, 2)]
    )
    assert sorted(res.batch["packets"].tolist()) == [7, 7, 7, 9, 9]
    assert res.stats[(EXP, 1)].sequence_lost == 0


def test_withdrawal_then_data_is_held() -> None:
    t1 = _set(2, struct.pack(">HH", 300, 1) + struct.pack(">HH", 2, 4))
    wd = _set(2, struct.pack(">HH", 300, 0))
    d = _set(300, struct.pack(">I", 5))
    res = Decoder(TemplateCache()).decode(
        [(_ipfix(t1 + d), EXP, 1), (_ipfix(wd), EXP, 2), (_ipfix(d, 1), EXP, 3)]
    )
    s = res.stats[(EXP, 1)]
    assert s.templates_withdrawn == 1 and s.held_sets == 1 and len(res.batch) == 1


def test_variable_length_and_enterprise_fields() -> None:
    # sourceIPv4Address, applicationName (varlen), an unknown enterprise element,
    # applicationId (4 bytes), ntop L7 protocol.
    fields = struct.pack(">HH", 8, 4) + struct.pack(">HH", 96, 0xFFFF)
    fields += struct.pack(">HHI", 0x8000 | 77, 2, 9999) + struct.pack(">HH", 95, 4)
    fields += struct.pack(">HHI", 0x8000 | 118, 2, 35632)
    tmpl = _set(2, struct.pack(">HH", 400, 5) + fields)
    rec1 = (
        struct.pack(">I", 0x0A000001)
        + b"\x04sip!"
        + b"\xab\xcd"
        + b"\x0d\x00\x00\x05"
        + b"\x00\x07"
    )
    rec2 = struct.pack(">I", 0x0A000002) + b"\xff\x00\x03rtp" + b"\x01\x02" + b"\x03\x00\x01\x00"
    rec2 += b"\x00\x08"
    res = Decoder(TemplateCache()).decode([(_ipfix(tmpl + _set(400, rec1 + rec2 + b"\0")), EXP, 1)])
    b = res.batch
    assert len(b) == 2 and not res.errors
    assert b["application_name"].to_pylist() == ["sip!", "rtp"]
    assert b["application_id"].tolist() == [(13 << 56) | 5, (3 << 56) | 256]
    assert b["l7_proto"].tolist() == [7, 8]
    assert b.extras["ie_9999_77"].to_pylist() == [b"\xab\xcd", b"\x01\x02"]


def test_options_sampler_per_selector_and_app_names() -> None:
    # options template: scope selectorId(302) + samplingPacketInterval/Space;
    # second options template: applicationId + applicationName
    opt = struct.pack(">HHH", 500, 3, 1) + struct.pack(">HHHHHH", 302, 2, 305, 4, 306, 4)
    opt2 = struct.pack(">HHH", 501, 2, 1) + struct.pack(">HHHH", 95, 4, 96, 0xFFFF)
    flow = struct.pack(">HH", 600, 3) + struct.pack(">HHHHHH", 8, 4, 302, 2, 95, 4)
    sets = _set(3, opt + opt2) + _set(2, flow)
    sets += _set(500, struct.pack(">HII", 1, 1, 99) + struct.pack(">HII", 2, 1, 9))
    sets += _set(501, b"\x0d\x00\x00\x05\x04sip!")
    recs = struct.pack(">IH", 1, 1) + b"\x0d\x00\x00\x05" + struct.pack(">IH", 2, 2) + b"\0" * 4
    sets += _set(600, recs)
    res = Decoder(TemplateCache()).decode([(_ipfix(sets), EXP, 1)])
    assert res.batch["sampling_rate"].tolist() == [100, 10]
    assert res.batch["application_name"].to_pylist() == ["sip!", ""]
