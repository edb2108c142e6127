"""Group a batch's records by a small integer key without sorting them.

The per-batch aggregations (per city, window and app; per exporter, domain
and window) group tens of thousands of records into a few hundred groups.
``np.unique(key, return_inverse=True)`` sorts the keys to do that, which was
a tenth of the worker's flow step; the keys span a small range, so a table
of that range finds the groups in two linear passes instead.
"""

from __future__ import annotations

import numpy as np

#: Keys spanning more than this (and more than four per record) are grouped by
#: sorting: a table of the range would cost more than the sort.
TABLE_MAX = 1 << 20


def group_codes(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True)`` for integer keys: the distinct keys
    ascending, and for each record the index of its key among them (intp)."""
    key = np.asarray(key)
    if not len(key):
        return key[:0], np.zeros(0, dtype=np.intp)
    lo, hi = int(key.min()), int(key.max())
    span = hi - lo + 1
    if span > max(4 * len(key), TABLE_MAX):
        uniq, inverse = np.unique(key, return_inverse=True)
        return uniq, inverse.reshape(-1)
    rel = (key - lo).astype(np.intp, copy=False)
    present = np.zeros(span, dtype=bool)
    present[rel] = True
    slots = np.flatnonzero(present)
    index = np.cumsum(present, dtype=np.intp) - 1
    return (slots + lo).astype(key.dtype, copy=False), index[rel]


def same_or_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` that skips the sort when every
    value is the first (a collector's batch holds one exporter, most often)."""
    if len(values) and _all_first(values):
        return values[:1], np.zeros(len(values), dtype=np.intp)
    uniq, inverse = np.unique(values, return_inverse=True)
    return uniq, inverse.reshape(-1)


def _all_first(values: np.ndarray) -> bool:
    """Every value equals the first. Fixed-width byte strings (addresses,
    ``S16``) compare as their 8-byte words: numpy compares strings one
    character at a time, ten times slower."""
    if values.dtype.kind == "S" and values.dtype.itemsize % 8 == 0 and values.flags.c_contiguous:
        words = values.view(np.uint64).reshape(len(values), -1)
        return bool((words == words[0]).all())
    return bool((values == values[0]).all())


def stable_order(codes: np.ndarray, groups: int) -> np.ndarray:
    """Indices that sort ``codes`` (values below ``groups``) stably; a radix sort
    when they fit 16 bits."""
    if groups <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    return np.argsort(codes, kind="stable")
