"""The voip-flows.v1 contract: round trip, and refusal of anything else."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import flowbatch, voipflows


def sample(n: int, seed: int = 0) -> voipflows.VoipFlowBatch:
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    for name, (dt, _) in voipflows.VOIP_FLOW_COLUMNS.items():
        if dt == "S16":
            cols[name] = flowbatch.ipv4_to_addr16(rng.integers(0, 2**32, n, dtype=np.uint32))
        elif dt == "str":
            cols[name] = pa.array(rng.choice(["Oslo", "Bergen", "teams", ""], n).tolist())
        elif dt == "f4":
            cols[name] = rng.random(n).astype(np.float32)
        else:
            cols[name] = rng.integers(0, np.iinfo(dt).max, n, dtype=dt, endpoint=True)
    return voipflows.make_batch(cols)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 300), seed=st.integers(0, 2**16))
def test_round_trip(n: int, seed: int) -> None:
    batch = sample(n, seed)
    back = voipflows.decode(voipflows.encode(batch))
    assert back.num_rows == n
    for name, (dt, _) in voipflows.VOIP_FLOW_COLUMNS.items():
        a, b = batch[name], back[name]
        if dt == "str":
            assert a.to_pylist() == b.to_pylist()
        else:
            assert np.array_equal(a, b), name


def test_column_order_is_the_contract() -> None:
    assert list(voipflows.VOIP_FLOW_COLUMNS)[:4] == [
        "time_received_ms",
        "flow_start_ms",
        "flow_end_ms",
        "exporter_addr",
    ]
    assert list(voipflows.VOIP_FLOW_COLUMNS)[-1] == "classifier_version"
    assert len(voipflows.VOIP_FLOW_COLUMNS) == 26


def test_refuses_flows_v1_and_garbage() -> None:
    fb = flowbatch.make_batch({"packets": np.array([1], dtype=np.uint64)})
    with pytest.raises(voipflows.BatchVersionError):
        voipflows.decode(flowbatch.encode(fb))
    data = voipflows.encode(sample(10))
    with pytest.raises(voipflows.BatchFormatError):
        voipflows.decode(data[: len(data) // 2])
    with pytest.raises(voipflows.BatchFormatError):
        voipflows.decode(b"not arrow")


def test_wrong_type_and_missing_column() -> None:
    rb = sample(3).to_arrow()
    idx = rb.schema.get_field_index("bytes")
    bad = rb.set_column(idx, "bytes", pa.array([1, 2, 3], pa.int64()))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, bad.schema) as w:
        w.write_batch(bad)
    with pytest.raises(voipflows.BatchSchemaError, match="bytes"):
        voipflows.decode(sink.getvalue().to_pybytes())
    with pytest.raises(voipflows.BatchSchemaError, match="missing"):
        voipflows.make_batch({"bytes": [1]})
