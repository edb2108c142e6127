"""Source positions of voip-flows messages: the header codec, the sink's marks, and
the marks in the offset commit metadata (pure functions, no broker)."""

from __future__ import annotations

import json

import pytest

from voipflow.schemas import voipflows
from voipflow.schemas.voipflows import PositionError, SourcePosition, read_position
from voipflow.storage.sink.replay import intent_metadata, pending_last
from voipflow.storage.sink.sources import (
    METADATA_MAX_BYTES,
    SourceMarks,
    read_marks,
    with_marks,
)


def _headers(topic: str, partition: int, offset: int, ordinal: int) -> list[tuple[str, bytes]]:
    """Headers as kafka-python hands them to a consumer: a list of pairs."""
    h = {
        "schema": b"voip-flows.v2",
        **voipflows.position_headers(topic, partition, offset, ordinal),
    }
    return list(h.items())


def test_position_headers_round_trip() -> None:
    headers = voipflows.position_headers("flows.v1", 3, 12345, 2)
    assert headers == {"src": b"flows.v1:3", "src_pos": b"12345:2"}
    assert read_position(headers) == SourcePosition("flows.v1:3", 12345, 2)
    assert read_position(_headers("flows.v1", 0, 0, 0)) == SourcePosition("flows.v1:0", 0, 0)


def test_message_without_position_headers_has_no_position() -> None:
    assert read_position(None) is None
    assert read_position([]) is None
    assert read_position([("schema", b"voip-flows.v2")]) is None


@pytest.mark.parametrize(
    "headers",
    [
        [("src", b"flows.v1:3")],  # one without the other
        [("src_pos", b"1:0")],
        [("src", b"flows.v1"), ("src_pos", b"1:0")],  # no partition
        [("src", b"flows.v1:x"), ("src_pos", b"1:0")],
        [("src", b"flows.v1:3"), ("src_pos", b"1")],  # no ordinal
        [("src", b"flows.v1:3"), ("src_pos", b"1:0:0")],
        [("src", b"flows.v1:3"), ("src_pos", b"-1:0")],
        [("src", b":3"), ("src_pos", b"1:0")],  # no topic
        [("src", b"flows.v1:3"), ("src_pos", b"\xff:0")],
        [("src", None), ("src_pos", b"1:0")],
    ],
)
def test_malformed_position_is_refused(headers: list[tuple[str, bytes | None]]) -> None:
    with pytest.raises(PositionError):
        read_position(headers)


def _pos(partition: int, offset: int, ordinal: int) -> SourcePosition:
    return SourcePosition(f"flows.v1:{partition}", offset, ordinal)


def test_marks_keep_two_cities_of_one_input_and_drop_their_republished_copies() -> None:
    marks = SourceMarks()
    # One input (offset 10) made two messages that both hash to this partition.
    first_run = [_pos(3, 10, 0), _pos(3, 10, 1), _pos(3, 11, 0)]
    assert [marks.admit(p) for p in first_run] == [True, True, True]
    assert marks.marks == {"flows.v1:3": (11, 0)}
    # Another worker processes offsets 10.. again: a suffix of what was seen,
    # then new input.
    replay = [_pos(3, 10, 0), _pos(3, 10, 1), _pos(3, 11, 0), _pos(3, 11, 1), _pos(3, 12, 0)]
    assert [marks.admit(p) for p in replay] == [False, False, False, True, True]
    assert marks.marks == {"flows.v1:3": (12, 0)}


def test_marks_are_per_source_and_let_messages_without_position_through() -> None:
    marks = SourceMarks({"flows.v1:1": (100, 0)})
    assert marks.admit(_pos(2, 5, 0))  # another source partition: its own mark
    assert not marks.admit(_pos(1, 100, 0))
    assert marks.admit(_pos(1, 100, 1))
    assert marks.admit(None) and marks.admit(None)  # other producers: always stored
    assert marks.marks == {"flows.v1:1": (100, 1), "flows.v1:2": (5, 0)}
    # A copy is independent of the marks it was made from.
    copy = marks.copy()
    assert copy.admit(_pos(1, 101, 0)) and marks.marks["flows.v1:1"] == (100, 1)


def test_marks_round_trip_through_commit_metadata() -> None:
    marks = SourceMarks({"flows.v1:0": (7, 1), "flows.v1:11": (123456789, 0)})
    meta = with_marks("", marks)
    assert json.loads(meta) == {"src": {"flows.v1:0": [7, 1], "flows.v1:11": [123456789, 0]}}
    assert read_marks(meta) == marks
    assert pending_last(5, meta) is None  # no intent


def test_marks_beside_an_intent() -> None:
    marks = SourceMarks({"flows.v1:2": (40, 3)})
    meta = with_marks(intent_metadata(5, 9), marks)
    assert pending_last(5, meta) == 9  # the intent is still read
    assert read_marks(meta) == marks
    # Without marks the metadata stays as it was.
    assert with_marks(intent_metadata(5, 9), SourceMarks()) == intent_metadata(5, 9)
    assert with_marks("", SourceMarks()) == ""


@pytest.mark.parametrize(
    "metadata", [None, "", "{}", "not json", '{"src": 3}', '{"src": {"a": 1}}']
)
def test_metadata_without_readable_marks_gives_none(metadata: str | None) -> None:
    assert read_marks(metadata).marks == {}


def test_marks_that_exceed_the_metadata_limit_are_left_out() -> None:
    # Long topic names so that a few hundred partitions exceed Kafka's 4096 bytes.
    marks = SourceMarks({f"flows.v1-{'x' * 40}:{p}": (10**12, p) for p in range(100)})
    intent = intent_metadata(5, 9)
    meta = with_marks(intent, marks)
    assert meta == intent and len(meta) <= METADATA_MAX_BYTES
    # 64 source partitions of the default topic fit.
    fits = SourceMarks({f"flows.v1:{p}": (10**12, 3) for p in range(64)})
    assert read_marks(with_marks(intent, fits)) == fits
