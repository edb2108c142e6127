"""The ``voip-flows.v2`` batch: classified VoIP flows, one Kafka message per batch.

Same framing as ``flows.v1`` (:mod:`voipflow.schemas.flowbatch`): one Arrow IPC stream
holding exactly one record batch, schema metadata
``voipflow.schema = "voip-flows.v2"``. The worker publishes only flows it
classified as VoIP (``is_voip = 1``), already enriched with the subscriber's
city and oriented from the subscriber's point of view.

Contract (version 2)
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
* Two verdicts per flow: ``app`` is the calling application the flow belongs
  to, whatever its part in the call (what enforcement targets); ``role`` is
  that part, one of :data:`ROLES` (signalling, control, media, relay, ice),
  or ``""`` (unknown); :func:`decode` refuses any other value.
  Only ``media`` and ``relay`` flows carry a call's audio or video, so only
  they count call-seconds.
* ``evidence`` is a bitmask of :class:`Evidence` (its bits are named here, the
  rules that set them are in :mod:`voipflow.streams.classify`);
  ``classifier_version`` names the rules that produced ``app``, ``role``,
  ``is_voip``, ``confidence`` and ``evidence``.
* The Kafka message key is the city (text), so one city's flows stay on one
  partition. Headers: ``schema=voip-flows.v2``, and the message's source
  position (:func:`position_headers`): ``src`` = ``b"<topic>:<partition>"``
  of the ``flows.v1`` message it was produced from and ``src_pos`` =
  ``b"<offset>:<ordinal>"``, that message's offset and this message's place
  among the messages produced from it (0, 1, ...; by city name, then by
  chunk). A worker that processes the same input again (after another
  worker died before committing it) publishes the same positions, so a
  reader drops what it has seen (:func:`read_position`). Producers other
  than the worker may leave both headers out.

Version 1 (no ``role`` column) is still read: :func:`decode` gives its rows
the role ``""`` (unknown), never a guessed one.

Errors (shared with ``flows.v1``)::

    BatchError
     +-- BatchFormatError    bytes that are not a valid Arrow stream / batch
     +-- BatchVersionError   a valid batch of another schema or version
     +-- BatchSchemaError    missing column or wrong column type
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntFlag
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    "MEDIA_ROLES",
    "POSITION_HEADER",
    "ROLES",
    "SCHEMA_NAME",
    "SCHEMA_V1",
    "SOURCE_HEADER",
    "VOIP_FLOW_COLUMNS",
    "VOIP_FLOW_SCHEMA",
    "BatchError",
    "BatchFormatError",
    "BatchSchemaError",
    "BatchVersionError",
    "Evidence",
    "PositionError",
    "SourcePosition",
    "VoipFlowBatch",
    "decode",
    "encode",
    "make_voip_batch",
    "position_headers",
    "read_position",
]

SCHEMA_NAME = "voip-flows.v2"
#: The version before ``role``: still decoded, with every role ``""``.
SCHEMA_V1 = "voip-flows.v1"

#: What part of a call a VoIP flow plays (``role`` column); ``""`` for none or
#: unknown (version 1 batches).
ROLES: dict[str, str] = {
    "signalling": "call set-up and control on a signalling protocol's port: SIP "
    "(RFC 3261), H.323's H.225.0/H.245, SCCP, MGCP (RFC 3435), IAX2 (RFC 5456)",
    "control": "the app's own control channels (TLS/TCP to its servers) and RTCP "
    "(RFC 3550 s. 6), no media",
    "media": "the call's audio or video: RTP/SRTP (RFC 3550, RFC 3711), directly "
    "between the call's candidates or to the app's media servers",
    "relay": "media through a TURN relay on its registered port (RFC 8656: "
    "3478/5349, Teams' transport relays 3478-3481)",
    "ice": "STUN binding exchanges: ICE connectivity and consent checks (RFC 8489, "
    "RFC 8445, RFC 7675), a few small paired packets",
}
#: Roles whose flows carry a call's media: the only ones that count call-seconds.
MEDIA_ROLES: tuple[str, ...] = ("media", "relay")


class Evidence(IntFlag):
    """Bits of the ``evidence`` column (what each means: streams/classify.py)."""

    EXPORTER_APP = 1 << 0
    EXPORTER_NOT_VOIP = 1 << 1
    PROVIDER = 1 << 2
    SIGNALLING_PORT = 1 << 3
    STUN_PORT = 1 << 4
    APP_PORT = 1 << 5
    UDP = 1 << 6
    VOICE_SIZE = 1 << 7
    VIDEO_SIZE = 1 << 8
    MEDIA_RATE = 1 << 9
    LONG = 1 << 10
    BIDIRECTIONAL = 1 << 11
    EPHEMERAL_PORTS = 1 << 12
    SERVICE_PORT = 1 << 13
    SAMPLED = 1 << 14
    ICE_SIBLING = 1 << 15
    RTP_RTCP_PAIR = 1 << 16
    SIGNALLING_PEER = 1 << 17
    DSCP_VOICE = 1 << 18
    SIGNALLING_HOST = 1 << 19
    HOST_SESSION = 1 << 20
    STUN_SHAPE = 1 << 21
    CALL_SOCKET = 1 << 22
    RTP_SHAPE = 1 << 23
    ICE_SHAPE = 1 << 24


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
    "role": ("str", "the flow's part in the call, one of ROLES ('' unknown)"),
    "is_voip": ("u1", "1 when classified as VoIP"),
    "confidence": ("f4", "0..1, how sure the classifier is"),
    "evidence": ("u4", "bitmask of the evidence that was found (Evidence)"),
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
    return encode_record_batch(batch.to_arrow(), compression)


def encode_record_batch(records: pa.RecordBatch, compression: str | None = None) -> bytes:
    """:func:`encode` of a record batch of :data:`VOIP_FLOW_SCHEMA` (or a slice
    of one: only the slice's rows are written)."""
    if compression is None:
        return write_single_batch(records)
    return bytes(encode_view(records, compression))


#: The columns of version 1: version 2's without ``role``.
V1_COLUMNS: dict[str, tuple[str, str]] = {k: v for k, v in VOIP_FLOW_COLUMNS.items() if k != "role"}


def decode(data: bytes | memoryview) -> VoipFlowBatch:
    """Parse a Kafka message value; numeric columns are zero-copy numpy views.

    A version 1 batch (written before ``role`` existed) is read with every
    role ``""``: unknown, not reinterpreted from its other columns."""
    try:
        rb = read_single_batch(data, SCHEMA_NAME)
    except BatchVersionError as exc:
        try:
            rb = read_single_batch(data, SCHEMA_V1)
        except BatchVersionError:
            raise BatchVersionError(f"{exc} (or {SCHEMA_V1!r})") from None
        cols = core_columns(rb, V1_COLUMNS)
        cols["role"] = pa.array(np.full(rb.num_rows, "", dtype=object), pa.string())
        return VoipFlowBatch({k: cols[k] for k in VOIP_FLOW_COLUMNS}, rb.num_rows)
    cols = core_columns(rb, VOIP_FLOW_COLUMNS)
    known = pc.is_in(cols["role"], value_set=_ROLE_VALUES)
    if not pc.all(known).as_py() and rb.num_rows:
        bad = pc.filter(cols["role"], pc.invert(known))[0].as_py()
        raise BatchSchemaError(f"column 'role' holds {bad!r}, not one of {['', *ROLES]}")
    return VoipFlowBatch(cols, rb.num_rows)


_ROLE_VALUES = pa.array(["", *ROLES], pa.string())


#: Header naming the input of a message: ``b"<flows.v1 topic>:<partition>"``.
SOURCE_HEADER = "src"
#: Header placing the message in that input: ``b"<offset>:<ordinal>"``.
POSITION_HEADER = "src_pos"


class PositionError(BatchError):
    """A source position header that is not ``<topic>:<partition>`` / ``<offset>:<ordinal>``."""


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a voip-flows message came from: input partition, offset, ordinal.

    Positions of one ``source`` are totally ordered by ``(offset, ordinal)``
    and a worker publishes them in that order, so a reader keeps the highest
    it has seen per source and drops anything at or below it (a republished
    copy)."""

    #: ``"<topic>:<partition>"`` of the flows.v1 message.
    source: str
    offset: int
    ordinal: int

    @property
    def mark(self) -> tuple[int, int]:
        return (self.offset, self.ordinal)


def position_headers(topic: str, partition: int, offset: int, ordinal: int) -> dict[str, bytes]:
    """The source position headers of the ``ordinal``-th message made from one input."""
    return {
        SOURCE_HEADER: f"{topic}:{partition}".encode(),
        POSITION_HEADER: f"{offset}:{ordinal}".encode(),
    }


def read_position(
    headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
) -> SourcePosition | None:
    """The position a message's headers carry; None when it has neither header.

    Raises :class:`PositionError` when only one is there or either is malformed
    (a reader must not guess where such a message came from)."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    src = pos = None
    for key, value in items:
        if key == SOURCE_HEADER:
            src = value
        elif key == POSITION_HEADER:
            pos = value
    if src is None and pos is None:
        return None
    if src is None or pos is None:
        raise PositionError(f"header {SOURCE_HEADER!r} and {POSITION_HEADER!r} go together")
    try:
        source = src.decode("ascii")
        topic, partition = source.rsplit(":", 1)
        offset_text, ordinal_text = pos.decode("ascii").split(":")
        numbers = int(partition), int(offset_text), int(ordinal_text)
    except (UnicodeDecodeError, ValueError):
        raise PositionError(
            f"source position {src!r} / {pos!r} is not "
            "b'<topic>:<partition>' / b'<offset>:<ordinal>'"
        ) from None
    if not topic or min(numbers) < 0:
        raise PositionError(f"source position {src!r} / {pos!r} out of range")
    return SourcePosition(f"{topic}:{numbers[0]}", numbers[1], numbers[2])
