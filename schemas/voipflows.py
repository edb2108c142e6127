"""The ``voip-flows.v1`` batch: classified VoIP flows, one Kafka message per batch.

Same framing as ``flows.v1`` (:mod:`schemas.flowbatch`): an Arrow IPC stream
holding exactly one record batch, schema metadata
``voipflow.schema = "voip-flows.v1"``, addresses as 16-byte IPv4-mapped
values, counters unscaled with ``sampling_rate`` beside them, times in UTC
milliseconds. Every column of :data:`VOIP_FLOW_COLUMNS` is present, in that
order, non-null, with exactly that type; further columns starting with
``x_`` may follow and readers ignore the ones they do not know.

``direction`` is 0 when the subscriber sent the flow (upstream) and 1 when
the subscriber received it (downstream). ``app`` is a lower-case short name
(teams, whatsapp, sip, rtp, zoom, meet, signal, telegram, facetime, webex,
discord, viber, other_voip, ...); ``evidence`` is the classifier's bitmask
(documented in ``streams``), ``confidence`` is in 0..1.

Errors (shared with :mod:`schemas.flowbatch`)::

    BatchError
     +-- BatchFormatError    bytes that are not a valid Arrow stream / batch
     +-- BatchVersionError   a valid batch of another schema or version
     +-- BatchSchemaError    missing column, wrong column type, nulls
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from schemas.flowbatch import (
    ADDR_BYTES,
    SCHEMA_METADATA_KEY,
    BatchError,
    BatchFormatError,
    BatchSchemaError,
    BatchVersionError,
)

__all__ = [
    "SCHEMA_NAME",
    "VOIP_FLOW_COLUMNS",
    "VOIP_FLOW_SCHEMA",
    "BatchError",
    "BatchFormatError",
    "BatchSchemaError",
    "BatchVersionError",
    "VoipFlowBatch",
    "decode",
    "encode",
    "make_batch",
]

SCHEMA_NAME = "voip-flows.v1"

#: Columns: name -> (numpy dtype, meaning). Order is part of the contract.
VOIP_FLOW_COLUMNS: dict[str, tuple[str, str]] = {
    "time_received_ms": ("u8", "when the collector received the export packet"),
    "flow_start_ms": ("u8", "first packet of the flow"),
    "flow_end_ms": ("u8", "last packet of the flow"),
    "exporter_addr": ("S16", "address the export packet came from"),
    "observation_domain_id": ("u4", "IPFIX domain / v9 source id / v5 engine"),
    "ip_version": ("u1", "4 or 6"),
    "subscriber_addr": ("S16", "the subscriber's side of the flow"),
    "peer_addr": ("S16", "the far side of the flow"),
    "subscriber_port": ("u2", "transport port on the subscriber's side"),
    "peer_port": ("u2", "transport port on the peer's side"),
    "protocol": ("u1", "IP protocol number"),
    "direction": ("u1", "0 subscriber sent it (upstream), 1 received it (downstream)"),
    "packets": ("u8", "packets, as exported (not scaled by sampling)"),
    "bytes": ("u8", "bytes, as exported (not scaled by sampling)"),
    "reverse_packets": ("u8", "RFC 5103 reverse packets (0 if unidirectional)"),
    "reverse_bytes": ("u8", "RFC 5103 reverse bytes (0 if unidirectional)"),
    "sampling_rate": ("u4", "1-in-N packet sampling that applied (1 = unsampled)"),
    "city": ("str", "city of the subscriber"),
    "region": ("str", "region of the subscriber"),
    "country": ("str", "country of the subscriber"),
    "peer_asn": ("u4", "autonomous system of the peer (0 = unknown)"),
    "app": ("str", "lower-case application short name"),
    "is_voip": ("u1", "1 when classified as VoIP"),
    "confidence": ("f4", "classifier confidence, 0..1"),
    "evidence": ("u4", "bitmask of the evidence the classifier used"),
    "classifier_version": ("str", "version of the classifier that decided"),
}

_ARROW_TYPES: dict[str, pa.DataType] = {
    "u1": pa.uint8(),
    "u2": pa.uint16(),
    "u4": pa.uint32(),
    "u8": pa.uint64(),
    "f4": pa.float32(),
    "S16": pa.binary(ADDR_BYTES),
    "str": pa.string(),
}

VOIP_FLOW_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field(name, _ARROW_TYPES[dt], nullable=False)
        for name, (dt, _) in VOIP_FLOW_COLUMNS.items()
    ],
    metadata={SCHEMA_METADATA_KEY: SCHEMA_NAME.encode()},
)

EXTRA_PREFIX = "x_"


@dataclass(slots=True)
class VoipFlowBatch:
    """Classified VoIP flows as columns.

    Numeric and address columns are numpy arrays (addresses ``S16``); string
    columns are Arrow arrays (dictionary encoding is the reader's choice).
    """

    columns: dict[str, Any]
    num_rows: int

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]

    def to_arrow(self) -> pa.RecordBatch:
        arrays = []
        for name, (dt, _) in VOIP_FLOW_COLUMNS.items():
            col = self.columns[name]
            if isinstance(col, pa.Array):
                arrays.append(col)
            elif dt == "S16":
                arr = np.ascontiguousarray(col, dtype="S16")
                arrays.append(
                    pa.FixedSizeBinaryArray.from_buffers(
                        pa.binary(ADDR_BYTES), len(arr), [None, pa.py_buffer(arr)]
                    )
                )
            else:
                arrays.append(pa.array(col, type=_ARROW_TYPES[dt]))
        return pa.RecordBatch.from_arrays(arrays, schema=VOIP_FLOW_SCHEMA)


def make_batch(columns: Mapping[str, Any]) -> VoipFlowBatch:
    """Build a batch from every column of the contract (no defaults: all are required)."""
    missing = [name for name in VOIP_FLOW_COLUMNS if name not in columns]
    if missing:
        raise BatchSchemaError(f"missing columns {missing}")
    unknown = [n for n in columns if n not in VOIP_FLOW_COLUMNS]
    if unknown:
        raise BatchSchemaError(f"unknown columns {unknown}")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise BatchSchemaError(f"columns differ in length: {sorted(lengths)}")
    cols: dict[str, Any] = {}
    for name, (dt, _) in VOIP_FLOW_COLUMNS.items():
        col = columns[name]
        if dt == "str":
            cols[name] = col if isinstance(col, pa.Array) else pa.array(list(col), pa.string())
        elif dt == "S16":
            cols[name] = np.asarray(col, dtype="S16")
        else:
            cols[name] = np.asarray(col).astype(dt, copy=False)
    return VoipFlowBatch(cols, lengths.pop() if lengths else 0)


def encode(batch: VoipFlowBatch) -> bytes:
    """Serialise as one Arrow IPC stream (the Kafka message value)."""
    rb = batch.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rb.schema) as writer:
        writer.write_batch(rb)
    return sink.getvalue().to_pybytes()


def decode(data: bytes | memoryview) -> VoipFlowBatch:
    """Parse a Kafka message value; numeric columns are zero-copy numpy views."""
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        schema = reader.schema
        batches = list(reader)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise BatchFormatError(f"not an Arrow IPC stream: {exc}") from exc
    version = (schema.metadata or {}).get(SCHEMA_METADATA_KEY)
    if version != SCHEMA_NAME.encode():
        raise BatchVersionError(f"batch schema is {version!r}, expected {SCHEMA_NAME!r}")
    if len(batches) != 1:
        raise BatchFormatError(f"expected one record batch, found {len(batches)}")
    rb = batches[0]
    cols: dict[str, Any] = {}
    for name, (dt, _) in VOIP_FLOW_COLUMNS.items():
        idx = schema.get_field_index(name)
        if idx < 0:
            raise BatchSchemaError(f"missing column {name!r}")
        arr = rb.column(idx)
        if dt == "str" and pa.types.is_dictionary(arr.type):
            arr = arr.cast(pa.string())
        if arr.type != _ARROW_TYPES[dt]:
            raise BatchSchemaError(f"column {name!r} is {arr.type}, expected {_ARROW_TYPES[dt]}")
        if arr.null_count:
            raise BatchSchemaError(f"column {name!r} has nulls")
        if dt == "str":
            cols[name] = arr
        elif dt == "S16":
            buf = arr.buffers()[1]
            cols[name] = np.frombuffer(
                buf, dtype="S16", count=len(arr), offset=arr.offset * ADDR_BYTES
            )
        else:
            cols[name] = arr.to_numpy(zero_copy_only=True)
    return VoipFlowBatch(cols, rb.num_rows)
