"""Commits never pass a partition's unacked first message (streams.commits)."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from voipflow.streams.commits import committable_offset, guard_commit_head


@pytest.mark.parametrize(
    ("acked", "committed", "gaps", "want"),
    [
        ([0, 1, 2], 0, [], 3),
        ([1, 2, 3], 0, [], None),  # offset 0 not acked: Faust committed 4 here
        ([6, 7], 5, [], None),  # the message at the committed offset not acked: Faust committed 8
        ([5, 6, 7, 9], 5, [], 8),  # up to the next hole only
        ([8, 9], 5, [(5, 8)], 10),  # 5-7 hold no message (compacted away)
        ([8, 9], 5, [(6, 8)], None),  # 5 is a message, not acked
        ([1, 2], None, [], None),  # start unknown: nothing is committed
        ([], 3, [], None),
    ],
)
def test_committable_offset_starts_at_the_committed_offset(
    acked: list[int], committed: int | None, gaps: list[tuple[int, int]], want: int | None
) -> None:
    assert committable_offset(acked, committed, gaps) == want


class OffsetBook:
    """The part of Faust's consumer that :func:`guard_commit_head` wraps: its offset
    bookkeeping, with Faust's own ``_new_offset`` rule (the first run of consecutive
    acked offsets, checked against the committed offset only when that is truthy,
    one offset late). A stand-in: a started Faust consumer needs a broker and a
    running event loop; the worker's real one is guarded by ``WorkerFaustApp``."""

    def __init__(self, committed: dict[TP, int | None], earliest: dict[TP, int]) -> None:
        self._committed_offset = dict(committed)
        self._acked: dict[TP, list[int]] = {tp: [] for tp in committed}
        self._acked_index: dict[TP, set[int]] = {tp: set() for tp in committed}
        self._gap: dict[TP, IntervalTree] = {tp: IntervalTree() for tp in committed}
        self.earliest = earliest

    def assignment(self) -> set[TP]:
        return set(self._committed_offset)

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest[tp] for tp in tps}

    async def perform_seek(self) -> None:
        pass

    def _new_offset(self, tp: TP) -> int | None:
        acked = sorted(self._acked[tp])
        committed = self._committed_offset[tp]
        if committed and min(acked) - committed > 1:
            return None
        end = acked[0]
        while end + 1 in acked:
            end += 1
        return end + 1


def test_the_guard_holds_commits_where_faust_passed_an_unacked_head() -> None:
    new, old = TP("flows.v1", 2), TP("flows.v1", 3)
    book = OffsetBook({new: None, old: 5}, earliest={new: 0, old: 0})
    book._acked[new] = [1, 2, 3]
    book._acked[old] = [6, 7]
    # Faust's rule commits past the unacked offsets 0 and 5.
    assert (book._new_offset(new), book._new_offset(old)) == (4, 8)
    guard_commit_head(book)
    asyncio.run(book.perform_seek())  # the partition without a commit starts at its earliest
    assert book._committed_offset[new] == 0
    assert (book._new_offset(new), book._new_offset(old)) == (None, None)
    book._acked[new] = [0, 1, 2, 3]
    book._acked[old] = [5, 6, 7]
    assert (book._new_offset(new), book._new_offset(old)) == (4, 8)


def test_the_guard_never_commits_across_an_offset_faust_passed_over() -> None:
    # Faust's fetcher records an offset it passed over as a gap and its own
    # rule commits across it; on the worker's topics that offset is a message
    # not processed yet (streams.order fetches it again).
    tp = TP("flows.v1", 0)
    book = OffsetBook({tp: 0}, earliest={tp: 0})
    book._acked[tp] = [0, 1, 2, 4, 5]
    book._gap[tp].addi(3, 4)
    guard_commit_head(book)
    assert book._new_offset(tp) == 3
    # Faust's bookkeeping: what the commit covers is gone from the acked offsets.
    assert book._acked[tp] == [4, 5]
    book._committed_offset[tp] = 3  # what Faust records after the commit
    book._acked[tp].append(3)
    assert book._new_offset(tp) == 6


def test_the_worker_app_guards_its_consumer() -> None:
    from voipflow.streams.app import WorkerFaustApp

    assert "guard_commit_head(consumer)" in inspect.getsource(WorkerFaustApp._new_consumer)
