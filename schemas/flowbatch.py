"""The ``flows.v1`` flow batch: one Kafka message carries many flow records.

A flow batch is an Apache Arrow IPC *stream* holding exactly one record batch.
Arrow was chosen over a home-grown layout because consumers in any language
(Go, Java, Rust, C++) can read it with a stock library, and because columns
move between numpy, Arrow and ClickHouse without a per-record copy.

Contract (version 1)
--------------------
* The schema metadata carries ``voipflow.schema = "flows.v1"``. A reader
  refuses any other value with :class:`BatchVersionError`.
* Every column of :data:`FLOW_COLUMNS` is present, in that order, non-null,
  with exactly that Arrow type. Writers fill what the exporter did not send
  with the documented default (0, or 255 for ``flow_direction``).
* Addresses are 16-byte big-endian values: IPv6 as is, IPv4 mapped into
  ``::ffff:0:0/96`` (RFC 4291 2.5.5.2), with ``ip_version`` telling which.
  This is also how ClickHouse's ``IPv6`` type stores an IPv4 address.
* Counters are as exported, **not** scaled by sampling. ``sampling_rate`` is
  the 1-in-N rate that applied to the record (1 when unsampled); consumers
  multiply (``packets * sampling_rate``) when they want estimates.
* Times are UTC milliseconds since the Unix epoch.
* Further columns may follow the core ones. Their names start with ``ie_``
  (``ie_<enterprise>_<id>``: an information element the collector does not
  model, kept as raw bytes) or ``x_`` (other optional data). Readers ignore
  columns they do not know.
* The Kafka message key is the exporter address (text), so one exporter's
  batches stay ordered on one partition. Headers: ``schema=flows.v1``.
* The stream's buffers may be compressed with Arrow IPC body compression
  (``LZ4_FRAME`` or ``ZSTD``, part of the Arrow IPC format); the collector
  does so by default instead of compressing the Kafka record batch. Arrow
  readers decompress by themselves (pyarrow always; Java with
  ``arrow-compression``, Rust with the ``lz4``/``zstd`` features of
  ``arrow-ipc``).

Errors::

    BatchError
     +-- BatchFormatError    bytes that are not a valid Arrow stream / batch
     +-- BatchVersionError   a valid batch of another schema or version
     +-- BatchSchemaError    missing column or wrong column type
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

SCHEMA_NAME = "flows.v1"
SCHEMA_METADATA_KEY = b"voipflow.schema"

ADDR_BYTES = 16

#: Core columns: name -> (numpy dtype, meaning). Order is part of the contract.
FLOW_COLUMNS: dict[str, tuple[str, str]] = {
    "time_received_ms": ("u8", "when the collector received the export packet"),
    "export_time_ms": ("u8", "export packet header time (exporter clock)"),
    "exporter_addr": ("S16", "address the export packet came from"),
    "observation_domain_id": ("u4", "IPFIX domain / v9 source id / v5 engine type<<8|id"),
    "flow_start_ms": ("u8", "first packet of the flow"),
    "flow_end_ms": ("u8", "last packet of the flow"),
    "ip_version": ("u1", "4 or 6"),
    "src_addr": ("S16", "source address"),
    "dst_addr": ("S16", "destination address"),
    "src_port": ("u2", "source transport port (0 when none)"),
    "dst_port": ("u2", "destination transport port; ICMP type*256+code"),
    "protocol": ("u1", "IP protocol number"),
    "tcp_flags": ("u1", "cumulative TCP flags (OR of all packets)"),
    "tos": ("u1", "IP type of service / traffic class"),
    "packets": ("u8", "packets, as exported (not scaled by sampling)"),
    "bytes": ("u8", "layer-3 bytes, as exported (not scaled by sampling)"),
    "reverse_packets": ("u8", "RFC 5103 biflow reverse packets (0 if unidirectional)"),
    "reverse_bytes": ("u8", "RFC 5103 biflow reverse bytes (0 if unidirectional)"),
    "sampling_rate": ("u4", "1-in-N packet sampling that applied (1 = unsampled)"),
    "input_if": ("u4", "ingress interface index"),
    "output_if": ("u4", "egress interface index"),
    "src_as": ("u4", "source autonomous system"),
    "dst_as": ("u4", "destination autonomous system"),
    "flow_direction": ("u1", "0 ingress, 1 egress, 255 unknown (IE 61)"),
    "application_id": ("u8", "RFC 6759 applicationId: engine<<56 | selector (0 = none)"),
    "application_name": ("str", "name of application_id from options data, or ''"),
    "l7_proto": ("u2", "exporter's own L7 protocol id (ntop nDPI), 0 = none"),
}

#: dtype code -> Arrow type, for this and the other Arrow batch contracts.
ARROW_TYPES: dict[str, pa.DataType] = {
    "u1": pa.uint8(),
    "u2": pa.uint16(),
    "u4": pa.uint32(),
    "u8": pa.uint64(),
    "S16": pa.binary(ADDR_BYTES),
    "f4": pa.float32(),
    "str": pa.string(),
}

FLOW_SCHEMA: pa.Schema = pa.schema(
    [pa.field(name, ARROW_TYPES[dt], nullable=False) for name, (dt, _) in FLOW_COLUMNS.items()],
    metadata={SCHEMA_METADATA_KEY: SCHEMA_NAME.encode()},
)

EXTRA_PREFIXES = ("ie_", "x_")


class BatchError(ValueError):
    """Base class of flow batch errors."""


class BatchFormatError(BatchError):
    """The bytes are not one Arrow IPC stream with one record batch."""


class BatchVersionError(BatchError):
    """The batch is of another schema or version than ``flows.v1``."""


class BatchSchemaError(BatchError):
    """A core column is missing or has the wrong type or length."""


@dataclass(slots=True)
class FlowBatch:
    """Flow records as columns: name -> numpy array (or Arrow array for strings).

    Numeric and address columns are numpy arrays (addresses as ``S16``);
    ``application_name`` and extra binary columns are Python-independent Arrow
    arrays converted with :meth:`column` on demand.
    """

    columns: dict[str, Any]
    num_rows: int
    extras: dict[str, pa.Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]

    def take(self, index: np.ndarray) -> FlowBatch:
        """Rows selected by a boolean mask or integer index, as a new batch."""
        if index.dtype == np.bool_:
            index = np.flatnonzero(index)
        cols: dict[str, Any] = {}
        for name, col in self.columns.items():
            if isinstance(col, np.ndarray):
                cols[name] = col[index]
            else:
                cols[name] = col.take(pa.array(index, type=pa.int64()))
        extras = {k: v.take(pa.array(index, type=pa.int64())) for k, v in self.extras.items()}
        return FlowBatch(cols, len(index), extras)

    def to_arrow(self) -> pa.RecordBatch:
        arrays = []
        for name, (dt, _) in FLOW_COLUMNS.items():
            col = self.columns[name]
            if isinstance(col, pa.Array):
                arrays.append(col)
            elif dt == "S16":
                arrays.append(addr16_to_arrow(col))
            else:
                arrays.append(pa.array(col, type=ARROW_TYPES[dt]))
        fields = list(FLOW_SCHEMA)
        for name, arr in self.extras.items():
            fields.append(pa.field(name, arr.type, nullable=True))
            arrays.append(arr)
        schema = pa.schema(fields, metadata=FLOW_SCHEMA.metadata)
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


def addr16_to_arrow(col: Any) -> pa.Array:
    """An ``S16`` address column as Arrow ``binary(16)`` sharing its buffer.

    ``pa.array`` copies ``S`` arrays value by value (about 9 ns per address);
    a contiguous ``S16`` array already is Arrow's fixed-size binary layout.
    """
    arr = np.asarray(col)
    if arr.dtype != np.dtype("S16"):
        return pa.array(arr, type=pa.binary(ADDR_BYTES))
    arr = np.ascontiguousarray(arr)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(ADDR_BYTES), len(arr), [None, pa.py_buffer(arr)]
    )


def empty_strings(n: int) -> pa.Array:
    """``n`` empty strings, built from buffers (no Python object per row)."""
    offsets = pa.py_buffer(np.zeros(n + 1, dtype=np.int32))
    return pa.StringArray.from_buffers(n, offsets, pa.py_buffer(b""))


#: Core columns whose default is not 0 (or "").
_DEFAULTS = {"flow_direction": 255, "sampling_rate": 1}


def default_column(name: str, n: int) -> Any:
    """The core column ``name`` of ``n`` records holding its documented default."""
    dt = FLOW_COLUMNS[name][0]
    if dt == "str":
        return empty_strings(n)
    if dt == "S16":
        return np.zeros(n, dtype="S16")
    fill = _DEFAULTS.get(name, 0)
    if fill:
        return np.full(n, fill, dtype=np.dtype(dt))
    return np.zeros(n, dtype=np.dtype(dt))


def make_batch(
    columns: Mapping[str, Any], extras: Mapping[str, pa.Array] | None = None
) -> FlowBatch:
    """Build a batch from columns, filling absent core columns with defaults.

    Raises :class:`BatchSchemaError` when columns differ in length or a name is
    neither a core column nor an extra (``ie_``/``x_``) one.
    """
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise BatchSchemaError(f"columns differ in length: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    cols: dict[str, Any] = {}
    for name, (dt, _) in FLOW_COLUMNS.items():
        col = columns.get(name)
        if col is None:
            cols[name] = default_column(name, n)
        elif dt == "str":
            cols[name] = col if isinstance(col, pa.Array) else pa.array(list(col), pa.string())
        elif dt == "S16":
            cols[name] = np.asarray(col, dtype="S16")
        else:
            cols[name] = np.asarray(col).astype(dt, copy=False)
    extra_cols = dict(extras or {})
    for name, col in columns.items():
        if name in FLOW_COLUMNS:
            continue
        if name.startswith(EXTRA_PREFIXES):
            extra_cols[name] = col if isinstance(col, pa.Array) else pa.array(col)
        else:
            raise BatchSchemaError(f"unknown column {name!r}: extras must start with ie_ or x_")
    return FlowBatch(cols, n, extra_cols)


def encode(batch: FlowBatch) -> bytes:
    """Serialise a batch as one Arrow IPC stream (the Kafka message value)."""
    return write_single_batch(batch.to_arrow())


def encode_view(batch: FlowBatch | pa.RecordBatch, compression: str | None = None) -> memoryview:
    """:func:`encode` without copying the stream into a ``bytes`` object.

    The view keeps Arrow's buffer alive; Kafka clients take it as a value.
    ``compression`` (``"lz4"`` or ``"zstd"``) compresses the stream's buffers
    with Arrow IPC body compression; None leaves them plain. Buffers are
    compressed on the calling thread: Arrow's thread pool cost a sixth more
    CPU for the same work, and a collector runs one process per core anyway.
    """
    rb = batch.to_arrow() if isinstance(batch, FlowBatch) else batch
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression, use_threads=False)
    with pa.ipc.new_stream(sink, rb.schema, options=options) as writer:
        writer.write_batch(rb)
    return memoryview(sink.getvalue())


def decode(data: bytes | memoryview) -> FlowBatch:
    """Parse a Kafka message value into a :class:`FlowBatch`.

    Numeric columns come back as read-only numpy views over the message
    buffer (no copy).
    """
    rb = read_single_batch(data, SCHEMA_NAME)
    cols = core_columns(rb, FLOW_COLUMNS)
    extras = {
        f.name: rb.column(i) for i, f in enumerate(rb.schema) if f.name.startswith(EXTRA_PREFIXES)
    }
    return FlowBatch(cols, rb.num_rows, extras)


# -- helpers shared with the other Arrow batch contracts (voip-flows.v2) -----


_READ_OPTIONS = pa.ipc.IpcReadOptions(use_threads=False)


def read_single_batch(data: bytes | memoryview, schema_name: str) -> pa.RecordBatch:
    """The one record batch of an Arrow IPC stream tagged ``schema_name``.

    Raises :class:`BatchFormatError` for bytes that are not such a stream and
    :class:`BatchVersionError` when the stream carries another schema name.

    Compressed buffers are decompressed on the calling thread. Arrow's thread
    pool, its default, spent 5.5 times the CPU on a voip-flows message of
    400 rows (232 against 42 us: each of some 30 small buffers was a task
    handed to another thread) and a third more on a flows.v1 message of
    14,000 records (960 against 703 us), where it was faster only by the
    wall clock, with a second core idle that a loaded box does not have.
    """
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data), options=_READ_OPTIONS)
        schema = reader.schema
        batches = list(reader)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise BatchFormatError(f"not an Arrow IPC stream: {exc}") from exc
    meta = schema.metadata or {}
    version = meta.get(SCHEMA_METADATA_KEY)
    if version != schema_name.encode():
        raise BatchVersionError(f"batch schema is {version!r}, expected {schema_name!r}")
    if len(batches) != 1:
        raise BatchFormatError(f"expected one record batch, found {len(batches)}")
    return batches[0]


def core_columns(rb: pa.RecordBatch, columns: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Check and convert the contract's columns of ``rb``: numpy views, strings as Arrow.

    ``columns`` maps name -> (dtype code of :data:`ARROW_TYPES`, meaning).
    Raises :class:`BatchSchemaError` for a missing, mistyped or null column.
    """
    cols: dict[str, Any] = {}
    schema = rb.schema
    for name, (dt, _) in columns.items():
        idx = schema.get_field_index(name)
        if idx < 0:
            raise BatchSchemaError(f"missing column {name!r}")
        arr = rb.column(idx)
        if arr.type != ARROW_TYPES[dt]:
            raise BatchSchemaError(f"column {name!r} is {arr.type}, expected {ARROW_TYPES[dt]}")
        if arr.null_count:
            raise BatchSchemaError(f"column {name!r} has nulls")
        if dt == "str":
            cols[name] = arr
        elif dt == "S16":
            buf = arr.buffers()[1]
            cols[name] = np.frombuffer(buf, dtype="S16", count=len(arr), offset=arr.offset * 16)
        else:
            cols[name] = arr.to_numpy(zero_copy_only=True)
    return cols


def write_single_batch(rb: pa.RecordBatch) -> bytes:
    """One record batch as an Arrow IPC stream (a Kafka message value)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rb.schema) as writer:
        writer.write_batch(rb)
    return sink.getvalue().to_pybytes()


# -- address helpers (vectorised) -------------------------------------------

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def ipv4_to_addr16(v4: np.ndarray) -> np.ndarray:
    """uint32 IPv4 addresses (host order values) -> S16 IPv4-mapped addresses."""
    out = np.zeros((len(v4), 16), dtype=np.uint8)
    out[:, 10] = 0xFF
    out[:, 11] = 0xFF
    out[:, 12:16] = np.asarray(v4, dtype=">u4").view(np.uint8).reshape(-1, 4)
    return out.view("S16").reshape(-1)


def addr16_to_ipv4(addr: np.ndarray) -> np.ndarray:
    """S16 addresses -> uint32 of their last four bytes (meaningful for IPv4)."""
    raw = np.ascontiguousarray(addr).view(np.uint8).reshape(-1, 16)
    return np.ascontiguousarray(raw[:, 12:16]).view(">u4").reshape(-1).astype(np.uint32)


def addr16_halves(addr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S16 addresses -> (high 64 bits, low 64 bits) as uint64, for range lookups."""
    raw = np.ascontiguousarray(addr).view(">u8").reshape(-1, 2)
    return raw[:, 0].astype(np.uint64), raw[:, 1].astype(np.uint64)


def addr_to_text(addr16: bytes) -> str:
    """One S16 address -> text, IPv4-mapped shown as dotted quad (for logs, keys)."""
    raw = bytes(addr16).ljust(16, b"\x00")
    if raw[:12] == _V4_MAPPED_PREFIX:
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def text_to_addr16(text: str) -> bytes:
    """Address text -> 16 bytes (IPv4 mapped)."""
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return _V4_MAPPED_PREFIX + ip.packed
    return ip.packed
