"""From decoded batches to messages: concatenation, split by exporter, size limits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from collectors.batching import (
    Accumulator,
    MessageEncoder,
    concat,
    encode_sized,
    split_by_exporter,
)
from schemas import flowbatch as fb


def _batch(exporters: list[str], start: int = 0, extra: bool = False) -> fb.FlowBatch:
    n = len(exporters)
    cols = {
        "exporter_addr": np.array([fb.text_to_addr16(e) for e in exporters], dtype="S16"),
        "src_addr": fb.ipv4_to_addr16(np.arange(start, start + n, dtype=np.uint32)),
        "packets": np.arange(start, start + n, dtype=np.uint64),
        "application_name": pa.array([f"app{i}" for i in range(start, start + n)]),
    }
    extras = {"ie_9_1": pa.array([bytes([i % 256]) * 2 for i in range(n)])} if extra else None
    return fb.make_batch(cols, extras)


def test_concat_keeps_rows_in_order_and_fills_missing_extras_with_nulls() -> None:
    a = _batch(["192.0.2.1"] * 3, 0, extra=True)
    b = _batch(["192.0.2.2"] * 2, 3)
    out = concat([a, fb.make_batch({}), b])
    assert out.num_rows == 5
    assert out["packets"].tolist() == [0, 1, 2, 3, 4]
    assert out["application_name"].to_pylist() == [f"app{i}" for i in range(5)]
    assert out.extras["ie_9_1"].to_pylist() == [b"\0\0", b"\1\1", b"\2\2", None, None]
    # The result is a valid flows.v1 batch.
    back = fb.decode(fb.encode(out))
    assert back["packets"].tolist() == [0, 1, 2, 3, 4]


def test_split_by_exporter_groups_rows_and_keeps_their_order() -> None:
    exporters = ["192.0.2.2", "2001:db8::1", "192.0.2.2", "192.0.2.1", "2001:db8::1"]
    parts = dict(split_by_exporter(_batch(exporters)))
    assert {fb.addr_to_text(k) for k in parts} == {"192.0.2.1", "192.0.2.2", "2001:db8::1"}
    assert parts[fb.text_to_addr16("192.0.2.2")]["packets"].tolist() == [0, 2]
    assert parts[fb.text_to_addr16("2001:db8::1")]["packets"].tolist() == [1, 4]
    assert parts[fb.text_to_addr16("192.0.2.1")]["application_name"].to_pylist() == ["app3"]
    one = list(split_by_exporter(_batch(["192.0.2.9"] * 4)))
    assert len(one) == 1 and one[0][1].num_rows == 4
    assert list(split_by_exporter(fb.make_batch({}))) == []


def test_encode_sized_cuts_by_bytes_and_by_rows_without_losing_a_row() -> None:
    batch = _batch(["192.0.2.1"] * 5000, extra=True)
    whole = fb.encode(batch)
    limit = len(whole) // 3
    msgs = encode_sized(batch, limit)
    assert len(msgs) >= 3
    assert all(len(v) <= limit for v, _ in msgs)
    decoded = [fb.decode(v) for v, _ in msgs]
    assert [d.num_rows for d in decoded] == [n for _, n in msgs]
    packets = np.concatenate([d["packets"] for d in decoded])
    assert packets.tolist() == list(range(5000))
    by_rows = encode_sized(batch, 10 * len(whole), max_rows=1200)
    assert [n for _, n in by_rows] == [1200, 1200, 1200, 1200, 200]


def test_message_encoder_learns_the_record_size_and_cuts_before_encoding() -> None:
    enc = MessageEncoder(max_bytes=60_000, max_rows=100_000)
    assert enc.row_bytes == 0
    first = enc.encode(_batch(["192.0.2.1"] * 10))
    assert len(first) == 1 and enc.row_bytes > 0
    big = _batch(["192.0.2.1"] * 20_000, extra=True)
    msgs = enc.encode(big)
    assert all(len(v) <= 60_000 for v, _ in msgs)
    # Right-sized pieces: no piece far below the limit except the last.
    assert all(len(v) > 30_000 for v, _ in msgs[:-1])
    packets = np.concatenate([fb.decode(v)["packets"] for v, _ in msgs])
    assert packets.tolist() == list(range(20_000))


def test_accumulator_is_due_by_size_or_by_age() -> None:
    acc = Accumulator(max_records=10, max_delay_ms=500)
    assert not acc.due(0.0) and acc.deadline() is None and acc.take() is None
    acc.add(_batch(["192.0.2.1"] * 4), 100.0)
    assert not acc.due(100.2)
    assert acc.deadline() == 100.5
    assert acc.due(100.5)
    acc.add(_batch(["192.0.2.1"] * 6, 4), 100.3)
    assert acc.due(100.3)
    out = acc.take()
    assert out is not None and out["packets"].tolist() == list(range(10))
    assert acc.records == 0 and not acc.due(1000.0)
