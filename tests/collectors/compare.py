"""Comparisons the decoder tests share: decode results, and rows against nfdump's.

:func:`nfdump_rows` and :func:`our_rows` bring nfdump's JSON records and a
decoded batch to one comparable row shape (the fixtures under ``data/``
store nfdump's rows in it); :func:`assert_same` compares two decode results
exactly (rows in order, extras, statistics, errors).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np

from voipflow.collectors.codec.decoder import DecodeResult
from voipflow.schemas.flowbatch import FlowBatch, addr_to_text

_FLAGS = "CEUAPRSF"


def assert_same(a: DecodeResult, b: DecodeResult) -> None:
    """Two decode results are equal: rows in order, extras, statistics, errors."""
    assert a.batch.num_rows == b.batch.num_rows
    for name, col in a.batch.columns.items():
        other = b.batch.columns[name]
        if isinstance(col, np.ndarray):
            assert np.array_equal(col, other), name
        else:
            assert col.equals(other), name
    assert a.batch.extras.keys() == b.batch.extras.keys()
    for name, arr in a.batch.extras.items():
        assert arr.equals(b.batch.extras[name]), name
    assert a.stats == b.stats
    assert sorted((e, x.reason, str(x)) for e, x in a.errors) == sorted(
        (e, x.reason, str(x)) for e, x in b.errors
    )


def _ms(text: str) -> int:
    t = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return round(t.timestamp() * 1000)


def _flags(text: str) -> int:
    return sum(1 << (7 - i) for i, c in enumerate(text[-8:]) if c != ".")


def nfdump_rows(
    recs: list[dict], ordered_times: bool, wrap: bool, icmp_ports: bool = True
) -> Counter[tuple]:
    rows: Counter[tuple] = Counter()
    for r in recs:
        if r.get("type") != "FLOW":
            continue
        src = r.get("src4_addr") or r.get("src6_addr")
        dst = r.get("dst4_addr") or r.get("dst6_addr")
        first, last = _ms(r["first"]), _ms(r["last"])
        if not ordered_times:
            first, last = min(first, last), max(first, last)
        if wrap:
            first, last = first % 2**32, last % 2**32
        if "icmp_type" in r:
            sport, dport = 0, r["icmp_type"] * 256 + r["icmp_code"]
            if not icmp_ports:
                dport = -1
        else:
            sport, dport = r["src_port"], r["dst_port"]
        rows[(src, dst, sport, dport, r["proto"], r["in_packets"], r["in_bytes"],
              r.get("out_packets", 0), r.get("out_bytes", 0), first, last,
              _flags(r.get("tcp_flags", "........")))] += 1  # fmt: skip
    return rows


def our_rows(
    b: FlowBatch, scale: bool, ordered_times: bool, wrap: bool, icmp_ports: bool = True
) -> Counter[tuple]:
    rows: Counter[tuple] = Counter()
    c = b.columns
    mult = c["sampling_rate"].astype(np.uint64) if scale else np.ones(len(b), np.uint64)
    for i in range(len(b)):
        first, last = int(c["flow_start_ms"][i]), int(c["flow_end_ms"][i])
        if not ordered_times:
            first, last = min(first, last), max(first, last)
        if wrap:
            first, last = first % 2**32, last % 2**32
        proto = int(c["protocol"][i])
        dport = int(c["dst_port"][i]) if icmp_ports or proto not in (1, 58) else -1
        rows[(addr_to_text(c["src_addr"][i]), addr_to_text(c["dst_addr"][i]),
              int(c["src_port"][i]), dport, proto,
              int(c["packets"][i] * mult[i]), int(c["bytes"][i] * mult[i]),
              int(c["reverse_packets"][i]), int(c["reverse_bytes"][i]), first, last,
              int(c["tcp_flags"][i]))] += 1  # fmt: skip
    return rows
