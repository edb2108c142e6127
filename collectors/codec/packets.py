"""Export packet framing: headers, set walking and (options) template records.

Per-packet and per-set work only (``struct.unpack_from``); records are left
to :mod:`voipflow.collectors.codec.plan`. Every loop is bounded by the bytes it walks, and
every length is checked against them before use, so malformed input raises a
:class:`~collectors.codec.errors.DecodeError` instead of reading past the packet or
looping.

Layouts: NetFlow v5 (Cisco), NetFlow v9 (RFC 3954 5-6), IPFIX (RFC 7011 3).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from voipflow.collectors.codec import ies
from voipflow.collectors.codec.errors import (
    BadLengthError,
    BadSetError,
    BadTemplateError,
    BadVersionError,
    DecodeError,
    TemplateLoopError,
    TooManyFieldsError,
    TruncatedError,
)
from voipflow.collectors.codec.templates import VARLEN, Template, TemplateField

V5_HEADER = struct.Struct(">HHIIIIBBH")  # 24 bytes
V5_RECORD_LENGTH = 48
V9_HEADER = struct.Struct(">HHIIII")  # 20 bytes
IPFIX_HEADER = struct.Struct(">HHIII")  # 16 bytes
SET_HEADER = struct.Struct(">HH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U16X2 = struct.Struct(">HH")
_U16X3 = struct.Struct(">HHH")

#: Scope fields of v9 options templates are not information elements (1 =
#: system, 2 = interface, ...): they get this pseudo enterprise number so they
#: never read as IPFIX elements 1-5. Real enterprise numbers are 32-bit.
V9_SCOPE_PEN = 1 << 32

#: The NetFlow v5 record as a template of the equivalent elements (RFC 3954
#: numbers); 210 is paddingOctets.
V5_TEMPLATE = Template(
    template_id=0,
    version=5,
    fields=tuple(
        TemplateField(0, ie, n)
        for ie, n in (
            (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4),
            (7, 2), (11, 2), (210, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1),
            (13, 1), (210, 2),
        )
    ),
)  # fmt: skip


@dataclass(slots=True)
class Message:
    """One export packet's header and the byte ranges of its sets."""

    version: int
    domain: int
    sequence: int
    export_ms: int
    uptime_ms: int  # -1 for IPFIX (no sysUptime in its header)
    count: int  # v5: records; v9: records of all kinds (header field); IPFIX: 0
    sampling: int = 0  # v5 header sampling interval (0 = none announced)
    length: int = 0  # bytes of the message (IPFIX: from its header)
    sets: list[tuple[int, int, int]] = field(default_factory=list)  # (set id, start, end)
    #: set framing broke after ``sets``: those are still good, the rest is lost
    error: DecodeError | None = None


def header_domain(data: memoryview) -> int:
    """Observation domain of a packet whose header is readable, else 0."""
    if len(data) >= 2:
        version = _U16.unpack_from(data, 0)[0]
        if version == 5 and len(data) >= 22:
            return (data[20] << 8) | data[21]
        if version == 9 and len(data) >= 20:
            return int(_U32.unpack_from(data, 16)[0])
        if version == 10 and len(data) >= 16:
            return int(_U32.unpack_from(data, 12)[0])
    return 0


def parse_message(data: memoryview) -> Message:
    """Header and set boundaries of one export packet."""
    if len(data) < 2:
        raise TruncatedError("packet shorter than a version field")
    version = _U16.unpack_from(data, 0)[0]
    if version == 5:
        return _parse_v5(data)
    if version == 9:
        return _parse_sets(data, 9)
    if version == 10:
        return _parse_sets(data, 10)
    raise BadVersionError(f"unsupported export version {version}")


def _parse_v5(data: memoryview) -> Message:
    if len(data) < V5_HEADER.size:
        raise TruncatedError("NetFlow v5 header truncated")
    _, count, uptime, secs, nsecs, seq, etype, eid, sampling = V5_HEADER.unpack_from(data, 0)
    if not 1 <= count <= 30:
        raise BadLengthError(f"NetFlow v5 record count {count} not in 1..30")
    need = V5_HEADER.size + count * V5_RECORD_LENGTH
    if len(data) < need:
        raise TruncatedError(f"NetFlow v5 packet of {len(data)} bytes, header says {need}")
    interval = sampling & 0x3FFF
    msg = Message(
        version=5,
        domain=(etype << 8) | eid,
        sequence=seq,
        export_ms=secs * 1000 + nsecs // 1_000_000,
        uptime_ms=uptime,
        count=count,
        sampling=interval if (sampling >> 14) and interval else 0,
        length=need,
    )
    msg.sets.append((0, V5_HEADER.size, need))
    return msg


def _parse_sets(data: memoryview, version: int) -> Message:
    if version == 9:
        if len(data) < V9_HEADER.size:
            raise TruncatedError("NetFlow v9 header truncated")
        _, count, uptime, secs, seq, source = V9_HEADER.unpack_from(data, 0)
        pos, end = V9_HEADER.size, len(data)
        msg = Message(9, source, seq, secs * 1000, uptime, count, length=end)
    else:
        if len(data) < IPFIX_HEADER.size:
            raise TruncatedError("IPFIX header truncated")
        _, length, secs, seq, domain = IPFIX_HEADER.unpack_from(data, 0)
        if length < IPFIX_HEADER.size:
            raise BadLengthError(f"IPFIX message length {length} below its header")
        if length > len(data):
            raise TruncatedError(f"IPFIX message of {len(data)} bytes, header says {length}")
        pos, end = IPFIX_HEADER.size, length
        msg = Message(10, domain, seq, secs * 1000, -1, 0, length=length)
    # Each set is at least 4 bytes, so this loop ends within len/4 turns.
    while end - pos >= SET_HEADER.size:
        set_id, set_len = SET_HEADER.unpack_from(data, pos)
        if set_len < SET_HEADER.size:
            if version == 9 and set_id == 0 and set_len == 0 and not any(data[pos:end]):
                break  # trailing zero padding after the last flowset
            msg.error = BadLengthError(f"set {set_id} of length {set_len}")
            return msg
        if pos + set_len > end:
            msg.error = TruncatedError(f"set {set_id} of {set_len} bytes runs past the packet")
            return msg
        msg.sets.append((set_id, pos + SET_HEADER.size, pos + set_len))
        pos += set_len
    if version == 10 and pos != end:
        msg.error = BadLengthError(f"{end - pos} stray bytes after the last set")
    return msg


def set_kind(version: int, set_id: int) -> str:
    """'template', 'options', 'data' or raises BadSetError for reserved ids."""
    if set_id >= 256:
        return "data"
    if version == 9:
        if set_id == 0:
            return "template"
        if set_id == 1:
            return "options"
    else:
        if set_id == 2:
            return "template"
        if set_id == 3:
            return "options"
    raise BadSetError(f"reserved set id {set_id} in a v{version} message")


@dataclass(slots=True)
class TemplateRecord:
    """A parsed (options) template; ``fields`` empty means withdrawal."""

    template_id: int
    fields: tuple[TemplateField, ...]
    scope_count: int = 0


def parse_templates(
    data: memoryview, start: int, end: int, version: int, options: bool, max_fields: int
) -> list[TemplateRecord]:
    """The template records of one template or options template set."""
    out: list[TemplateRecord] = []
    pos = start
    turns = 0
    while end - pos >= 4:
        turns += 1
        if turns > (end - start) // 4 + 1:
            raise TemplateLoopError("template set walk does not advance")
        if version == 9 and options:
            rec, pos = _v9_options_template(data, pos, end, max_fields)
            if rec is None:
                break
        elif version == 9:
            rec, pos = _v9_template(data, pos, end, max_fields)
        else:
            rec, pos = _ipfix_template(data, pos, end, options, max_fields)
        out.append(rec)
    return out


def _check_id(tid: int, version: int, withdrawal: bool) -> None:
    if tid < 256 and not (version == 10 and withdrawal and tid in (2, 3)):
        raise BadTemplateError(f"template id {tid} below 256")


def _v9_template(
    data: memoryview, pos: int, end: int, max_fields: int
) -> tuple[TemplateRecord, int]:
    tid, count = _U16X2.unpack_from(data, pos)
    pos += 4
    if count == 0:
        raise BadTemplateError(f"NetFlow v9 template {tid} without fields")
    _check_id(tid, 9, False)
    if count > max_fields:
        raise TooManyFieldsError(f"template {tid} has {count} fields (max {max_fields})")
    if pos + 4 * count > end:
        raise TruncatedError(f"template {tid} of {count} fields runs past its set")
    fields = []
    for _ in range(count):
        ftype, flen = _U16X2.unpack_from(data, pos)
        pos += 4
        if flen == VARLEN:
            raise BadTemplateError(f"NetFlow v9 template {tid} with a variable-length field")
        pen, ie = ies.v9_field_key(ftype)
        fields.append(TemplateField(pen, ie, flen))
    return TemplateRecord(tid, tuple(fields)), pos


def _v9_options_template(
    data: memoryview, pos: int, end: int, max_fields: int
) -> tuple[TemplateRecord | None, int]:
    if end - pos < 6:
        return None, end  # padding
    tid, scope_len, opt_len = _U16X3.unpack_from(data, pos)
    if tid == 0 and scope_len == 0 and opt_len == 0:
        return None, end  # zero padding
    pos += 6
    _check_id(tid, 9, False)
    if scope_len % 4 or opt_len % 4 or scope_len + opt_len == 0:
        raise BadTemplateError(f"options template {tid}: lengths {scope_len}/{opt_len}")
    count = (scope_len + opt_len) // 4
    if count > max_fields:
        raise TooManyFieldsError(f"options template {tid} has {count} fields (max {max_fields})")
    if pos + scope_len + opt_len > end:
        raise TruncatedError(f"options template {tid} runs past its set")
    fields = []
    for i in range(count):
        ftype, flen = _U16X2.unpack_from(data, pos)
        pos += 4
        if flen == VARLEN:
            raise BadTemplateError(f"NetFlow v9 options template {tid} with a variable field")
        if i < scope_len // 4:
            fields.append(TemplateField(V9_SCOPE_PEN, ftype, flen))
        else:
            pen, ie = ies.v9_field_key(ftype)
            fields.append(TemplateField(pen, ie, flen))
    return TemplateRecord(tid, tuple(fields), scope_len // 4), pos


def _ipfix_template(
    data: memoryview, pos: int, end: int, options: bool, max_fields: int
) -> tuple[TemplateRecord, int]:
    tid, count = _U16X2.unpack_from(data, pos)
    pos += 4
    if count == 0:
        _check_id(tid, 10, True)
        return TemplateRecord(tid, ()), pos  # withdrawal
    _check_id(tid, 10, False)
    scope = 0
    if options:
        if end - pos < 2:
            raise TruncatedError(f"options template {tid} without scope count")
        scope = _U16.unpack_from(data, pos)[0]
        pos += 2
        if scope == 0 or scope > count:
            raise BadTemplateError(f"options template {tid}: scope count {scope} of {count}")
    if count > max_fields:
        raise TooManyFieldsError(f"template {tid} has {count} fields (max {max_fields})")
    fields = []
    for _ in range(count):
        if end - pos < 4:
            raise TruncatedError(f"template {tid} runs past its set")
        ie, flen = _U16X2.unpack_from(data, pos)
        pos += 4
        pen = 0
        if ie & 0x8000:
            if end - pos < 4:
                raise TruncatedError(f"template {tid} enterprise number past its set")
            pen = _U32.unpack_from(data, pos)[0]
            pos += 4
            ie &= 0x7FFF
        fields.append(TemplateField(pen, ie, flen))
    return TemplateRecord(tid, tuple(fields), scope), pos


def option_records(
    template: Template, data: memoryview, start: int, end: int, limit: int = 65536
) -> list[dict[tuple[int, int], bytes]]:
    """Options data records as {(pen, id): raw value} (small sets, per record)."""
    out: list[dict[tuple[int, int], bytes]] = []
    minimum = template.min_record_length
    if minimum <= 0:
        raise BadTemplateError(f"options template {template.template_id} of empty records")
    pos = start
    while end - pos >= minimum and len(out) < limit:
        rec: dict[tuple[int, int], bytes] = {}
        for f in template.fields:
            n = f.length
            if n == VARLEN:
                if pos >= end:
                    raise TruncatedError("options record past its set")
                n = data[pos]
                pos += 1
                if n == 255:
                    if end - pos < 2:
                        raise TruncatedError("options record past its set")
                    n = _U16.unpack_from(data, pos)[0]
                    pos += 2
            if pos + n > end:
                raise TruncatedError("options record past its set")
            rec.setdefault((f.pen, f.ie), bytes(data[pos : pos + n]))
            pos += n
        out.append(rec)
    return out
