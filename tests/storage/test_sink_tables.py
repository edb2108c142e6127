"""Message -> column conversion of the sink, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from tests.storage.sinkdata import flow_batch
from tests.storage.sinkdata import random_voip_batch as sample
from voipflow.schemas import voipflows
from voipflow.schemas.flowbatch import SCHEMA_METADATA_KEY, text_to_addr16, write_single_batch
from voipflow.storage.sink.tables import (
    FLOW_COLUMNS,
    HEALTH_COLUMNS,
    BadMessage,
    combine,
    parse_health,
    parse_usage,
    parse_voip_flows,
    with_offsets,
)


def usage(**over: object) -> bytes:
    msg = {
        "schema": "voip-usage.v1",
        "window_start_ms": 1_700_000_040_000,
        "window_s": 60,
        "city": "Oslo",
        "region": "Oslo",
        "country": "NO",
        "app": "teams",
        "flows": 3,
        "packets": 300,
        "bytes": 30000,
        "subscribers": 2,
        "subscriber_hashes": [1, 2**64 - 1],
        "call_seconds": 59.5,
        "voip_share": 0.25,
        "produced_ms": 1_700_000_105_000,
    }
    msg.update(over)
    return json.dumps(msg).encode()


def health(**over: object) -> bytes:
    msg = {
        "schema": "exporter-health.v1",
        "ts_ms": 1_700_000_000_000,
        "collector": "host:1",
        "exporter": "192.0.2.1",
        "observation_domain_id": 7,
        "netflow_version": 10,
        "packets": 5,
        "records": 50,
        "bytes": 5000,
        "decode_errors": 0,
        "templates": 2,
        "records_held": 0,
        "sequence_lost": 1,
        "exporter_restarts": 0,
        "sampling_rate": 10,
        "kernel_drops": 0,
    }
    msg.update(over)
    return json.dumps(msg).encode()


def test_voip_flows_become_table_columns() -> None:
    batch = sample(5)
    cols, n = parse_voip_flows(voipflows.encode(batch))
    assert n == 5
    assert cols["time_received"].dtype == np.dtype("datetime64[ms]")
    assert np.array_equal(cols["time_received"].astype(np.uint64), batch["time_received_ms"])
    assert "time_received_ms" not in cols
    assert np.array_equal(cols["subscriber_addr"], batch["subscriber_addr"])


def test_role_becomes_a_column_and_v1_rows_get_an_unknown_role() -> None:
    cols, n = parse_voip_flows(flow_batch(6, 0))
    assert "role" in FLOW_COLUMNS and set(cols) == set(FLOW_COLUMNS)
    assert cols["role"].to_pylist() == [*voipflows.ROLES, "signalling"]
    v2 = voipflows.decode(flow_batch(2, 0)).to_arrow()
    keep = [i for i, f in enumerate(v2.schema) if f.name != "role"]
    schema = pa.schema(
        [v2.schema.field(i) for i in keep],
        metadata={SCHEMA_METADATA_KEY: voipflows.SCHEMA_V1.encode()},
    )
    v1 = pa.RecordBatch.from_arrays([v2.column(i) for i in keep], schema=schema)
    cols, n = parse_voip_flows(write_single_batch(v1))
    assert n == 2 and cols["role"].to_pylist() == ["", ""]


def test_usage_and_health_rows() -> None:
    cols, n = parse_usage(usage())
    assert n == 1
    assert cols["window_start"][0] == np.datetime64(1_700_000_040, "s")
    assert cols["subscriber_hashes"].to_pylist() == [[1, 2**64 - 1]]
    hcols, _ = parse_health(health())
    assert hcols["exporter"][0] == text_to_addr16("192.0.2.1")
    assert hcols["sequence_lost"].dtype == np.uint64


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (usage(schema="voip-usage.v2"), "wrong_schema"),
        (usage(city=None), "bad_value"),
        (usage(flows=-1), "bad_value"),
        (usage(subscriber_hashes=[1, "x"]), "bad_value"),
        (usage(voip_share=float("nan")), "bad_value"),
        (json.dumps({"schema": "voip-usage.v1"}).encode(), "missing_field"),
    ],
)
def test_bad_usage_messages(value: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as exc:
        parse_usage(value)
    assert exc.value.reason == reason


def test_health_row_has_the_contracts_fields_as_columns() -> None:
    cols, n = parse_health(health(kernel_drops=2**64 - 1, netflow_version=255))
    assert n == 1
    assert list(cols) == list(HEALTH_COLUMNS)
    assert cols["ts"][0] == np.datetime64(1_700_000_000_000, "ms")
    assert cols["kernel_drops"][0] == 2**64 - 1
    assert (cols["netflow_version"].dtype, cols["templates"].dtype) == (np.uint8, np.uint32)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe", "bad_json"),
        (health(schema="exporter-health.v2"), "wrong_schema"),
        (json.dumps({"schema": "exporter-health.v1", "ts_ms": 1}).encode(), "missing_field"),
        (health(netflow_version=256), "bad_value"),
        (health(records=-1), "bad_value"),
        (health(records=1.5), "bad_value"),
        (health(unknown=1), "bad_value"),
        (health(exporter="not-an-address"), "bad_value"),
    ],
)
def test_bad_health_messages(value: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as exc:
        parse_health(value)
    assert exc.value.reason == reason


def test_usage_refuses_what_its_columns_cannot_hold() -> None:
    with pytest.raises(BadMessage) as exc:
        parse_usage(usage(window_s=2**32))
    assert exc.value.reason == "bad_value"
    with pytest.raises(BadMessage) as exc:
        parse_usage(usage(call_seconds=float("inf")))
    assert exc.value.reason == "bad_value"


def test_bad_health_and_flow_messages() -> None:
    with pytest.raises(BadMessage) as exc:
        parse_health(health(exporter="not-an-address"))
    assert exc.value.reason == "bad_value"
    data = voipflows.encode(sample(4))
    with pytest.raises(BadMessage) as exc:
        parse_voip_flows(data[:-30])
    assert exc.value.reason == "truncated"
    with pytest.raises(BadMessage) as exc:
        parse_voip_flows(usage())
    assert exc.value.reason == "truncated"


def test_combine_and_offsets() -> None:
    a = with_offsets(parse_usage(usage(city="A")), 3, 10)
    b = with_offsets(parse_usage(usage(city="B")), 3, 11)
    cols, n = combine([a, b])
    assert n == 2
    assert cols["city"].to_pylist() == ["A", "B"]
    assert cols["kafka_offset"].tolist() == [10, 11]
    assert cols["kafka_partition"].tolist() == [3, 3]
    assert cols["subscriber_hashes"].to_pylist() == [[1, 2**64 - 1]] * 2
