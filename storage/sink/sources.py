"""Republished voip-flows messages: each source position is stored once.

Why
---
A worker that dies after publishing a flows.v1 message's voip-flows batches
but before committing that message leaves it to another worker, which
processes it again and publishes the same batches a second time, at new
offsets. The sink's replay deduplication (:mod:`voipflow.storage.sink.replay`)
cannot tell them from new data: they are new messages to Kafka.

How
---
The worker gives every voip-flows message its source position
(:func:`voipflow.schemas.voipflows.position_headers`): flows.v1 topic and
partition, the input's offset, the message's ordinal among that input's
outputs. On one voip-flows partition the messages of one source arrive in
position order, and a republished run repeats positions already seen. So
the sink keeps, per voip-flows partition, the highest position stored per
source (:class:`SourceMarks`) and drops any message at or below it.

The marks are kept exactly with the partition's committed offset, in the
offset commit metadata (:func:`with_marks`, :func:`read_marks`): whoever
takes the partition next, after a restart or a rebalance, resumes with the
marks as of the committed offset. An intent commit (offset ``first``) carries
the marks as of ``first``, so a replayed batch is filtered from the same marks
into the same rows and the same deduplication token.

Messages without the headers (other producers) are stored as they come.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from voipflow.schemas.voipflows import SourcePosition

log = logging.getLogger(__name__)

#: Kafka's default ``offset.metadata.max.bytes``: a commit with longer
#: metadata is refused, so marks that would not fit are left out (logged).
METADATA_MAX_BYTES = 4096
#: Key of the marks in the commit metadata (beside ``pending`` of an intent).
MARKS_KEY = "src"


class SourceMarks:
    """The highest ``(offset, ordinal)`` stored per source, of one voip-flows partition."""

    __slots__ = ("marks",)

    def __init__(self, marks: dict[str, tuple[int, int]] | None = None) -> None:
        self.marks: dict[str, tuple[int, int]] = dict(marks or {})

    def admit(self, position: SourcePosition | None) -> bool:
        """True (and the mark raised) for a message to store; False for a republished copy."""
        if position is None:
            return True
        seen = self.marks.get(position.source)
        if seen is not None and position.mark <= seen:
            return False
        self.marks[position.source] = position.mark
        return True

    def copy(self) -> SourceMarks:
        return SourceMarks(self.marks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SourceMarks) and self.marks == other.marks

    def __repr__(self) -> str:
        return f"SourceMarks({self.marks!r})"


def with_marks(metadata: str, marks: SourceMarks) -> str:
    """Commit metadata ``metadata`` (``""`` or an intent's JSON) with ``marks`` added.

    No marks: ``metadata`` unchanged. Marks that would make the metadata
    longer than :data:`METADATA_MAX_BYTES` are left out with a warning: the
    commit must go through, and the cost is only that a republished copy
    after the next restart may be stored again."""
    if not marks.marks:
        return metadata
    meta = json.loads(metadata) if metadata else {}
    meta[MARKS_KEY] = {src: [off, ordinal] for src, (off, ordinal) in sorted(marks.marks.items())}
    out = json.dumps(meta, separators=(",", ":"))
    if len(out.encode()) <= METADATA_MAX_BYTES:
        return out
    log.warning(
        "source positions left out of the offset commit: more than Kafka's metadata limit",
        extra={"sources": len(marks.marks), "bytes": len(out.encode())},
    )
    return metadata


def read_marks(metadata: str | None) -> SourceMarks:
    """The marks a commit's metadata holds; none for empty, foreign or malformed metadata."""
    try:
        meta = json.loads(metadata) if metadata else {}
        raw: Any = meta.get(MARKS_KEY, {}) if isinstance(meta, dict) else {}
        marks = {str(src): (int(pos[0]), int(pos[1])) for src, pos in raw.items()}
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        log.warning("offset commit metadata without readable source positions")
        return SourceMarks()
    return SourceMarks(marks)


__all__ = ["MARKS_KEY", "METADATA_MAX_BYTES", "SourceMarks", "read_marks", "with_marks"]
