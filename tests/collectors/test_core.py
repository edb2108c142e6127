"""The codec's compiled core: bounds, fuzzing, and the same results as numpy.

The C walk and gather (``collectors/codec/_walk.c``) see every datagram a
collector receives, so bad input must never make them read out of bounds or
crash the process: random buffers, random datagram tables and mutated
softflowd-shaped streams (templates in front of small data sets) go through
it here, and the decode results must equal the numpy path's and the
one-by-one decoder's (same rows, same counters, same errors with the same
reasons). The corpus captures are checked three ways in ``test_bulk.py`` and
``test_robustness.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from tests.collectors.compare import assert_same
from tests.collectors.flows import BOOT, T0, random_flows
from voipflow.collectors import config as collector_config
from voipflow.collectors.codec import bulk, core
from voipflow.collectors.codec.decoder import REASONS, Datagram, Decoder, DecoderConfig
from voipflow.collectors.codec.encoder import make_encoder
from voipflow.collectors.codec.frame import Frame
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.collectors.config import CollectorConfig
from voipflow.schemas.flowbatch import ipv4_to_addr16, text_to_addr16

needs_core = pytest.mark.skipif(not core.AVAILABLE, reason=core.BUILD_HINT)
EXP = text_to_addr16("198.51.100.7")


def _small_stream(version: int, n: int, seed: int) -> list[bytes]:
    """softflowd's shape: 7 sets of 1-3 records, templates every 4 datagrams."""
    enc = make_encoder(version, boot_time_ms=BOOT, template_refresh_packets=4)
    cols = random_flows(n, seed, v6_share=0.3)
    out: list[bytes] = []
    for r, lo in enumerate(range(0, n, 100)):
        part = {k: v[lo : lo + 100] for k, v in cols.items()}
        out += enc.encode_small_sets(part, T0 + 1000 * r, 1 + r % 3, 7)  # type: ignore[attr-defined]
    return out


def _three_ways(dgs: list[bytes]) -> None:
    """Decoded one by one, in bulk with the core and with numpy: all equal, and
    every problem counted under a documented reason, none internal."""
    feed: list[Datagram] = [(d, EXP, T0 + i) for i, d in enumerate(dgs)]
    # all errors kept: which first few a call returns depends on the order
    # the bulk path takes exporters and domains in, not on the core
    base = DecoderConfig(max_errors_kept=1 << 20)
    one = Decoder(TemplateCache(), replace(base, bulk_min_datagrams=0)).decode(feed)
    compiled = Decoder(TemplateCache(), replace(base, bulk_min_datagrams=1)).decode(feed)
    pure = Decoder(TemplateCache(), replace(base, bulk_min_datagrams=1, compiled_core=False))
    assert_same(one, compiled)
    assert_same(one, pure.decode(feed))
    for s in compiled.stats.values():
        assert set(s.errors) <= set(REASONS), s.errors


@needs_core
@pytest.mark.parametrize("version", [9, 10])
def test_mutated_small_set_streams(version: int) -> None:
    """Byte flips, length fields, truncations and splices in a stream of
    templated small-set datagrams: the same result three ways, no crash."""
    clean = _small_stream(version, 600, seed=version)
    rng = np.random.default_rng(100 + version)
    for _ in range(60):
        dgs = list(clean)
        for _ in range(int(rng.integers(1, 6))):
            i = int(rng.integers(len(dgs)))
            d = bytearray(dgs[i])
            how = int(rng.integers(4))
            if how == 0:  # flip bytes
                for _ in range(int(rng.integers(1, 4))):
                    d[int(rng.integers(len(d)))] = int(rng.integers(256))
            elif how == 1:  # a set or header length field (offsets 2, 16..60)
                at = int(rng.choice([2, *range(16, min(len(d) - 1, 60), 2)]))
                d[at : at + 2] = int(rng.integers(0x10000)).to_bytes(2, "big")
            elif how == 2:  # truncate
                d = d[: int(rng.integers(len(d)))]
            else:  # splice two datagrams
                other = dgs[int(rng.integers(len(dgs)))]
                cut = int(rng.integers(len(d)))
                d = d[:cut] + other[cut:]
            dgs[i] = bytes(d)
        _three_ways(dgs)
    _three_ways(clean)


@needs_core
def test_random_datagrams() -> None:
    """Random bytes behind real-looking headers (and none at all)."""
    rng = np.random.default_rng(5)
    for _ in range(40):
        dgs = []
        for _ in range(int(rng.integers(1, 40))):
            body = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
            version = int(rng.choice([5, 9, 10, 7]))
            head = version.to_bytes(2, "big")
            if version == 10:
                head += (16 + len(body) + 4 * int(rng.integers(0, 2))).to_bytes(2, "big")
            dgs.append((head + body)[: int(rng.integers(0, 400))])
        _three_ways(dgs)


@needs_core
def test_walk_of_random_tables_stays_in_bounds() -> None:
    """Random buffers and datagram tables: every set the walk reports lies in
    its datagram, and tables outside the buffer are refused, not read."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        size = int(rng.integers(0, 3000))
        buf = rng.integers(0, 256, size, dtype=np.uint8)
        if size > 20 and rng.integers(2):  # headers that invite a walk
            buf[0:2] = (0, rng.choice([9, 10]))
        n = int(rng.integers(0, 20))
        lengths = rng.integers(0, 600, n).astype(np.int64)
        offsets = rng.integers(0, max(size, 1), n).astype(np.int64)
        inside = bool(np.all(offsets + lengths <= size))
        frame = bytes(buf)
        if not inside:
            with pytest.raises(ValueError):
                core.walk(frame, offsets, lengths)
            continue
        heads, data, tsets = core.walk(frame, offsets, lengths)
        for i in np.flatnonzero(heads[:, core.H_KIND] != core.K_ONE):
            lo, hi = offsets[i], offsets[i] + lengths[i]
            first, k = heads[i, core.H_FIRST_SET], heads[i, core.H_NSETS]
            sets = data[first : first + k]
            assert k > 0 and np.all(sets[:, 0] >= lo) and np.all(sets[:, 0] + sets[:, 1] <= hi)
            first, k = heads[i, core.H_FIRST_TSET], heads[i, core.H_NTSETS]
            t = tsets[first : first + k]
            assert np.all(t[:, 1] >= lo) and np.all(t[:, 2] <= hi)


@needs_core
def test_gather_refuses_ranges_outside() -> None:
    buf = bytes(range(100))
    dtype = np.dtype((np.void, 10))
    out = core.gather(buf, np.array([0, 90]), np.array([2, 1]), dtype)
    assert out.tobytes() == buf[0:20] + buf[90:100]
    for starts, counts in (([95], [1]), ([-1], [1]), ([0], [11]), ([0], [-1]), ([1 << 62], [1])):
        with pytest.raises(ValueError):
            core.gather(buf, np.array(starts), np.array(counts), dtype)


@needs_core
def test_heads_agree_with_numpy_where_plain() -> None:
    """The two walks give the same header fields and sets for plain datagrams;
    the core also takes those with templates in front."""
    dgs = _small_stream(10, 300, seed=3) + _small_stream(9, 300, seed=4)
    frame = Frame.join(dgs)
    c, p = bulk.read_heads(frame, compiled=True), bulk.read_heads(frame, compiled=False)
    assert c.templated is not None and c.templated.any()
    assert np.array_equal(c.plain & ~c.templated, p.plain)
    assert np.array_equal(c.domain, p.domain)
    for name in ("version", "set_id", "seq", "export_ms", "uptime_ms", "nsets"):
        assert np.array_equal(getattr(c, name)[p.plain], getattr(p, name)[p.plain]), name


def test_missing_core_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the built core the decoder takes the numpy path with the same
    result, and ``codec_core=compiled`` refuses to start, saying what to do."""
    dgs = _small_stream(10, 300, seed=8)
    feed: list[Datagram] = [(d, EXP, T0 + i) for i, d in enumerate(dgs)]
    expected = Decoder(TemplateCache(), DecoderConfig()).decode(feed)
    monkeypatch.setattr(core, "AVAILABLE", False)
    assert_same(expected, Decoder(TemplateCache(), DecoderConfig()).decode(feed))
    with pytest.raises(ValueError, match="make setup"):
        CollectorConfig(codec_core="compiled")
    assert CollectorConfig(codec_core="auto").decoder_config().compiled_core
    assert not CollectorConfig(codec_core="numpy").decoder_config().compiled_core
    assert collector_config.core is core


@needs_core
def test_addr4_matches_numpy_and_refuses_fields_outside() -> None:
    rec = np.zeros(3, dtype=[("port", ">u2"), ("addr", ">u4")])
    rec["addr"] = [0x0A000001, 0xC0A80101, 0xFFFFFFFF]
    expected = ipv4_to_addr16(np.ascontiguousarray(rec["addr"]))
    assert core.addr4(rec, 2).tolist() == expected.tolist()
    raw = rec.view(np.uint8)
    for itemsize, offset in ((6, 3), (6, -1), (0, 0), (7, 2)):
        with pytest.raises(ValueError):
            _walk_module().addr4(raw, itemsize, offset, np.zeros(48, np.uint8))


def _walk_module() -> Any:
    assert core._walk is not None
    return core._walk
