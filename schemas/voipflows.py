"""The ``voip-flows.v1`` batch: classified VoIP flows, one Kafka message per batch.

Same framing as ``flows.v1`` (:mod:`voipflow.schemas.flowbatch`): one Arrow IPC stream
holding exactly one record batch, schema metadata
``voipflow.schema = "voip-flows.v1"``. The worker publishes only flows it
classified as VoIP (``is_voip = 1``), already enriched with the subscriber's
city and oriented from the subscriber's point of view.

Contract (version 1)
--------------------
* Every column of :data:`VOIP_FLOW_COLUMNS` is present, in that order,
  non-null, with exactly that Arrow type. Readers ignore further columns whose
  names start with ``x_``.
* Addresses are 16-byte big-endian values, IPv4 mapped into ``::ffff:0:0/96``
  as in ``flows.v1``. ``subscriber_addr`` is the address inside the operator's
  home networks, ``peer_addr`` the other side.
* ``direction`` is 0 when the subscriber sent the record's packets
  (upstream), 1 when the subscriber received them (downstream).
* Counters are unscaled, as exported; multiply by ``sampling_rate`` for
  estimates.
* ``evidence`` is a bitmask whose bits are documented in
  :mod:`voipflow.streams.classify` (``Evidence``); ``classifier_version`` names the
  rules that produced ``app``, ``is_voip``, ``confidence`` and ``evidence``.
* The Kafka message key is the city (text), so one city's flows stay on one
  partition. Headers: ``schema=voip-flows.v1``.

Errors (shared with ``flows.v1``)::

    BatchError
     +-- BatchFormatError    bytes that are not a valid Arrow stream / batch
     +-- BatchVersionError   a valid batch of another schema or version
     +-- BatchSchemaError    missing column or wrong column type
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.schemas.flowbatch import (
    ARROW_TYPES,
    SCHEMA_METADATA_KEY,
    BatchError,
    BatchFormatError,
    BatchSchemaError,
    BatchVersionError,
    core_columns,
    encode_view,
    read_single_batch,
    write_single_batch,
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
    "make_voip_batch",
]

SCHEMA_NAME = "voip-flows.v1"

#: Columns: name -> (dtype code, meaning). Order is part of the contract.
VOIP_FLOW_COLUMNS: dict[str, tuple[str, str]] = {
    "time_received_ms": ("u8", "when the collector received the export packet"),
    "flow_start_ms": ("u8", "first packet of the flow"),
    "flow_end_ms": ("u8", "last packet of the flow"),
    "exporter_addr": ("S16", "address the export packet came from"),
    "observation_domain_id": ("u4", "IPFIX domain / v9 source id"),
    "ip_version": ("u1", "4 or 6"),
    "subscriber_addr": ("S16", "the side inside the operator's home networks"),
    "peer_addr": ("S16", "the other side"),
    "subscriber_port": ("u2", "transport port on the subscriber side"),
    "peer_port": ("u2", "transport port on the peer side"),
    "protocol": ("u1", "IP protocol number"),
    "direction": ("u1", "0 subscriber sent it (upstream), 1 subscriber received it"),
    "packets": ("u8", "packets, unscaled"),
    "bytes": ("u8", "layer-3 bytes, unscaled"),
    "reverse_packets": ("u8", "RFC 5103 reverse packets (0 if unidirectional)"),
    "reverse_bytes": ("u8", "RFC 5103 reverse bytes (0 if unidirectional)"),
    "sampling_rate": ("u4", "1-in-N packet sampling that applied (1 = unsampled)"),
    "city": ("str", "subscriber's city"),
    "region": ("str", "subscriber's region"),
    "country": ("str", "subscriber's country (ISO 3166-1 alpha-2 when known)"),
    "peer_asn": ("u4", "autonomous system of the peer (0 = unknown)"),
    "app": ("str", "lower-case short application name (teams, whatsapp, sip, ...)"),
    "is_voip": ("u1", "1 when classified as VoIP"),
    "confidence": ("f4", "0..1, how sure the classifier is"),
    "evidence": ("u4", "bitmask of the evidence that was found (streams.classify)"),
    "classifier_version": ("str", "version of the classification rules"),
}

VOIP_FLOW_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field(name, ARROW_TYPES[dt], nullable=False)
        for name, (dt, _) in VOIP_FLOW_COLUMNS.items()
    ],
    metadata={SCHEMA_METADATA_KEY: SCHEMA_NAME.encode()},
)

EXTRA_PREFIX = "x_"


@dataclass(slots=True)
class VoipFlowBatch:
    """Classified VoIP flows as columns: numpy arrays, strings as Arrow arrays."""

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
            arrays.append(col if isinstance(col, pa.Array) else pa.array(col, ARROW_TYPES[dt]))
        return pa.RecordBatch.from_arrays(arrays, schema=VOIP_FLOW_SCHEMA)


def _default(dt: str, n: int) -> Any:
    if dt == "str":
        return pa.array([""] * n, type=pa.string())
    if dt == "S16":
        return np.zeros(n, dtype="S16")
    return np.zeros(n, dtype=np.dtype(dt).newbyteorder("="))


def make_voip_batch(columns: Mapping[str, Any]) -> VoipFlowBatch:
    """Build a batch; absent columns get 0 / '' (``sampling_rate`` 1).

    Raises :class:`BatchSchemaError` for columns of different lengths or an
    unknown column name.
    """
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise BatchSchemaError(f"columns differ in length: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    cols: dict[str, Any] = {}
    for name, (dt, _) in VOIP_FLOW_COLUMNS.items():
        if name not in columns:
            cols[name] = _default(dt, n)
            if name == "sampling_rate":
                cols[name][:] = 1
            continue
        col = columns[name]
        if dt == "str":
            cols[name] = col if isinstance(col, pa.Array) else pa.array(list(col), pa.string())
        elif dt == "S16":
            cols[name] = np.asarray(col, dtype="S16")
        else:
            cols[name] = np.asarray(col).astype(dt, copy=False)
    unknown = set(columns) - set(VOIP_FLOW_COLUMNS)
    if unknown:
        raise BatchSchemaError(f"unknown columns {sorted(unknown)}")
    return VoipFlowBatch(cols, n)


def encode(batch: VoipFlowBatch, compression: str | None = None) -> bytes:
    """Serialise as one Arrow IPC stream (the Kafka message value).

    ``compression`` (``"lz4"`` or ``"zstd"``) compresses the stream's buffers
    with Arrow IPC body compression, which :func:`decode` (any Arrow reader)
    undoes by itself; None leaves them plain.
    """
    if compression is None:
        return write_single_batch(batch.to_arrow())
    return bytes(encode_view(batch.to_arrow(), compression))


def decode(data: bytes | memoryview) -> VoipFlowBatch:
    """Parse a Kafka message value; numeric columns are zero-copy numpy views."""
    rb = read_single_batch(data, SCHEMA_NAME)
    return VoipFlowBatch(core_columns(rb, VOIP_FLOW_COLUMNS), rb.num_rows)
