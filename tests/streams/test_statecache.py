"""The keyed agent's decoded states: reused only for the bytes written, never after a failure."""

from __future__ import annotations

import json

import pytest

from voipflow.streams.statecache import DecodedStates


def test_the_bytes_written_give_back_the_same_dict_without_decoding() -> None:
    cache = DecodedStates()
    state = {"wm": 5, "win": {"60000": {"_all": [1, 2, 3, 0.0, ""]}}}
    raw = cache.written("Berlin", state)
    assert json.loads(raw) == state
    assert cache.take("Berlin", raw) is state


def test_equal_but_other_bytes_are_decoded_afresh() -> None:
    # A value restored from the changelog is a new object: decode it.
    cache = DecodedStates()
    state = {"wm": 5}
    raw = cache.written("Berlin", state)
    restored = bytes(bytearray(raw))
    got = cache.take("Berlin", restored)
    assert got == state and got is not state


def test_a_taken_state_is_not_reused_unless_written_again() -> None:
    # The agent mutated it, then failed: the table's bytes are the truth again.
    cache = DecodedStates()
    state = {"wm": 5}
    raw = cache.written("Berlin", state)
    taken = cache.take("Berlin", raw)
    assert taken is not None
    taken["wm"] = 99
    again = cache.take("Berlin", raw)
    assert again == {"wm": 5}
    assert len(cache) == 0


def test_peek_reads_without_taking_and_no_value_is_none() -> None:
    cache = DecodedStates()
    state = {"touched": 1}
    raw = cache.written("x", state)
    assert cache.peek("x", raw) is state
    assert cache.take("x", raw) is state
    assert cache.take("y", None) is None
    with pytest.raises(ValueError):
        cache.take("z", b"{not json")
