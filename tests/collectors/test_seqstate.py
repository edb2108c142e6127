"""Sequence trackers saved and restored across collector restarts (collectors.seqstate).

Export datagrams come from the project's encoder (RFC sequence numbering:
IPFIX counts data records, v9 export packets); the decoder and the state
files are the real ones. A "restart" is a second decoder that loads what the
first one saved, with the template cache carried over as the collector's
own cache file would carry it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.collectors.flows import BOOT, T0, random_flows
from voipflow.collectors.codec.call import DecoderConfig
from voipflow.collectors.codec.decoder import Decoder
from voipflow.collectors.codec.encoder import ExportEncoder, make_encoder
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.collectors.seqstate import FORMAT, SequenceState, read, state_paths
from voipflow.schemas.flowbatch import addr_to_text, text_to_addr16

EXP = text_to_addr16("192.0.2.7")
EXP2 = text_to_addr16("192.0.2.8")
DOMAIN = 3
#: export time: after every random flow's end
T_EXPORT = T0 + 200_000
MAX_AGE_S = 1800.0


def _encoder(version: int, **kw: Any) -> ExportEncoder:
    if version == 9:
        kw.setdefault("boot_time_ms", BOOT)
    return make_encoder(
        version,
        observation_domain_id=DOMAIN,
        template_refresh_packets=10**6,
        template_refresh_ms=10**9,
        **kw,
    )


def _units(enc: ExportEncoder) -> int:
    """What the sequence number counts so far: v9 packets, IPFIX data records."""
    return enc.packets if enc.version == 9 else enc.data_records


def _export(enc: ExportEncoder, flows: int, seed: int) -> tuple[list[bytes], int]:
    """Datagrams carrying ``flows`` records, and the sequence units they take."""
    before = _units(enc)
    datagrams = enc.encode(random_flows(flows, seed), T_EXPORT)
    return datagrams, _units(enc) - before


def _decode(
    dec: Decoder,
    datagrams: list[bytes],
    at_ms: int,
    one_by_one: bool,
    state: SequenceState | None = None,
) -> dict[tuple[bytes, int], list[int]]:
    """Decode from EXP (and report resumes to ``state`` as the collector
    does); [sequence_lost, restarts, records] of all calls summed."""
    calls = [[d] for d in datagrams] if one_by_one else [datagrams]
    total: dict[tuple[bytes, int], list[int]] = {}
    for group in calls:
        res = dec.decode([(d, EXP, at_ms) for d in group])
        if state is not None:
            state.report(dec, res.stats, at_ms)
        for key, st in res.stats.items():
            t = total.setdefault(key, [0, 0, 0])
            t[0] += st.sequence_lost
            t[1] += st.restarts
            t[2] += st.records
    return total


def _state(tmp_path: Path, worker: int = 0) -> SequenceState:
    own, _ = state_paths(tmp_path, "collector-templates.json", worker)
    return SequenceState(
        own,
        lambda: state_paths(tmp_path, "collector-templates.json", worker)[1],
        MAX_AGE_S,
        addr_to_text,
    )


def _restart(
    tmp_path: Path, dec: Decoder, now_ms: int, config: DecoderConfig | None = None
) -> tuple[Decoder, SequenceState]:
    """Save ``dec``'s trackers as an orderly stop does; a new decoder that
    loads them (with the same templates) as a restarted collector does."""
    _state(tmp_path).save(dec, now_ms, orderly=True)
    new = Decoder(dec.templates, config)
    state = _state(tmp_path)
    state.load(new, now_ms)
    return new, state


@pytest.mark.parametrize("one_by_one", [False, True], ids=["bulk", "one-by-one"])
@pytest.mark.parametrize("version", [9, 10])
def test_datagrams_sent_while_down_are_counted_as_lost(
    tmp_path: Path, version: int, one_by_one: bool, caplog: pytest.LogCaptureFixture
) -> None:
    enc = _encoder(version)
    before, _ = _export(enc, 400, 1)
    _, gap = _export(enc, 300, 2)
    after, _ = _export(enc, 400, 3)
    assert len(before) >= 8 and len(after) >= 8 and gap > 0

    dec = Decoder(TemplateCache())
    t1 = T0 + 1_000_000
    assert _decode(dec, before, t1, one_by_one)[(EXP, DOMAIN)][:2] == [0, 0]
    new, state = _restart(tmp_path, dec, t1 + 5_000)
    assert state.pending == {(EXP, DOMAIN): t1}

    with caplog.at_level(logging.INFO, logger="voipflow.collectors.seqstate"):
        got = _decode(new, after, t1 + 20_000, one_by_one, state)
    lost, restarts, records = got[(EXP, DOMAIN)]
    assert (lost, restarts, records) == (gap, 0, 400)
    assert state.pending == {}
    found = [r for r in caplog.records if "sent while the collector was down" in r.getMessage()]
    assert len(found) == 1
    unit = "packets" if version == 9 else "records"
    assert (found[0].__dict__["lost"], found[0].__dict__["unit"]) == (gap, unit)


@pytest.mark.parametrize("one_by_one", [False, True], ids=["bulk", "one-by-one"])
def test_nothing_sent_while_down_counts_nothing_and_says_so(
    tmp_path: Path, one_by_one: bool, caplog: pytest.LogCaptureFixture
) -> None:
    enc = _encoder(10)
    before, _ = _export(enc, 400, 1)
    after, _ = _export(enc, 400, 2)
    dec = Decoder(TemplateCache())
    _decode(dec, before, T0 + 1_000_000, one_by_one)
    new, state = _restart(tmp_path, dec, T0 + 1_000_000)
    with caplog.at_level(logging.INFO, logger="voipflow.collectors.seqstate"):
        got = _decode(new, after, T0 + 1_004_000, one_by_one, state)
    assert got[(EXP, DOMAIN)] == [0, 0, 400]
    assert state.pending == {} and not state.counted_since_save
    assert caplog.text.count("sequence continued across the collector restart") == 1


def test_the_first_datagram_is_reported_once_with_gap_and_downtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    enc = _encoder(10)
    before, _ = _export(enc, 50, 1)
    _, gap = _export(enc, 70, 2)
    after, _ = _export(enc, 50, 3)
    dec = Decoder(TemplateCache())
    t1 = T0 + 1_000_000
    _decode(dec, before, t1, False)
    new, state = _restart(tmp_path, dec, t1 + 1_000)
    with caplog.at_level(logging.INFO, logger="voipflow.collectors.seqstate"):
        for i, d in enumerate(after):
            res = new.decode([(d, EXP, t1 + 12_500 + i)])
            state.report(new, res.stats, t1 + 12_500 + i)
    lines = [r for r in caplog.records if r.name == "voipflow.collectors.seqstate"]
    found = [r for r in lines if "sent while the collector was down" in r.getMessage()]
    assert len(found) == 1 and state.counted_since_save
    rec: Any = found[0]
    assert (rec.lost, rec.unit, rec.downtime_s) == (gap, "records", 12.5)
    assert (rec.exporter, rec.observation_domain_id) == ("192.0.2.7", DOMAIN)


def test_two_exporters_in_one_bulk_call_each_resume_on_their_own(tmp_path: Path) -> None:
    a, b = _encoder(10), _encoder(10)
    a_before, _ = _export(a, 200, 1)
    b_before, _ = _export(b, 200, 2)
    _, a_gap = _export(a, 90, 3)  # only exporter a sent while the collector was down
    a_after, _ = _export(a, 200, 4)
    b_after, _ = _export(b, 200, 5)
    dec = Decoder(TemplateCache())
    t1 = T0 + 1_000_000
    mixed = [(d, EXP, t1) for d in a_before] + [(d, EXP2, t1) for d in b_before]
    dec.decode(mixed)
    new, state = _restart(tmp_path, dec, t1)
    # interleaved, so the call is one bulk call over both exporters
    both = [x for pair in zip(a_after, b_after, strict=False) for x in pair]
    sender = {id(d): EXP for d in a_after} | {id(d): EXP2 for d in b_after}
    res = new.decode([(d, sender[id(d)], t1 + 9_000) for d in both])
    assert res.stats[(EXP, DOMAIN)].sequence_lost == a_gap
    assert res.stats[(EXP2, DOMAIN)].sequence_lost == 0
    state.report(new, res.stats, t1 + 9_000)
    assert state.pending == {}


def test_gap_across_the_32_bit_wrap(tmp_path: Path) -> None:
    enc = _encoder(10)
    enc.data_records = (1 << 32) - 150  # the sequence number wraps in the gap
    before, _ = _export(enc, 100, 1)
    _, gap = _export(enc, 120, 2)
    after, _ = _export(enc, 100, 3)
    dec = Decoder(TemplateCache())
    _decode(dec, before, T0 + 1_000_000, False)
    new, _ = _restart(tmp_path, dec, T0 + 1_000_000)
    assert _decode(new, after, T0 + 1_010_000, False)[(EXP, DOMAIN)][:2] == [gap, 0]


def test_an_exporter_that_restarted_while_down_is_a_restart_not_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = _encoder(9)
    before, _ = _export(old, 400, 1)
    _export(old, 300, 2)
    # rebooted: a new boot time and packets counted from 0 again
    rebooted = _encoder(9, boot_time_ms=BOOT + 3_600_000)
    after, _ = _export(rebooted, 400, 3)
    dec = Decoder(TemplateCache())
    _decode(dec, before, T0 + 1_000_000, False)
    new, state = _restart(tmp_path, dec, T0 + 1_000_000)
    with caplog.at_level(logging.WARNING, logger="voipflow.collectors.seqstate"):
        res = new.decode([(d, EXP, T0 + 1_030_000) for d in after])
        state.report(new, res.stats, T0 + 1_030_000)
    assert (res.stats[(EXP, DOMAIN)].sequence_lost, res.stats[(EXP, DOMAIN)].restarts) == (0, 1)
    assert "counted as an exporter restart" in caplog.text


def test_a_gap_beyond_restart_gap_is_handled_as_a_jump(tmp_path: Path) -> None:
    """The tracker's rule for a jump far ahead holds across a restart too:
    a restart, no loss (a long downtime of a busy exporter looks like this)."""
    config = DecoderConfig(restart_gap=1_000)
    enc = _encoder(10)
    before, _ = _export(enc, 300, 1)
    _, gap = _export(enc, 1_500, 2)
    after, _ = _export(enc, 300, 3)
    assert gap > 1_000
    dec = Decoder(TemplateCache(), config)
    _decode(dec, before, T0 + 1_000_000, False)
    new, _ = _restart(tmp_path, dec, T0 + 1_000_000, config)
    assert _decode(new, after, T0 + 1_010_000, False)[(EXP, DOMAIN)][:2] == [0, 1]


def test_without_saved_state_the_gap_goes_uncounted(tmp_path: Path) -> None:
    """What the saved state changes: a fresh tracker takes the first number as it is."""
    enc = _encoder(10)
    before, _ = _export(enc, 300, 1)
    _export(enc, 300, 2)
    after, _ = _export(enc, 300, 3)
    dec = Decoder(TemplateCache())
    _decode(dec, before, T0 + 1_000_000, False)
    fresh = Decoder(dec.templates)
    assert _decode(fresh, after, T0 + 1_010_000, False)[(EXP, DOMAIN)][:2] == [0, 0]


def test_save_and_load_round_trip_keeps_every_field(tmp_path: Path) -> None:
    enc = _encoder(9)
    before, _ = _export(enc, 300, 1)
    dec = Decoder(TemplateCache())
    _decode(dec, before, T0 + 1_000_000, False)
    saved = dec.trackers[(EXP, DOMAIN)]
    _state(tmp_path).save(dec, T0 + 1_000_500, orderly=False)
    head, trackers = read(state_paths(tmp_path, "collector-templates.json", 0)[0], 7, 9)
    assert head == {"saved_ms": T0 + 1_000_500, "orderly": False}
    got = trackers[(EXP, DOMAIN)]
    assert (got.prev_seq, got.prev_units, got.boot_ms, got.modes, got.seen_ms) == (
        saved.prev_seq,
        saved.prev_units,
        saved.boot_ms,
        saved.modes,
        T0 + 1_000_000,
    )
    assert saved.boot_ms is not None and got.resumed
    assert (got.reorder_window, got.restart_gap) == (7, 9)


def _saved_doc(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    enc = _encoder(10)
    dec = Decoder(TemplateCache())
    _decode(dec, _export(enc, 100, 1)[0], T0 + 1_000_000, False)
    state = _state(tmp_path)
    state.save(dec, T0 + 1_000_000, orderly=True)
    return state.own, json.loads(state.own.read_text())


@pytest.mark.parametrize(
    "damage",
    [
        "garbage",
        "truncated",
        "deeply nested",
        "template cache",
        "version 2",
        "bad prev_seq",
        "short exporter",
    ],
)
def test_a_bad_file_is_a_warning_and_a_fresh_start(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, doc = _saved_doc(tmp_path)
    text = json.dumps(doc)
    if damage == "garbage":
        path.write_bytes(b"\x00\xff not json")
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "deeply nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "template cache":
        TemplateCache().save(path)
    elif damage == "version 2":
        path.write_text(json.dumps({**doc, "version": 2}))
    elif damage == "bad prev_seq":
        doc["trackers"][0]["prev_seq"] = -1
        path.write_text(json.dumps(doc))
    else:
        doc["trackers"][0]["exporter"] = "c0000207"
        path.write_text(json.dumps(doc))
    dec = Decoder(TemplateCache())
    with caplog.at_level(logging.WARNING, logger="voipflow.collectors.seqstate"):
        assert _state(tmp_path).load(dec, T0 + 1_001_000) == 0
    assert dec.trackers == {}
    warned = [r for r in caplog.records if r.getMessage().startswith("sequence state not loaded")]
    assert len(warned) == 1 and str(path) in warned[0].__dict__["file"]


def test_state_older_than_the_bound_is_not_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _saved_doc(tmp_path)
    dec = Decoder(TemplateCache())
    limit = T0 + 1_000_000 + int(MAX_AGE_S * 1000)
    with caplog.at_level(logging.INFO, logger="voipflow.collectors.seqstate"):
        assert _state(tmp_path).load(dec, limit + 1) == 0
    assert dec.trackers == {}
    loaded: Any = next(r for r in caplog.records if r.getMessage() == "sequence state loaded")
    assert (loaded.trackers, loaded.too_old) == (0, 1)
    # at the bound it is still trusted
    assert _state(tmp_path).load(Decoder(TemplateCache()), limit) == 1


def test_restored_state_waiting_past_the_bound_is_forgotten(tmp_path: Path) -> None:
    _saved_doc(tmp_path)
    dec = Decoder(TemplateCache())
    state = _state(tmp_path)
    assert state.load(dec, T0 + 1_000_000) == 1
    assert state.forget_stale(dec, T0 + 1_000_000 + int(MAX_AGE_S * 1000)) == 0
    assert state.forget_stale(dec, T0 + 1_000_001 + int(MAX_AGE_S * 1000)) == 1
    assert dec.trackers == {} and state.pending == {}


def test_the_worker_that_saw_the_exporter_last_wins(tmp_path: Path) -> None:
    """After the number of workers changed, two files may hold one exporter."""
    enc = _encoder(10)
    first, _ = _export(enc, 100, 1)
    second, _ = _export(enc, 100, 2)
    _, gap = _export(enc, 100, 3)
    after, _ = _export(enc, 100, 4)
    templates = TemplateCache()
    old, new = Decoder(templates), Decoder(templates)
    _decode(old, first, T0 + 1_000_000, False)
    _decode(new, first + second, T0 + 1_005_000, False)
    _state(tmp_path, worker=1).save(new, T0 + 1_006_000, orderly=True)
    _state(tmp_path, worker=0).save(old, T0 + 1_006_000, orderly=True)
    dec = Decoder(templates)
    assert _state(tmp_path, worker=0).load(dec, T0 + 1_007_000) == 1
    assert _decode(dec, after, T0 + 1_010_000, False)[(EXP, DOMAIN)][:2] == [gap, 0]


def test_the_file_name_is_not_taken_for_a_template_cache(tmp_path: Path) -> None:
    from voipflow.collectors.service import template_paths

    path, doc = _saved_doc(tmp_path)
    assert doc["format"] == FORMAT
    TemplateCache().save(tmp_path / "collector-templates-0.json")
    _, every_cache = template_paths(tmp_path, "collector-templates.json", 0)
    assert path not in every_cache and len(every_cache) == 1
