"""The flows.v1 batch format: round trips, defaults and refusals."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipflow.schemas import flowbatch as fb


def test_defaults_are_the_documented_ones() -> None:
    batch = fb.make_batch({"packets": [3, 4]})
    assert list(batch["sampling_rate"]) == [1, 1]
    assert list(batch["flow_direction"]) == [255, 255]
    assert list(batch["bytes"]) == [0, 0]
    assert batch["application_name"].to_pylist() == ["", ""]


@settings(max_examples=50, deadline=None)
@given(
    v4=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=50),
    ports=st.integers(0, 65535),
)
def test_round_trip_keeps_every_value(v4: list[int], ports: int) -> None:
    n = len(v4)
    src = fb.ipv4_to_addr16(np.array(v4, dtype=np.uint32))
    dst = np.array([fb.text_to_addr16(f"2001:db8::{i:x}") for i in range(n)], dtype="S16")
    batch = fb.make_batch(
        {
            "src_addr": src,
            "dst_addr": dst,
            "src_port": np.full(n, ports),
            "packets": np.arange(n, dtype=np.uint64) * 2**40,
            "application_name": pa.array(["sip"] * n),
        },
        extras={"ie_9_1": pa.array([b"\x01\x02"] * n, pa.binary())},
    )
    back = fb.decode(fb.encode(batch))
    assert len(back) == n
    assert back["src_addr"].tobytes() == src.tobytes()
    assert back["dst_addr"].tobytes() == dst.tobytes()
    assert list(fb.addr16_to_ipv4(back["src_addr"])) == v4
    assert list(back["src_port"]) == [ports] * n
    assert list(back["packets"]) == [i * 2**40 for i in range(n)]
    assert back["application_name"].to_pylist() == ["sip"] * n
    assert back.extras["ie_9_1"].to_pylist() == [b"\x01\x02"] * n


def test_address_text_round_trip() -> None:
    for text in ("10.1.2.3", "2001:db8::1", "::ffff:0:1", "::"):
        raw = fb.text_to_addr16(text)
        assert len(raw) == 16
        assert fb.addr_to_text(raw) == (text if text != "::ffff:0:1" else "0.0.0.1")


def test_address_columns_keep_all_16_bytes_from_any_layout() -> None:
    """to_arrow shares a contiguous S16 buffer; strided and trailing-zero
    addresses come out byte for byte (compressed stream too)."""
    raw = np.array([fb.text_to_addr16(t) for t in ("10.0.0.1", "::", "2001:db8::", "::1")], "S16")
    strided = np.repeat(raw, 2)[::2]  # a non-contiguous view
    batch = fb.make_batch({"src_addr": raw, "dst_addr": raw[::-1]})
    batch.columns["exporter_addr"] = strided
    for value in (fb.encode(batch), fb.encode_view(batch, "lz4")):
        back = fb.decode(value)
        assert back["src_addr"].tobytes() == raw.tobytes()
        assert back["dst_addr"].tobytes() == raw[::-1].tobytes()
        assert back["exporter_addr"].tobytes() == raw.tobytes()
    assert fb.addr16_to_arrow(raw).to_pylist() == [bytes(r).ljust(16, b"\0") for r in raw]


def test_take_selects_rows() -> None:
    batch = fb.make_batch({"packets": [1, 2, 3], "application_name": pa.array(["a", "b", "c"])})
    sub = batch.take(np.array([True, False, True]))
    assert list(sub["packets"]) == [1, 3]
    assert sub["application_name"].to_pylist() == ["a", "c"]


@pytest.mark.parametrize("data", [b"", b"garbage", b"\xff\xff\xff\xff\x00\x00"])
def test_garbage_is_a_format_error(data: bytes) -> None:
    with pytest.raises(fb.BatchFormatError):
        fb.decode(data)


def test_other_version_is_refused() -> None:
    rb = fb.make_batch({"packets": [1]}).to_arrow()
    rb = rb.replace_schema_metadata({b"voipflow.schema": b"flows.v0"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rb.schema) as w:
        w.write_batch(rb)
    with pytest.raises(fb.BatchVersionError):
        fb.decode(sink.getvalue().to_pybytes())


def test_truncated_batch_is_a_format_error() -> None:
    data = fb.encode(fb.make_batch({"packets": list(range(100))}))
    for cut in (len(data) // 3, len(data) - 9):
        with pytest.raises(fb.BatchError):
            fb.decode(data[:cut])


def test_wrong_column_type_is_a_schema_error() -> None:
    rb = pa.RecordBatch.from_pydict(
        {"packets": pa.array([1], pa.int32())},
        metadata={b"voipflow.schema": b"flows.v1"},
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rb.schema) as w:
        w.write_batch(rb)
    with pytest.raises(fb.BatchSchemaError):
        fb.decode(sink.getvalue().to_pybytes())


def test_unknown_column_is_refused_at_build() -> None:
    with pytest.raises(fb.BatchSchemaError):
        fb.make_batch({"pakets": [1]})
