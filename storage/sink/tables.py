"""What the sink writes: Kafka message values -> columns of one ClickHouse table.

One :class:`TableSpec` per topic: ``parse`` turns one message value into a
*part* (columns of that message's rows) or raises :class:`BadMessage` with a
short reason; ``combine`` concatenates the parts of a batch into the columns
of one insert. Pure functions, no I/O: the sink (:mod:`storage.sink.loop`) does the
Kafka and ClickHouse work around them.

Errors::

    BadMessage(ValueError)   a message that can never be inserted; ``reason``
                             is a short label for metrics (bad_json,
                             wrong_schema, truncated, missing_field, bad_value)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from schemas import voipflows
from schemas.flowbatch import BatchFormatError, BatchSchemaError, BatchVersionError, text_to_addr16
from schemas.traffic import COUNTERS

#: A message's rows as columns (numpy or Arrow arrays), plus its row count.
Part = tuple[dict[str, Any], int]


class BadMessage(ValueError):
    """A message that can never be inserted; ``reason`` labels it for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TableSpec:
    topic: str
    table: str
    parse: Callable[[bytes], Part]
    #: Columns every part has (the sink checks the table has them at start).
    columns: tuple[str, ...]
    #: Keep only the first copy of a row per this key (None: keep all rows):
    #: a ``DateTime`` column first, then strings, integers or 16-byte
    #: addresses (``S16`` columns, ``IPv6`` in the table).
    first_copy_key: tuple[str, ...] | None = None
    #: Table that holds the rows already kept, for ``first_copy_key``.
    first_copy_table: str | None = None


def combine(parts: Sequence[Part]) -> tuple[dict[str, Any], int]:
    """Concatenate parts column by column (one copy per column, no per-row work)."""
    if not parts:
        return {}, 0
    names = list(parts[0][0])
    out: dict[str, Any] = {}
    for name in names:
        cols = [p[0][name] for p in parts]
        if isinstance(cols[0], pa.Array | pa.ChunkedArray):
            out[name] = pa.concat_arrays(
                [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols]
            )
        elif isinstance(cols[0], np.ndarray):
            out[name] = np.concatenate(cols)
        else:
            merged: list[Any] = []
            for c in cols:
                merged.extend(c)
            out[name] = merged
    return out, sum(n for _, n in parts)


def with_offsets(part: Part, partition: int, offset: int) -> Part:
    """The part with ``kafka_partition``/``kafka_offset`` columns (servers without tokens)."""
    cols, n = part
    cols = dict(cols)
    cols["kafka_partition"] = np.full(n, partition, dtype=np.uint32)
    cols["kafka_offset"] = np.full(n, offset, dtype=np.uint64)
    return cols, n


# -- voip-flows.v1 ---------------------------------------------------------

_MS = "datetime64[ms]"

FLOW_COLUMNS = (
    "time_received",
    "flow_start",
    "flow_end",
    *[
        name
        for name in voipflows.VOIP_FLOW_COLUMNS
        if name not in ("time_received_ms", "flow_start_ms", "flow_end_ms")
    ],
)


def parse_voip_flows(value: bytes) -> Part:
    """A voip-flows.v1 batch -> flows_voip columns (times as ``datetime64[ms]``)."""
    try:
        batch = voipflows.decode(value)
    except BatchVersionError as exc:
        raise BadMessage("wrong_schema", str(exc)) from exc
    except BatchSchemaError as exc:
        raise BadMessage("bad_columns", str(exc)) from exc
    except BatchFormatError as exc:
        raise BadMessage("truncated", str(exc)) from exc
    cols: dict[str, Any] = {}
    for name in voipflows.VOIP_FLOW_COLUMNS:
        col = batch.columns[name]
        if name.endswith("_ms"):
            cols[name[: -len("_ms")]] = col.view(_MS)
        else:
            cols[name] = col
    return cols, batch.num_rows


# -- JSON topics -----------------------------------------------------------


def _load_json(value: bytes, schema: str) -> dict[str, Any]:
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage("bad_json", str(exc)) from exc
    if not isinstance(obj, dict):
        raise BadMessage("bad_json", f"expected an object, got {type(obj).__name__}")
    if obj.get("schema") != schema:
        raise BadMessage("wrong_schema", f"schema is {obj.get('schema')!r}, expected {schema!r}")
    return obj


def _int(obj: dict[str, Any], key: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    if key not in obj:
        raise BadMessage("missing_field", key)
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadMessage("bad_value", f"{key}={v!r}")
    return v


def _float(obj: dict[str, Any], key: str) -> float:
    if key not in obj:
        raise BadMessage("missing_field", key)
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise BadMessage("bad_value", f"{key}={v!r}")
    return float(v)


def _str(obj: dict[str, Any], key: str) -> str:
    if key not in obj:
        raise BadMessage("missing_field", key)
    v = obj[key]
    if not isinstance(v, str):
        raise BadMessage("bad_value", f"{key}={v!r}")
    return v


USAGE_COLUMNS = (
    "window_start",
    "window_s",
    "city",
    "region",
    "country",
    "app",
    "flows",
    "packets",
    "bytes",
    "subscribers",
    "subscriber_hashes",
    "call_seconds",
    "voip_share",
    "produced",
)


def parse_usage(value: bytes) -> Part:
    """A voip-usage.v1 window -> one voip_usage_in row."""
    obj = _load_json(value, "voip-usage.v1")
    hashes = obj.get("subscriber_hashes")
    if not isinstance(hashes, list):
        raise BadMessage("missing_field" if hashes is None else "bad_value", "subscriber_hashes")
    try:
        hash_arr = np.array(hashes, dtype=np.uint64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadMessage("bad_value", f"subscriber_hashes: {exc}") from exc
    if hash_arr.ndim != 1:
        raise BadMessage("bad_value", "subscriber_hashes is not a flat list")
    window_start_ms = _int(obj, "window_start_ms")
    cols: dict[str, Any] = {
        "window_start": np.array([window_start_ms // 1000], dtype="datetime64[s]"),
        "window_s": np.array([_int(obj, "window_s", 1, 2**32 - 1)], dtype=np.uint32),
        "city": pa.array([_str(obj, "city")], pa.string()),
        "region": pa.array([_str(obj, "region")], pa.string()),
        "country": pa.array([_str(obj, "country")], pa.string()),
        "app": pa.array([_str(obj, "app")], pa.string()),
        "flows": np.array([_int(obj, "flows")], dtype=np.uint64),
        "packets": np.array([_int(obj, "packets")], dtype=np.uint64),
        "bytes": np.array([_int(obj, "bytes")], dtype=np.uint64),
        "subscribers": np.array([_int(obj, "subscribers")], dtype=np.uint64),
        "subscriber_hashes": pa.array([hash_arr], pa.list_(pa.uint64())),
        "call_seconds": np.array([_float(obj, "call_seconds")], dtype=np.float64),
        "voip_share": np.array([_float(obj, "voip_share")], dtype=np.float64),
        "produced": np.array([_int(obj, "produced_ms")], dtype=np.uint64).view(_MS),
    }
    return cols, 1


HEALTH_COLUMNS = (
    "ts",
    "collector",
    "exporter",
    "observation_domain_id",
    "netflow_version",
    "packets",
    "records",
    "bytes",
    "decode_errors",
    "templates",
    "records_held",
    "sequence_lost",
    "exporter_restarts",
    "sampling_rate",
    "kernel_drops",
)

_HEALTH_INTS: dict[str, tuple[str, int]] = {
    "observation_domain_id": ("u4", 2**32 - 1),
    "netflow_version": ("u1", 255),
    "packets": ("u8", 2**64 - 1),
    "records": ("u8", 2**64 - 1),
    "bytes": ("u8", 2**64 - 1),
    "decode_errors": ("u8", 2**64 - 1),
    "templates": ("u4", 2**32 - 1),
    "records_held": ("u8", 2**64 - 1),
    "sequence_lost": ("u8", 2**64 - 1),
    "exporter_restarts": ("u4", 2**32 - 1),
    "sampling_rate": ("u4", 2**32 - 1),
    "kernel_drops": ("u8", 2**64 - 1),
}


def parse_health(value: bytes) -> Part:
    """An exporter-health.v1 report -> one exporter_health row."""
    obj = _load_json(value, "exporter-health.v1")
    try:
        exporter = text_to_addr16(_str(obj, "exporter"))
    except ValueError as exc:
        if isinstance(exc, BadMessage):
            raise
        raise BadMessage("bad_value", f"exporter={obj.get('exporter')!r}") from exc
    cols: dict[str, Any] = {
        "ts": np.array([_int(obj, "ts_ms")], dtype=np.uint64).view(_MS),
        "collector": pa.array([_str(obj, "collector")], pa.string()),
        "exporter": np.array([exporter], dtype="S16"),
    }
    for key, (dt, hi) in _HEALTH_INTS.items():
        cols[key] = np.array([_int(obj, key, 0, hi)], dtype=dt)
    return cols, 1


TRAFFIC_COLUMNS = (
    "window_start",
    "window_s",
    "exporter",
    "observation_domain_id",
    *COUNTERS,
    "produced",
)


def parse_traffic(value: bytes) -> Part:
    """A traffic.v1 window -> one exporter_traffic_1m row."""
    obj = _load_json(value, "traffic.v1")
    try:
        exporter = text_to_addr16(_str(obj, "exporter"))
    except ValueError as exc:
        if isinstance(exc, BadMessage):
            raise
        raise BadMessage("bad_value", f"exporter={obj.get('exporter')!r}") from exc
    cols: dict[str, Any] = {
        "window_start": np.array([_int(obj, "window_start_ms") // 1000], dtype="datetime64[s]"),
        "window_s": np.array([_int(obj, "window_s", 1, 2**32 - 1)], dtype=np.uint32),
        "exporter": np.array([exporter], dtype="S16"),
        "observation_domain_id": np.array(
            [_int(obj, "observation_domain_id", 0, 2**32 - 1)], dtype=np.uint32
        ),
    }
    for key in COUNTERS:
        cols[key] = np.array([_int(obj, key)], dtype=np.uint64)
    cols["produced"] = np.array([_int(obj, "produced_ms")], dtype=np.uint64).view(_MS)
    return cols, 1


def default_specs(
    voip_flows_topic: str = "voip-flows.v1",
    usage_topic: str = "voip-usage.v1",
    health_topic: str = "exporter-health.v1",
    *,
    traffic_topic: str = "traffic.v1",
    flows_table: str = "flows_voip",
) -> list[TableSpec]:
    """The sink's topics and the tables they fill."""
    return [
        TableSpec(voip_flows_topic, flows_table, parse_voip_flows, FLOW_COLUMNS),
        TableSpec(
            usage_topic,
            "voip_usage_in",
            parse_usage,
            USAGE_COLUMNS,
            first_copy_key=("window_start", "city", "app"),
            first_copy_table="voip_usage_1m",
        ),
        TableSpec(health_topic, "exporter_health", parse_health, HEALTH_COLUMNS),
        TableSpec(
            traffic_topic,
            "exporter_traffic_1m",
            parse_traffic,
            TRAFFIC_COLUMNS,
            first_copy_key=("window_start", "exporter", "observation_domain_id"),
            first_copy_table="exporter_traffic_1m",
        ),
    ]
