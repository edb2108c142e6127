"""Decoder tests on committed exports of real exporters (see make_fixtures.py).

Each fixture's expected records are what nfdump decoded from the same
datagrams when the fixture was made.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.collectors.compare import our_rows
from voipflow.collectors.codec.decoder import Decoder, DecoderConfig
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.collectors.pcapfile import iter_udp
from voipflow.schemas.flowbatch import text_to_addr16

DATA = Path(__file__).parent / "data"
FIXTURES = sorted(p.stem for p in DATA.glob("*.pcap"))
EXPORTER = text_to_addr16("192.0.2.7")
T0 = 1_700_000_000_000


def datagrams(name: str) -> list[bytes]:
    return [d.payload for d in iter_udp((DATA / f"{name}.pcap").read_bytes())]


def feed(dgs: list[bytes]) -> list[tuple[bytes, bytes, int]]:
    return [(d, EXPORTER, T0 + i) for i, d in enumerate(dgs)]


def expected(name: str) -> tuple[Counter[tuple], dict]:
    doc = json.loads((DATA / f"{name}.json").read_text())
    return Counter({tuple(k): v for k, v in doc["nfdump_rows"]}), doc


def test_fixtures_present() -> None:
    assert len(FIXTURES) >= 6


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_matches_nfdump(name: str) -> None:
    theirs, doc = expected(name)
    res = Decoder(TemplateCache()).decode(feed(datagrams(name)))
    assert not res.errors
    ours = our_rows(res.batch, False, doc["ordered_times"], doc["times_mod_2_32"])
    if "-v9-" in name:  # nfdump drops v9 ICMP type/code (see test_differential)
        ours, theirs = _no_icmp_port(ours), _no_icmp_port(theirs)
    if "biflow" in name:  # nfdump shows reverse flags (see test_differential)
        ours = Counter({k[:-1]: v for k, v in ours.items()})
        theirs = Counter({k[:-1]: v for k, v in theirs.items()})
    assert ours == theirs
    st = next(iter(res.stats.values()))
    assert st.records == len(res.batch) == sum(theirs.values())
    assert st.sequence_lost == 0 and st.restarts == 0
    expected_rate = 10 if "sampled" in name else 1
    assert set(res.batch["sampling_rate"].tolist()) == {expected_rate}
    assert st.sampling_rate == expected_rate


def _no_icmp_port(rows: Counter[tuple]) -> Counter[tuple]:
    out: Counter[tuple] = Counter()
    for k, v in rows.items():
        out[(*k[:3], -1, *k[4:]) if k[4] in (1, 58) else k] += v
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_one_call_equals_many(name: str) -> None:
    dgs = datagrams(name)
    whole = Decoder(TemplateCache()).decode(feed(dgs)).batch
    dec = Decoder(TemplateCache())
    parts = [dec.decode(feed([d])).batch for d in dgs]
    for col in ("src_addr", "dst_addr", "packets", "bytes", "flow_start_ms", "flow_end_ms"):
        joined = np.concatenate([p[col] for p in parts if len(p)])
        assert sorted(joined.tolist()) == sorted(whole[col].tolist())


def test_data_before_template_is_held_then_released() -> None:
    dgs = datagrams("pmacct-ipfix-viber")
    whole = Decoder(TemplateCache()).decode(feed(dgs))
    dec = Decoder(TemplateCache())
    # pmacct sends its templates in the first packet: hold everything else.
    first = dec.decode(feed(dgs[1:]))
    st = next(iter(first.stats.values()))
    assert len(first.batch) == 0 and st.held_sets > 0 and st.records == 0
    second = dec.decode(feed(dgs[:1]))
    st2 = next(iter(second.stats.values()))
    assert st2.held_released > 0 and st2.held_sets == 0
    assert len(second.batch) == len(whole.batch)
    assert sorted(second.batch["bytes"].tolist()) == sorted(whole.batch["bytes"].tolist())


def test_held_bounds_evict_and_count() -> None:
    dgs = datagrams("pmacct-ipfix-viber")
    unbounded = Decoder(TemplateCache()).decode(feed(dgs[1:]))
    held = next(iter(unbounded.stats.values())).held_sets
    assert held > 2
    dec = Decoder(TemplateCache(), DecoderConfig(held_max_sets=2))
    res = dec.decode(feed(dgs[1:]))
    st = next(iter(res.stats.values()))
    assert st.held_sets == 2 and st.held_evicted == held - 2
    assert dec.held_sets == 2


def test_template_cache_survives_restart(tmp_path: Path) -> None:
    dgs = datagrams("pmacct-ipfix-viber")
    whole = Decoder(TemplateCache()).decode(feed(dgs)).batch
    cache = TemplateCache()
    a = Decoder(cache).decode(feed(dgs[:1])).batch
    cache.save(tmp_path / "templates.json")
    restored = TemplateCache()
    assert restored.load(tmp_path / "templates.json") == len(cache) > 0
    b = Decoder(restored).decode(feed(dgs[1:]))
    assert not any(s.held_sets for s in b.stats.values())
    assert len(a) + len(b.batch) == len(whole)


def test_templates_expire() -> None:
    dgs = datagrams("pmacct-ipfix-viber")
    cache = TemplateCache(expiry_s=60)
    dec = Decoder(cache)
    dec.decode(feed(dgs[:1]))
    assert len(cache) > 0
    before = len(cache)
    res = dec.decode([(b"\x00\x0a", EXPORTER, T0 + 61_000)])  # any packet moves the clock
    assert len(cache) == 0
    st = res.stats[(EXPORTER, 0)]
    assert st.templates_expired == before and st.errors == {"truncated": 1}


def test_sampling_override_wins() -> None:
    dgs = datagrams("softflowd-ipfix-sampled-signal")
    res = Decoder(TemplateCache(), DecoderConfig(sampling_override={EXPORTER: 512})).decode(
        feed(dgs)
    )
    assert set(res.batch["sampling_rate"].tolist()) == {512}


def test_v5_header_fields() -> None:
    res = Decoder(TemplateCache()).decode(feed(datagrams("softflowd-v5-whatsapp")))
    st = next(iter(res.stats.values()))
    assert st.netflow_version == 5
    assert (res.batch["ip_version"] == 4).all()
    assert (res.batch["exporter_addr"] == EXPORTER).all()
    assert (res.batch["time_received_ms"] >= T0).all()


def test_ipv6_fixture_has_ipv6_records() -> None:
    res = Decoder(TemplateCache()).decode(feed(datagrams("softflowd-ipfix-http-ipv6")))
    assert (res.batch["ip_version"] == 6).sum() > 0


def test_biflow_reverse_counters() -> None:
    res = Decoder(TemplateCache()).decode(feed(datagrams("softflowd-ipfix-biflow-wa-voice")))
    assert res.batch["reverse_packets"].sum() > 0
    assert res.batch["reverse_bytes"].sum() > 0


def test_sequence_loss_and_reorder_counted() -> None:
    dgs = datagrams("softflowd-v9-teams")  # v9 sequence counts packets
    res = Decoder(TemplateCache()).decode(feed([dgs[0], dgs[2], dgs[1], *dgs[3:]]))
    st = next(iter(res.stats.values()))
    assert st.sequence_lost == 1 and st.sequence_reordered == 1 and st.sequence_late == 1
    assert st.restarts == 0


def test_reannounced_templates_are_refreshed_and_shared() -> None:
    """A template set seen before (same bytes) is not parsed again, but still
    refreshes the template's time, and other exporters sending the same
    bytes get their own templates."""
    first = datagrams("pmacct-ipfix-viber")[0]  # pmacct's templates
    other = text_to_addr16("192.0.2.8")
    cache = TemplateCache(expiry_s=60)
    dec = Decoder(cache)
    dec.decode([(first, EXPORTER, T0)])
    known = len(cache)
    assert known > 0
    res = dec.decode([(first, EXPORTER, T0 + 50_000), (first, other, T0 + 50_000)])
    assert res.stats[(EXPORTER, 0)].templates_added == 0
    assert sum(s.templates_added for k, s in res.stats.items() if k[0] == other) == known
    dec.decode([(b"\x00\x0a", EXPORTER, T0 + 100_000)])  # moves the clock past T0 + 60 s
    assert len(cache) == 2 * known  # refreshed at T0 + 50 s: not expired
