"""Hostile input at volume: the seeded fuzz campaign's short form, and the memory bounds.

The campaign (:mod:`voipflow.evaluation.fuzz`, ``benchmarks/fuzz.py`` runs
millions) sends mutated NetFlow v5/v9/IPFIX datagrams through
``Decoder.decode_frame``, the collector's entry. Here 20,000 of them: no call
may raise, every datagram is either decoded or rejected whole exactly when
its header is bad, every error is under a documented reason, and the
template cache stays within its bound while templates are flooded in ever
new observation domains.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from voipflow.collectors.codec.decoder import Decoder, DecoderConfig
from voipflow.collectors.codec.frame import Frame
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.evaluation.fuzz import campaign
from voipflow.schemas.flowbatch import text_to_addr16

EXP = text_to_addr16("198.51.100.9")


@pytest.mark.slow
def test_twenty_thousand_mutated_datagrams_are_all_accounted_for() -> None:
    rep = campaign(20_000, seed=11, hang_s=120.0)
    assert rep.crashes == 0, rep.first_crashes
    assert rep.hangs == 0
    assert rep.datagrams == 20_000
    assert not rep.undocumented, rep.undocumented
    assert rep.packets + rep.rejected == rep.datagrams
    assert rep.rejected == rep.rejected_expected > 0
    assert sum(rep.errors.values()) >= rep.rejected
    # Every kind of hostility was made, and valid data still came through.
    assert min(rep.made.values()) > 500, rep.made
    assert rep.records > 100_000
    assert rep.errors["too_many_fields"] > 0 and rep.errors["truncated"] > 0
    assert rep.peak_templates <= 65536


def _flood(domain: int, first_id: int, n: int) -> bytes:
    """An IPFIX message of ``n`` one-field templates in observation domain ``domain``."""
    body = b"".join(struct.pack(">HHHH", first_id + i, 1, 8, 4) for i in range(n))
    sets = struct.pack(">HH", 2, 4 + len(body)) + body
    return struct.pack(">HHIII", 10, 16 + len(sets), 1_700_000_000, 0, domain) + sets


def test_templates_flooded_over_new_domains_stay_within_the_bound() -> None:
    cache = TemplateCache(max_templates=500)
    dec = Decoder(cache, DecoderConfig(max_domains=40))
    payloads = [_flood(domain, 256, 20) for domain in range(1, 101)]  # 2000 templates offered
    res = dec.decode_frame(
        Frame.join(payloads), [EXP] * len(payloads), np.full(len(payloads), 1_700_000_000_000)
    )
    assert len(cache) == 500
    refused = sum(st.errors.get("too_many_templates", 0) for st in res.stats.values())
    # Each message stops at its first refused template (the rest of its set is skipped).
    assert refused == 100 - 500 // 20
    assert sum(st.templates_added for st in res.stats.values()) == 500
    assert len(dec._seq) <= 40
    # Once old templates expire (at the end of a call), new ones are accepted again.
    later = 1_700_000_000_000 + 1801 * 1000
    for at in (later, later + 1):
        dec.decode_frame(Frame.join([_flood(7777, 300, 3)]), [EXP], np.array([at]))
    assert {key[1] for key in sorted(cache.keys())} == {7777}
