"""Grouping by counting gives exactly what sorting (np.unique, argsort) gives."""

from __future__ import annotations

import numpy as np
import pytest

from voipflow.streams.grouping import TABLE_MAX, group_codes, same_or_unique, stable_order


@pytest.mark.parametrize(
    ("n", "low", "high"),
    [
        (1, 0, 1),
        (20_000, 0, 400),  # cities x windows x apps: counted in a table
        (20_000, -50, 50),  # below zero
        (5_000, 0, 2**40),  # a wide range: sorted instead
        (100, 0, TABLE_MAX + 10),  # wider than the table, few records: sorted
    ],
)
def test_group_codes_are_numpys_unique_with_inverse(n: int, low: int, high: int) -> None:
    key = np.random.default_rng(n + high).integers(low, high, n, dtype=np.int64)
    uniq, code = group_codes(key)
    want_uniq, want_code = np.unique(key, return_inverse=True)
    assert uniq.dtype == key.dtype
    assert uniq.tolist() == want_uniq.tolist()
    assert code.tolist() == want_code.reshape(-1).tolist()
    assert (uniq[code] == key).all()


def test_group_codes_of_nothing() -> None:
    uniq, code = group_codes(np.zeros(0, dtype=np.int64))
    assert len(uniq) == 0 and len(code) == 0


def test_same_or_unique_with_one_value_and_with_several() -> None:
    one = np.array([b"a" * 16] * 5, dtype="S16")
    uniq, code = same_or_unique(one)
    assert uniq.tolist() == [b"a" * 16] and code.tolist() == [0] * 5
    mixed = np.array([b"b", b"a", b"b", b"c"], dtype="S16")
    uniq, code = same_or_unique(mixed)
    assert uniq.tolist() == [b"a", b"b", b"c"] and code.tolist() == [1, 0, 1, 2]


@pytest.mark.parametrize("groups", [3, 70_000])
def test_stable_order_is_a_stable_argsort(groups: int) -> None:
    codes = np.random.default_rng(groups).integers(0, groups, 10_000).astype(np.intp)
    assert stable_order(codes, groups).tolist() == np.argsort(codes, kind="stable").tolist()
