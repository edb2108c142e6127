"""Longest-prefix match over IPv4 and IPv6 addresses, vectorised over a batch.

A :class:`PrefixTable` is built once from ``(prefix, value)`` pairs: the
(possibly nested) prefixes are flattened into disjoint address ranges, each
carrying the value of the longest prefix that covers it. A lookup is then one
``numpy.searchsorted`` of the batch's 16-byte addresses (``S16``, IPv4 mapped
into ``::ffff:0:0/96`` as in ``flows.v1``) over the sorted range starts, and
one comparison with the range ends — no Python work per address.

Most IPv4 addresses need no search at all: for each of the 65,536 /16
blocks the table notes the value of the whole block when no range starts or
ends inside it (a block in no range, or inside one), and an address of such
a block takes that value with one index. Only addresses of blocks that a
range boundary cuts are searched.

Big-endian 16-byte strings sort like the 128-bit numbers they encode, so the
``S16`` columns of a flow batch could be searched as they are; comparing
numbers is several times cheaper than comparing byte strings, though, so
addresses whose high 64 bits are zero (every IPv4-mapped address) are
searched by their low 64 bits among the ranges that start there, and only
the others (IPv6) as ``S16``.

Errors::

    PrefixError     a prefix that does not parse (the message names it)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from voipflow.schemas.flowbatch import addr16_halves

IPV4_MAPPED = 0xFFFF << 32

#: A /16 block's entry when range boundaries cut it: search its addresses.
_SEARCH = -2


class PrefixError(ValueError):
    """A prefix that is not a valid IPv4 or IPv6 CIDR."""


def prefix_range(prefix: str | ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    """First and last 128-bit address of a prefix, IPv4 mapped into ``::ffff:0:0/96``."""
    if isinstance(prefix, str):
        try:
            net = ipaddress.ip_network(prefix.strip(), strict=False)
        except ValueError as exc:
            raise PrefixError(f"{prefix!r} is not a CIDR prefix") from exc
    else:
        net = prefix
    first = int(net.network_address)
    last = int(net.broadcast_address)
    if net.version == 4:
        first |= IPV4_MAPPED
        last |= IPV4_MAPPED
    return first, last


def _to_s16(values: list[int]) -> np.ndarray:
    return np.array([v.to_bytes(16, "big") for v in values], dtype="S16")


@dataclass(frozen=True, slots=True)
class PrefixTable:
    """Disjoint sorted ranges ``[starts[i], ends[i]]`` -> ``values[i]``."""

    starts: np.ndarray  # S16, sorted
    ends: np.ndarray  # S16
    values: np.ndarray  # int32
    prefixes: int  # how many prefixes it was built from
    # the low 64 bits of the starts whose high 64 bits are zero (a prefix of
    # ``starts``, which is sorted), and of every end, with the ends' high bits
    _low_starts: np.ndarray = field(init=False, repr=False, compare=False)
    _ends_hi: np.ndarray = field(init=False, repr=False, compare=False)
    _ends_lo: np.ndarray = field(init=False, repr=False, compare=False)
    # per IPv4 /16 block: the value of every address in it, or _SEARCH
    _v4_blocks: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s_hi, s_lo = addr16_halves(self.starts)
        e_hi, e_lo = addr16_halves(self.ends)
        object.__setattr__(self, "_low_starts", s_lo[s_hi == 0])
        object.__setattr__(self, "_ends_hi", e_hi)
        object.__setattr__(self, "_ends_lo", e_lo)
        object.__setattr__(self, "_v4_blocks", self._block_values())

    def _block_values(self) -> np.ndarray:
        """Per /16 of IPv4: the value of its first address when no range starts
        or ends after that address inside the block, else ``_SEARCH``."""
        first = np.uint64(IPV4_MAPPED) + (np.arange(1 << 16, dtype=np.uint64) << np.uint64(16))
        last = first + np.uint64(0xFFFF)
        low_ends = self._ends_lo[self._ends_hi == 0]
        # A range changes the value at its start and just after its end.
        bounds = np.sort(np.concatenate([self._low_starts, low_ends + np.uint64(1)]))
        cuts = np.searchsorted(bounds, last, side="right") - np.searchsorted(
            bounds, first, side="right"
        )
        values = self._lookup_low(first, np.zeros(len(first), dtype=np.uint64), first)
        out: np.ndarray = np.where(cuts == 0, values, _SEARCH).astype(np.int32)
        return out

    @classmethod
    def build(
        cls,
        items: Iterable[tuple[str | ipaddress.IPv4Network | ipaddress.IPv6Network, int]],
    ) -> PrefixTable:
        """Flatten ``(prefix, value)`` pairs; for a prefix given twice the last wins.

        Values must be >= 0 (-1 means "no match" in lookups).
        """
        by_range: dict[tuple[int, int], int] = {}
        for prefix, value in items:
            if value < 0:
                raise ValueError("prefix values must be >= 0")
            by_range[prefix_range(prefix)] = int(value)
        # Containing prefixes sort before the ones they contain: by start, then
        # by end descending. CIDR prefixes nest or are disjoint, never overlap
        # partially, so a stack of open prefixes resolves the longest match.
        ordered = sorted(by_range.items(), key=lambda kv: (kv[0][0], -kv[0][1]))
        starts: list[int] = []
        ends: list[int] = []
        values: list[int] = []

        def emit(lo: int, hi: int, value: int) -> None:
            if lo > hi:
                return
            if values and values[-1] == value and ends[-1] + 1 == lo:
                ends[-1] = hi  # merge with the previous range of the same value
                return
            starts.append(lo)
            ends.append(hi)
            values.append(value)

        stack: list[tuple[int, int]] = []  # (end, value) of open prefixes
        cursor = 0
        for (first, last), value in ordered:
            while stack and stack[-1][0] < first:
                end, val = stack.pop()
                emit(cursor, end, val)
                cursor = end + 1
            if stack:
                emit(cursor, first - 1, stack[-1][1])
            cursor = first
            stack.append((last, value))
        while stack:
            end, val = stack.pop()
            emit(cursor, end, val)
            cursor = end + 1
        return cls(_to_s16(starts), _to_s16(ends), np.array(values, dtype=np.int32), len(by_range))

    @classmethod
    def empty(cls) -> PrefixTable:
        return cls(np.zeros(0, "S16"), np.zeros(0, "S16"), np.zeros(0, np.int32), 0)

    def __len__(self) -> int:
        return self.prefixes

    def lookup(self, addrs: np.ndarray) -> np.ndarray:
        """Value of the longest prefix containing each address, -1 where none does."""
        addrs = np.asarray(addrs, dtype="S16")
        if not len(self.starts) or not len(addrs):
            return np.full(len(addrs), -1, dtype=np.int32)
        hi, lo = addr16_halves(addrs)
        v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
        block = ((lo >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.intp)
        out: np.ndarray = np.where(v4, self._v4_blocks[block], _SEARCH).astype(np.int32)
        todo = np.flatnonzero(out == _SEARCH)
        if len(todo):
            out[todo] = self._lookup_low(addrs[todo], hi[todo], lo[todo])
        return out

    def _lookup_low(self, addrs: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """:meth:`lookup` by binary search; ``addrs`` (S16) is read only where ``hi``
        is not 0, so for IPv4-mapped addresses their halves alone will do."""
        out = np.full(len(addrs), -1, dtype=np.int32)
        if not len(self.starts):
            return out
        low = hi == 0
        # Below 2**64 a start <= the address is one of the low starts: the
        # last of those by the low bits is the last of all.
        idx = np.searchsorted(self._low_starts, lo, side="right") - 1
        if not low.all():
            high = np.flatnonzero(~low)
            idx[high] = np.searchsorted(self.starts, addrs[high], side="right") - 1
        safe = np.maximum(idx, 0)
        e_hi = self._ends_hi[safe]
        inside = (hi < e_hi) | ((hi == e_hi) & (lo <= self._ends_lo[safe]))
        hit = (idx >= 0) & inside
        out[hit] = self.values[safe[hit]]
        return out

    def contains(self, addrs: np.ndarray) -> np.ndarray:
        """Whether each address is inside any prefix of the table."""
        return self.lookup(addrs) >= 0


def parse_prefix_lines(text: str) -> list[str]:
    """CIDR lines of a provider range file: ``#`` starts a comment, blanks skipped."""
    out = []
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            out.append(item)
    return out


__all__ = ["IPV4_MAPPED", "PrefixError", "PrefixTable", "parse_prefix_lines", "prefix_range"]
