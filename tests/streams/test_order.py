"""An agent sees each offset of a partition once and in order (streams.order)."""

from __future__ import annotations

from faust.types import TP

from voipflow.streams.order import RESEEK_EVERY_S, OffsetGate

P0, P1 = TP("flows.v1", 0), TP("flows.v1", 1)


def test_in_order_offsets_pass_and_redeliveries_are_seen() -> None:
    committed: dict[TP, int | None] = {P0: 5, P1: None}
    gate = OffsetGate(committed.get)
    assert gate.check(P0, 5) == "next"
    gate.done(P0, 5)
    assert gate.check(P0, 6) == "next"
    gate.done(P0, 6)
    # A re-delivery (a rebalance fetched from the committed offset again).
    assert gate.check(P0, 5) == "seen"
    # Nothing known of P1 yet: its first offset starts it.
    assert gate.check(P1, 40) == "next"
    gate.done(P1, 40)
    assert gate.check(P1, 41) == "next"


def test_an_offset_passed_over_holds_the_ones_after_it_back() -> None:
    committed: dict[TP, int | None] = {P0: 5}
    gate = OffsetGate(committed.get)
    gate.done(P0, 5)
    # 6 never came: 7 and 8 must not be processed before it.
    assert gate.check(P0, 7) == "ahead"
    assert gate.check(P0, 8) == "ahead"
    assert gate.expected(P0) == 6
    assert gate.check(P0, 6) == "next"


def test_a_committed_offset_further_on_moves_the_order_forward() -> None:
    # Another worker processed and committed up to 20 while this one had the
    # partition elsewhere; it comes back with its own record at 6.
    committed: dict[TP, int | None] = {P0: 5}
    gate = OffsetGate(committed.get)
    gate.done(P0, 5)
    committed[P0] = 20
    assert gate.check(P0, 19) == "seen"
    assert gate.check(P0, 20) == "next"
    assert gate.check(P0, 21) == "ahead"


def test_what_this_worker_processed_beyond_the_commit_is_not_processed_again() -> None:
    committed: dict[TP, int | None] = {P0: 5}
    gate = OffsetGate(committed.get)
    for offset in range(5, 10):
        gate.done(P0, offset)
    # Revoked before the commit and assigned back: fetched from 5 again.
    assert [gate.check(P0, o) for o in range(5, 11)] == ["seen"] * 5 + ["next"]


def test_the_partition_is_sought_back_at_once_then_at_most_every_few_seconds() -> None:
    gate = OffsetGate({P0: 0}.get)
    assert gate.reseek_due(P0, 100.0)
    assert not gate.reseek_due(P0, 100.0 + RESEEK_EVERY_S / 2)
    assert gate.reseek_due(P0, 100.0 + RESEEK_EVERY_S)
    gate.done(P0, 0)  # the missing offset came: the next gap seeks at once
    assert gate.reseek_due(P0, 100.0 + RESEEK_EVERY_S + 0.1)


def test_offsets_deleted_before_processing_are_skipped_to_the_earliest() -> None:
    gate = OffsetGate({P0: 3}.get)
    assert gate.check(P0, 50) == "ahead"
    gate.skip_to(P0, 50)
    assert gate.check(P0, 50) == "next"
