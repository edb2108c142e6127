"""The datagrams of one decode call in one buffer, and gathers out of it.

The receiving runtime reads datagrams back to back into one buffer
(:func:`voipflow.collectors.receiver.drain_into`); the codec reads headers and
records straight out of it. The trick used for both: a read-only array over
the call's bytes whose items start at *every* byte offset (stride 1), so
fancy indexing it with the datagrams' (or records') start offsets copies
exactly those items out. Shared by :mod:`voipflow.collectors.codec.bulk` (headers,
grouping) and :mod:`voipflow.collectors.codec.assemble` (records into columns); it
imports nothing of the codec, so neither has to import the other for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Bytes read from the start of every datagram (v9 header + set header).
HEAD = 24


def every_offset(buf: Any, dtype: np.dtype) -> np.ndarray:
    """A read-only view of ``buf`` with one ``dtype`` item starting at each byte."""
    count = max(len(buf) - dtype.itemsize + 1, 0)
    return np.ndarray(shape=(count,), dtype=dtype, buffer=buf, strides=(1,))


@dataclass(slots=True)
class Frame:
    """The datagrams of one decode call, back to back in one buffer."""

    #: the datagrams, with at least :data:`HEAD` bytes after the start of
    #: each (so every header read is in bounds); bytes or a receive buffer
    buf: bytes | bytearray
    offsets: np.ndarray  # int64: where each datagram starts in ``buf``
    lengths: np.ndarray  # int64: its length

    @classmethod
    def join(cls, payloads: Sequence[Any]) -> Frame:
        n = len(payloads)
        lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
        offsets = np.zeros(n, dtype=np.int64)
        if n > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        buf = b"".join([*payloads, bytes(HEAD)])
        return cls(buf, offsets, lengths)

    @classmethod
    def received(cls, buf: bytearray, sizes: Sequence[int]) -> Frame:
        """Datagrams read back to back into ``buf``.

        See :func:`voipflow.collectors.receiver.drain_into`.
        """
        lengths = np.array(sizes, dtype=np.int64)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        if len(lengths) and int(offsets[-1]) + HEAD > len(buf):
            raise ValueError("receive buffer without room for a header after the last datagram")
        return cls(buf, offsets, lengths)

    def __len__(self) -> int:
        return len(self.offsets)

    def select(self, keep: np.ndarray) -> Frame:
        """The same buffer, only the datagrams where ``keep``."""
        return Frame(self.buf, self.offsets[keep], self.lengths[keep])

    def view(self, i: int) -> memoryview:
        start = int(self.offsets[i])
        return memoryview(self.buf)[start : start + int(self.lengths[i])]


def gather_records(
    frame: Frame, starts: np.ndarray, counts: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """``counts[i]`` records of ``dtype`` from ``starts[i]`` on, for every i, as one array."""
    total = int(counts.sum())
    size = dtype.itemsize
    first = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=first[1:])
    # record k of datagram i starts at starts[i] + (k - first[i]) * size
    at = np.repeat(starts - first * size, counts) + np.arange(total, dtype=np.int64) * size
    return every_offset(frame.buf, raw_dtype(dtype))[at].view(dtype)


def raw_dtype(dtype: np.dtype) -> np.dtype:
    """Plain bytes of ``dtype``'s size: numpy copies those ten times faster than
    items with fields when gathering (one memcpy per item instead of one per field)."""
    return np.dtype((np.void, dtype.itemsize))
