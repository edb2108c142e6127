"""The decoder's bulk path gives exactly what decoding packet by packet gives.

``DecoderConfig(bulk_min_datagrams=0)`` decodes every datagram on its own
(the reference); ``bulk_min_datagrams=1`` sends every call through the bulk
path (``collectors.codec.bulk``), once with the compiled core
(``collectors.codec.core``, when built) and once with numpy. All must return
the same batch (same rows in the same order), the same statistics and
errors, and leave the same state (templates, held data, sequence trackers)
for the next call. The streams mix
what makes the bulk path fall back or cut its runs: templates and options
in between data, data before its template, a template id reused with
another layout, several exporters and domains, v9 and IPFIX from one
exporter, loss, reordering and duplicates, and the fixtures of real exporters.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.collectors.compare import assert_same
from tests.collectors.flows import BOOT, T0, random_flows
from voipflow.collectors.codec import core
from voipflow.collectors.codec.decoder import Datagram, Decoder, DecoderConfig, DecodeResult
from voipflow.collectors.codec.encoder import make_encoder
from voipflow.collectors.codec.frame import Frame
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.collectors.pcapfile import iter_udp
from voipflow.schemas.flowbatch import text_to_addr16

DATA = Path(__file__).parent / "data"
EXPORTERS = [text_to_addr16(a) for a in ("192.0.2.1", "192.0.2.2", "2001:db8::7")]


def _state(dec: Decoder) -> tuple[Any, ...]:
    cache = dec.templates
    keys = cache.keys()
    templates = sorted(
        (k, t.fields, t.scope_count, t.received_ms) for k in keys if (t := cache.get(k)) is not None
    )
    seq = sorted(
        (k, t.prev_seq, t.prev_units, t.boot_ms, tuple(t.modes)) for k, t in dec._seq.items()
    )
    return templates, seq, dec.held_sets, dec.held_bytes


def both_ways(calls: list[list[Datagram]]) -> list[DecodeResult]:
    """Decode ``calls`` one by one and in bulk (compiled core and numpy);
    assert equality; the bulk results (of the compiled core when built)."""
    one = Decoder(TemplateCache(), DecoderConfig(bulk_min_datagrams=0))
    many = Decoder(TemplateCache(), DecoderConfig(bulk_min_datagrams=1))
    pure = Decoder(TemplateCache(), DecoderConfig(bulk_min_datagrams=1, compiled_core=False))
    out = []
    for datagrams in calls:
        a, b, c = one.decode(datagrams), many.decode(datagrams), pure.decode(datagrams)
        assert_same(a, b)
        assert_same(a, c)
        assert _state(one) == _state(many) == _state(pure)
        out.append(b)
    return out


def split(datagrams: list[Datagram], size: int) -> list[list[Datagram]]:
    return [datagrams[i : i + size] for i in range(0, len(datagrams), size)]


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("*.pcap")))
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_fixtures(name: str, size: int) -> None:
    payloads = [d.payload for d in iter_udp((DATA / f"{name}.pcap").read_bytes())]
    dgs = [(p, EXPORTERS[0], T0 + i) for i, p in enumerate(payloads)]
    results = both_ways(split(dgs, size))
    assert sum(r.batch.num_rows for r in results) > 0


def _stream(
    version: int,
    n: int,
    seed: int,
    sampling: int,
    refresh: int,
    domain: int,
    base: int = 256,
    small: bool = False,
) -> list[bytes]:
    enc = make_encoder(
        version,
        boot_time_ms=BOOT,
        sampling_rate=sampling,
        template_refresh_packets=refresh,
        observation_domain_id=domain,
        template_id_base=base,
    )
    cols = random_flows(n, seed, v6_share=0.5)
    out: list[bytes] = []
    for r, lo in enumerate(range(0, n, 300)):
        part = {k: v[lo : lo + 300] for k, v in cols.items()}
        if small:  # softflowd's shape: several small data sets per datagram
            out += enc.encode_small_sets(part, T0 + 1000 * r, 1 + r % 3, 7)  # type: ignore[attr-defined]
        else:
            out += enc.encode(part, T0 + 1000 * r)
    return out


class CountingDecoder(Decoder):
    """A decoder that counts the datagrams it decodes one by one."""

    one_by_one = 0

    def decode_one(self, *args: Any, **kwargs: Any) -> None:
        self.one_by_one += 1
        super().decode_one(*args, **kwargs)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("version", [9, 10])
def test_small_sets_go_through_the_bulk_path(version: int, compiled: bool) -> None:
    """Several small data sets per datagram (softflowd): decoded in bulk the
    same way as one by one; with numpy, the datagrams carrying templates are
    decoded one by one, with the compiled core none are."""
    if compiled and not core.AVAILABLE:
        pytest.skip(core.BUILD_HINT)
    payloads = _stream(version, 2000, 3, 1, 16, 1, small=True)
    dgs = [(d, EXPORTERS[0], T0) for d in payloads]
    res = both_ways(split(dgs, 256))
    assert sum(r.batch.num_rows for r in res) == 2000
    config = DecoderConfig(bulk_min_datagrams=1, compiled_core=compiled)
    dec = CountingDecoder(TemplateCache(), config)
    for call in split(dgs, 256):
        dec.decode(call)
    first_set = [struct.unpack_from(">H", d, 16 if version == 10 else 20)[0] for d in payloads]
    with_templates = sum(1 for s in first_set if s < 256)
    assert 0 < with_templates < len(payloads) // 10
    assert dec.one_by_one == (0 if compiled else with_templates)


def test_odd_multi_set_datagrams_are_decoded_one_by_one_the_same() -> None:
    """Data sets of two templates in one datagram, stray bytes after the
    last set, a set running past the end, an empty set: not plain, so
    decoded one by one with their errors, and the rest in bulk the same."""
    tmpl = _set(2, struct.pack(">HHHH", 300, 1, 8, 4) + struct.pack(">HHHH", 301, 1, 12, 4))
    a, b = _set(300, b"\x0a\0\0\x01" * 2), _set(301, b"\x0a\0\0\x02")
    bodies = [tmpl, a + a + a, a + b, a + a + b"\0\0", a + a[:6] + b"\0\0\0\0", a + _set(300, b"")]
    bodies += [b + b, a]
    dgs = [(_ipfix(body, 0), EXPORTERS[0], T0 + i) for i, body in enumerate(bodies)]
    res = both_ways([dgs])[0]
    assert res.batch.num_rows > 0 and res.errors


def test_templates_in_front_of_data_sets_are_applied_in_place() -> None:
    """Packets with template sets in front of their data sets (bulk with the
    compiled core): a template id redefined with another layout in front of
    its data, a withdrawal in front of data that must then be held, an
    options template in front of options data, a variable-length template,
    a malformed template record in front of good data: the same as one by
    one and as numpy, errors and held data included."""
    t300 = _set(2, struct.pack(">HHHH", 300, 1, 8, 4))
    t300_wide = _set(2, struct.pack(">HHHHHH", 300, 2, 8, 4, 7, 2))
    withdraw = _set(2, struct.pack(">HH", 300, 0))
    opt = _set(3, struct.pack(">HHH", 400, 2, 1) + struct.pack(">HHHH", 149, 4, 34, 4))
    var = _set(2, struct.pack(">HHHHHH", 310, 2, 8, 4, 96, 0xFFFF))
    bad = _set(2, struct.pack(">HHHH", 320, 3, 8, 4))  # says 3 fields, has 1: truncated
    a = _set(300, b"\x0a\0\0\x01" * 2)
    wide = _set(300, b"\x0a\0\0\x02\x13\xc4" * 2)
    bodies = [
        t300 + a + a, a, a + a,
        t300_wide + wide + wide, wide, t300 + a,
        withdraw + a, a, t300 + a,
        opt + _set(400, struct.pack(">II", 1, 100)), a,
        var + _set(310, b"\x0a\0\0\x03\x03abc") + _set(310, b"\x0a\0\0\x04\x00"), a,
        bad + a + a, a,
    ]  # fmt: skip
    dgs = [(_ipfix(body, 0), EXPORTERS[0], T0 + i) for i, body in enumerate(bodies)]
    if core.AVAILABLE:  # these are the packets the core walks as templated
        heads = core.walk(*_frame_args([d for d, _, _ in dgs]))[0]
        assert (heads[:, core.H_KIND] == core.K_TEMPLATED).sum() == 8
    for size in (len(dgs), 4):
        res = both_ways(split(dgs, size))
        assert sum(r.batch.num_rows for r in res) > 0
        assert {x.reason for r in res for _, x in r.errors} == {"truncated"}
        assert sum(s.held_released for r in res for s in r.stats.values()) == 4


def test_repeated_template_sets_are_settled_before_the_bulk_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refresh that repeats what its domain announced last only moves the
    templates' time: such packets go with the plain ones (no template set
    decoded again), a refresh that announces something new still takes its
    place, and a repeat after it is one again; the same as one by one."""
    t300 = _set(2, struct.pack(">HHHH", 300, 1, 8, 4))
    t300_wide = _set(2, struct.pack(">HHHHHH", 300, 2, 8, 4, 7, 2))
    a = _set(300, b"\x0a\0\0\x01" * 2)
    wide = _set(300, b"\x0a\0\0\x02\x13\xc4" * 2)

    def call(bodies: list[bytes], t: int) -> list[Datagram]:
        return [(_ipfix(b, 0), EXPORTERS[0], t + i) for i, b in enumerate(bodies)]

    first = call([t300 + a, a, a], T0)
    repeats = call([t300 + a, a, t300 + a, a], T0 + 100)
    change = call([t300 + a, t300_wide + wide, wide, t300_wide + wide, t300 + a, a], T0 + 200)
    res = both_ways([first, repeats, change])
    assert [r.batch.num_rows for r in res] == [6, 8, 12]

    dec = Decoder(TemplateCache(), DecoderConfig(bulk_min_datagrams=1))
    dec.decode(first)
    decoded: list[int] = []
    real = dec.decode_template_sets

    def counted(*args: Any, **kwargs: Any) -> None:
        decoded.append(args[5])  # received_ms
        real(*args, **kwargs)

    monkeypatch.setattr(dec, "decode_template_sets", counted)
    dec.decode(repeats)
    tmpl = dec.templates.get((EXPORTERS[0], 1, 300, 10))
    assert decoded == [] and tmpl is not None and tmpl.received_ms == T0 + 102
    dec.decode(change)
    # the first repeat is settled; the new layout, and what follows it, in place
    assert decoded == [T0 + 201, T0 + 203, T0 + 204] if core.AVAILABLE else decoded == []


def _frame_args(payloads: list[bytes]) -> tuple[bytes | bytearray, np.ndarray, np.ndarray]:
    frame = Frame.join(payloads)
    return frame.buf, frame.offsets, frame.lengths


def test_plain_stream_goes_through_the_bulk_path() -> None:
    """The benchmark's kind of stream: bulk decodes it, and the same way."""
    dgs = [(d, EXPORTERS[0], T0) for d in _stream(10, 3000, 1, 1, 20, 1)]
    res = both_ways([dgs])[0]
    assert res.batch.num_rows == 3000
    st_ = res.stats[(EXPORTERS[0], 1)]
    assert st_.records == 3000 and st_.sequence_lost == 0 and st_.packets == len(dgs)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sampling=st.sampled_from([1, 10]),
    refresh=st.integers(1, 25),
    size=st.integers(1, 200),
    mix_v9=st.booleans(),
    reused_id=st.booleans(),
    held_first=st.integers(0, 5),
    small=st.booleans(),
    edits=st.lists(st.tuples(st.sampled_from("dsxl"), st.integers(0, 10_000)), max_size=12),
)
@pytest.mark.slow
def test_mixed_streams_decode_the_same(
    seed: int,
    sampling: int,
    refresh: int,
    size: int,
    mix_v9: bool,
    reused_id: bool,
    held_first: int,
    small: bool,
    edits: list[tuple[str, int]],
) -> None:
    rng = np.random.default_rng(seed)
    streams: list[list[tuple[bytes, bytes]]] = []
    for k, exporter in enumerate(EXPORTERS):
        for domain in (1, 2):
            version = 9 if mix_v9 and domain == 2 else 10
            dgs = _stream(
                version, 400, seed + k * 7 + domain, sampling, refresh, domain, small=small
            )
            streams.append([(d, exporter) for d in dgs])
    if reused_id:
        # The same exporter and domain announces template 257 with the IPv6
        # layout, then (base 257) with the IPv4 one: a layout change mid-call.
        other = _stream(10, 300, seed + 99, sampling, refresh, 1, base=257)
        streams.append([(d, EXPORTERS[0]) for d in other])
    # Interleave the exporters' streams at random, each in its own order.
    heads = [0] * len(streams)
    merged: list[tuple[bytes, bytes]] = []
    while any(h < len(s) for h, s in zip(heads, streams, strict=True)):
        live = [i for i, s in enumerate(streams) if heads[i] < len(s)]
        i = live[int(rng.integers(len(live)))]
        merged.append(streams[i][heads[i]])
        heads[i] += 1
    # Data before its template: move the first packets behind later ones.
    merged = merged[held_first:] + merged[:held_first] if held_first else merged
    for op, at in edits:  # drop, swap, duplicate, truncate
        if not merged:
            break
        j = at % len(merged)
        if op == "d":
            del merged[j]
        elif op == "s" and j + 1 < len(merged):
            merged[j], merged[j + 1] = merged[j + 1], merged[j]
        elif op == "x":
            merged.insert(j, merged[j])
        elif op == "l":
            d, e = merged[j]
            merged[j] = (d[: at % max(len(d), 1)], e)
    dgs = [(d, e, T0 + i) for i, (d, e) in enumerate(merged)]
    both_ways(split(dgs, size))


def test_sequence_gaps_and_reordering_inside_a_bulk_call() -> None:
    dgs = [(d, EXPORTERS[1], T0) for d in _stream(10, 3000, 5, 1, 1000, 3)]
    swapped = [dgs[0], *dgs[3:10], dgs[2], dgs[1], *dgs[11:]]  # lose dgs[10]
    res = both_ways([swapped])[0]
    st_ = res.stats[(EXPORTERS[1], 3)]
    assert st_.sequence_lost > 0 and st_.sequence_reordered == 2


def _ipfix(sets: bytes, seq: int, domain: int = 1) -> bytes:
    return struct.pack(">HHIII", 10, 16 + len(sets), 1_700_000_000, seq, domain) + sets


def _set(set_id: int, body: bytes) -> bytes:
    return struct.pack(">HH", set_id, 4 + len(body)) + body


def test_plain_packets_take_samplers_and_app_names_from_options() -> None:
    """Options data in one packet, plain data packets naming samplers and
    applications after it: the gathered records get the rates and names."""
    opt = struct.pack(">HHH", 500, 3, 1) + struct.pack(">HHHHHH", 302, 2, 305, 4, 306, 4)
    opt2 = struct.pack(">HHH", 501, 2, 1) + struct.pack(">HHHH", 95, 4, 96, 0xFFFF)
    flow = struct.pack(">HH", 600, 3) + struct.pack(">HHHHHH", 8, 4, 302, 2, 95, 4)
    first = _set(3, opt + opt2) + _set(2, flow)
    first += _set(500, struct.pack(">HII", 1, 1, 99) + struct.pack(">HII", 2, 1, 9))
    first += _set(501, b"\x0d\x00\x00\x05\x04sip!")
    recs = struct.pack(">IH", 1, 1) + b"\x0d\x00\x00\x05" + struct.pack(">IH", 2, 2) + b"\0" * 4
    dgs = [(_ipfix(first, 0), EXPORTERS[0], T0)]
    dgs += [(_ipfix(_set(600, recs), 2 + 2 * i), EXPORTERS[0], T0 + i) for i in range(10)]
    res = both_ways([dgs])[0]
    assert res.batch["sampling_rate"].tolist() == [100, 10] * 10
    assert res.batch["application_name"].to_pylist() == ["sip!", ""] * 10
    assert res.stats[(EXPORTERS[0], 1)].sequence_lost == 0


def test_many_exporters_share_plans_and_keep_their_own_samplers() -> None:
    """Forty exporters with the same templates but their own sampler rates,
    interleaved packet by packet as in a big network: one plan for all, and
    every record gets its exporter's rate for the sampler it names."""
    opt = struct.pack(">HHH", 500, 3, 1) + struct.pack(">HHHHHH", 302, 2, 305, 4, 306, 4)
    flow = struct.pack(">HH", 600, 3) + struct.pack(">HHHHHH", 8, 4, 302, 2, 2, 4)
    exporters = [text_to_addr16(f"198.51.100.{k + 1}") for k in range(40)]
    first, rest = [], []
    for k, e in enumerate(exporters):
        rates = _set(500, struct.pack(">HII", 1, 1, k + 1) + struct.pack(">HII", 2, 1, 999))
        first.append((_ipfix(_set(3, opt) + _set(2, flow) + rates, 0), e))
    for i in range(6):  # sequence: 2 options records, then 10 flow records a packet
        recs = [
            b"".join(struct.pack(">IHI", k, 1 + (j % 2), j) for j in range(10)) for k in range(40)
        ]
        rest += [(_ipfix(_set(600, recs[k]), 2 + 10 * i), e) for k, e in enumerate(exporters)]
    # The last 15 exporters' templates come after some of their data: held, released.
    merged = first[:25] + rest[:100] + first[25:] + rest[100:]
    dgs = [(d, e, T0 + i) for i, (d, e) in enumerate(merged)]
    results = both_ways(split(dgs, 64))
    src = np.concatenate([r.batch["src_addr"] for r in results])
    sel = np.concatenate([r.batch["packets"] for r in results]) % 2  # j even: selector 1
    rate = np.concatenate([r.batch["sampling_rate"] for r in results])
    k = src.view(">u4").reshape(-1, 4)[:, 3].astype(np.int64)  # the exporter's number
    assert len(rate) == 40 * 6 * 10
    assert (rate == np.where(sel == 0, k + 2, 1000)).all()
    on_time = set(exporters[:25])  # the others' data came first: held, sequence resynced
    assert sum(r.stats[k].sequence_lost for r in results for k in r.stats if k[0] in on_time) == 0
    assert sum(r.stats[k].held_released for r in results for k in r.stats) > 0
