"""voip-flows.v2 (and v1) batches and voip-usage.v1 messages: round trips and refusals."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipflow.schemas import flowbatch as fb
from voipflow.schemas import usage
from voipflow.schemas import voipflows as vf


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 40), conf=st.floats(0, 1, width=32))
def test_round_trip_keeps_every_value(n: int, conf: float) -> None:
    sub = fb.ipv4_to_addr16(np.arange(n, dtype=np.uint32) + 0x0A010000)
    batch = vf.make_voip_batch(
        {
            "subscriber_addr": sub,
            "packets": np.arange(n, dtype=np.uint64) * 2**33,
            "city": pa.array(["Berlin"] * n),
            "app": ["teams"] * n,
            "confidence": np.full(n, conf, dtype=np.float32),
            "evidence": np.full(n, 0xFFFFFFFF, dtype=np.uint32),
        }
    )
    back = vf.decode(vf.encode(batch))
    assert len(back) == n
    assert back["subscriber_addr"].tobytes() == sub.tobytes()
    assert list(back["packets"]) == [i * 2**33 for i in range(n)]
    assert back["city"].to_pylist() == ["Berlin"] * n
    assert back["app"].to_pylist() == ["teams"] * n
    assert list(back["sampling_rate"]) == [1] * n
    assert np.allclose(back["confidence"], conf)
    assert list(back["evidence"]) == [0xFFFFFFFF] * n


def _v1_message(n: int) -> bytes:
    """A voip-flows.v1 batch as workers before the role verdict wrote it."""
    rb = vf.make_voip_batch({"app": ["teams"] * n, "packets": list(range(n))}).to_arrow()
    keep = [i for i, f in enumerate(rb.schema) if f.name != "role"]
    schema = pa.schema(
        [rb.schema.field(i) for i in keep], metadata={fb.SCHEMA_METADATA_KEY: vf.SCHEMA_V1.encode()}
    )
    return fb.write_single_batch(
        pa.RecordBatch.from_arrays([rb.column(i) for i in keep], schema=schema)
    )


def test_role_round_trips_and_version_2_is_written() -> None:
    roles = ["media", "relay", "ice", "signalling", "control", ""]
    data = vf.encode(vf.make_voip_batch({"app": ["zoom"] * 6, "role": roles}))
    assert pa.ipc.open_stream(data).schema.metadata[fb.SCHEMA_METADATA_KEY] == b"voip-flows.v2"
    back = vf.decode(data)
    assert back["role"].to_pylist() == roles
    assert list(vf.VOIP_FLOW_COLUMNS).index("role") == list(vf.VOIP_FLOW_COLUMNS).index("app") + 1


def test_a_role_outside_the_contract_is_schema_error() -> None:
    data = vf.encode(vf.make_voip_batch({"role": ["media", "voice", "ice"]}))
    with pytest.raises(vf.BatchSchemaError, match="'voice'"):
        vf.decode(data)


def test_v1_batch_is_read_with_unknown_role() -> None:
    back = vf.decode(_v1_message(3))
    assert back["role"].to_pylist() == ["", "", ""]
    assert back["app"].to_pylist() == ["teams"] * 3
    assert list(back["packets"]) == [0, 1, 2]
    assert list(back.columns) == list(vf.VOIP_FLOW_COLUMNS)


def test_v1_batch_with_a_missing_column_is_schema_error() -> None:
    rb = pa.ipc.open_stream(_v1_message(2)).read_next_batch()
    drop = rb.schema.get_field_index("confidence")
    keep = [i for i in range(rb.num_columns) if i != drop]
    schema = pa.schema([rb.schema.field(i) for i in keep], metadata=rb.schema.metadata)
    bad = pa.RecordBatch.from_arrays([rb.column(i) for i in keep], schema=schema)
    with pytest.raises(vf.BatchSchemaError, match="confidence"):
        vf.decode(fb.write_single_batch(bad))


def test_evidence_bits_are_distinct_powers_of_two() -> None:
    bits = [int(e) for e in vf.Evidence]
    assert all(b & (b - 1) == 0 for b in bits)
    assert len(set(bits)) == len(bits) == 25


def test_flows_v1_batch_is_refused_as_other_version() -> None:
    with pytest.raises(vf.BatchVersionError):
        vf.decode(fb.encode(fb.make_batch({"packets": [1]})))


def test_truncated_and_garbage_are_errors() -> None:
    data = vf.encode(vf.make_voip_batch({"packets": list(range(50))}))
    for cut in (0, 7, len(data) // 2, len(data) - 5):
        with pytest.raises(vf.BatchError):
            vf.decode(data[:cut])


def test_wrong_type_is_schema_error() -> None:
    rb = vf.make_voip_batch({"packets": [1]}).to_arrow()
    cols = [rb.column(i) for i in range(rb.num_columns)]
    idx = rb.schema.get_field_index("confidence")
    cols[idx] = pa.array([0.5], pa.float64())
    fields = list(rb.schema)
    fields[idx] = pa.field("confidence", pa.float64())
    bad = pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields, metadata=rb.schema.metadata))
    with pytest.raises(vf.BatchSchemaError):
        vf.decode(fb.write_single_batch(bad))


def test_unknown_column_is_refused() -> None:
    with pytest.raises(vf.BatchSchemaError):
        vf.make_voip_batch({"cty": ["x"]})


def _usage() -> dict[str, object]:
    return {
        "schema": "voip-usage.v1",
        "window_start_ms": 1_700_000_040_000,
        "window_s": 60,
        "city": "Berlin",
        "region": "Berlin",
        "country": "DE",
        "app": "whatsapp",
        "flows": 3,
        "packets": 300,
        "bytes": 60000,
        "subscribers": 2,
        "subscriber_hashes": [1, 2**64 - 1],
        "call_seconds": 12.5,
        "voip_share": 0.25,
        "produced_ms": 1_700_000_100_000,
    }


def test_usage_round_trip_and_key() -> None:
    msg = _usage()
    assert usage.decode_usage(usage.encode_usage(msg)) == msg
    assert usage.usage_key("Berlin", "whatsapp", 60000) == "Berlin|whatsapp|60000"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"schema": "voip-usage.v0"}, usage.UsageVersionError),
        ({"flows": -1}, usage.UsageError),
        ({"flows": 1.5}, usage.UsageError),
        ({"voip_share": 1.5}, usage.UsageError),
        ({"subscriber_hashes": [2**64]}, usage.UsageError),
        ({"city": ""}, usage.UsageError),
        ({"extra": 1}, usage.UsageError),
        ({"bytes": True}, usage.UsageError),
    ],
)
def test_usage_refusals(change: dict[str, object], error: type[Exception]) -> None:
    msg = {**_usage(), **change}
    with pytest.raises(error):
        usage.encode_usage(msg)


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (2**64, "[5000]"),
        (-1, "[5000]"),
        (True, "[5000]"),
        (3.0, "[5000]"),
        ("7", "[5000]"),
    ],
)
def test_a_bad_hash_in_a_long_list_is_named_by_its_place(bad: object, where: str) -> None:
    """A whole array of plain integers is checked at once; one bad element among
    thousands is still refused, and the error names its index."""
    hashes: list[object] = list(range(10_000))
    assert usage.decode_usage(usage.encode_usage({**_usage(), "subscriber_hashes": hashes}))
    hashes[5000] = bad
    with pytest.raises(usage.UsageError) as caught:
        usage.validate_usage({**_usage(), "subscriber_hashes": hashes})
    assert f"subscriber_hashes{where}" in str(caught.value)


def test_usage_missing_field_and_garbage() -> None:
    msg = _usage()
    del msg["call_seconds"]
    with pytest.raises(usage.UsageError, match="call_seconds"):
        usage.validate_usage(msg)
    with pytest.raises(usage.UsageFormatError):
        usage.decode_usage(b"{not json")
    with pytest.raises(usage.UsageFormatError):
        usage.decode_usage(json.dumps([1]))


def test_schema_file_lists_every_required_field_as_property() -> None:
    schema = usage.usage_schema()
    assert set(schema["required"]) == set(schema["properties"])
