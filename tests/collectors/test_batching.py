"""From decoded batches to messages: concatenation, grouping by exporter, size limits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from voipflow.collectors.batching import (
    Accumulator,
    MessageEncoder,
    exporter_ranges,
)
from voipflow.collectors.codec.assemble import concat
from voipflow.schemas import flowbatch as fb


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


def test_message_encoder_cuts_by_bytes_and_by_rows_without_losing_a_row() -> None:
    batch = _batch(["192.0.2.1"] * 5000, extra=True)
    whole = fb.encode(batch)
    limit = len(whole) // 3
    msgs = MessageEncoder(limit).encode(batch)  # nothing learnt beforehand
    assert len(msgs) >= 3
    assert all(len(v) <= limit for v, _ in msgs)
    decoded = [fb.decode(v) for v, _ in msgs]
    assert [d.num_rows for d in decoded] == [n for _, n in msgs]
    packets = np.concatenate([d["packets"] for d in decoded])
    assert packets.tolist() == list(range(5000))
    by_rows = MessageEncoder(10 * len(whole), max_rows=1200).encode(batch)
    assert [n for _, n in by_rows] == [1200, 1200, 1200, 1200, 200]


def test_message_encoder_learns_the_record_size_and_cuts_before_encoding() -> None:
    enc = MessageEncoder(max_bytes=60_000, max_rows=100_000)
    assert enc.row_bytes == 0
    first = enc.encode(_batch(["192.0.2.1"] * 10))
    assert len(first) == 1 and enc.row_bytes == 0  # too few rows to learn from
    first = enc.encode(_batch(["192.0.2.1"] * 40))
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


def test_accumulator_size_counts_per_exporter_with_a_total_bound() -> None:
    """Each exporter's rows are a message of their own: many small exporters
    wait (up to the age or the total bound) instead of making tiny messages."""
    acc = Accumulator(max_records=10, max_delay_ms=500, total_factor=3)
    many = {fb.text_to_addr16(f"192.0.2.{i}"): 1 for i in range(1, 9)}
    acc.add(_batch([fb.addr_to_text(e) for e in many]), 100.0, many)
    acc.add(_batch([fb.addr_to_text(e) for e in many]), 100.1, many)
    assert acc.records == 16 and not acc.full() and not acc.due(100.2)
    acc.add(_batch(["192.0.2.1"] * 8), 100.2, {fb.text_to_addr16("192.0.2.1"): 8})
    assert acc.full()  # 192.0.2.1 has 10 rows waiting: a full message
    assert acc.take() is not None and not acc.full()
    for t in range(3):
        acc.add(_batch([fb.addr_to_text(e) for e in many]), 101.0 + t / 10, many)
        acc.add(_batch([fb.addr_to_text(e) for e in many]), 101.0 + t / 10, many)
    assert acc.records == 48 and acc.full()  # none has 10, all together 30 or more
    assert acc.due(101.3)


def test_small_messages_are_not_compressed_big_ones_are() -> None:
    enc = MessageEncoder(1_000_000, compression="lz4")
    small = enc.encode(_batch(["192.0.2.1"] * 5))
    big = enc.encode(_batch(["192.0.2.1"] * 500))
    for msgs, compressed in ((small, False), (big, True)):
        ((value, n),) = msgs
        reader = pa.ipc.open_stream(pa.py_buffer(value))
        batch = reader.read_next_batch()
        assert batch.num_rows == n
        # An uncompressed stream's body holds the buffers as they are.
        plain = fb.encode_view(batch, None).nbytes
        assert (len(value) < plain) == compressed
        assert fb.decode(value)["packets"].tolist() == list(range(n))


def test_exporter_ranges_take_the_batch_once_and_slice_it() -> None:
    exporters = ["192.0.2.2", "2001:db8::1", "192.0.2.2", "192.0.2.1", "2001:db8::1"]
    grouped, ranges = exporter_ranges(_batch(exporters))
    assert [(fb.addr_to_text(e), a, b) for e, a, b in ranges] == [
        ("192.0.2.1", 0, 1),
        ("192.0.2.2", 1, 3),
        ("2001:db8::1", 3, 5),
    ]
    assert grouped["packets"].tolist() == [3, 0, 2, 1, 4]
    rb = grouped.to_arrow()
    msgs = MessageEncoder(1_000_000).encode(rb.slice(1, 2))
    assert [fb.decode(v)["packets"].tolist() for v, _ in msgs] == [[0, 2]]
    assert exporter_ranges(fb.make_batch({}))[1] == []
