"""From decoded batches to Kafka messages: accumulate, split by exporter, size.

The decoder returns one :class:`~schemas.flowbatch.FlowBatch` per group of
datagrams, of whatever size the traffic gave. Here they are accumulated
until ``batch_max_records`` or ``batch_max_delay_ms``, concatenated column by
column, split by exporter (one Kafka key per exporter keeps an exporter's
flows in order on one partition) and cut so that no encoded message passes
``max_message_bytes``. All of it is whole-column numpy / Arrow work; no
Python runs per record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from schemas import flowbatch
from schemas.flowbatch import FlowBatch


def concat(batches: Sequence[FlowBatch]) -> FlowBatch:
    """One batch with the rows of all ``batches`` in order.

    An extra column missing from some batches is filled with nulls there; if
    batches disagree on an extra column's type, the column is cast to the
    first batch's type, or left out where that fails (extras are optional by
    contract).
    """
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return flowbatch.make_batch({})
    if len(batches) == 1:
        return batches[0]
    cols: dict[str, Any] = {}
    for name in flowbatch.FLOW_COLUMNS:
        parts = [b.columns[name] for b in batches]
        if isinstance(parts[0], pa.Array):
            cols[name] = pa.concat_arrays(
                [p if isinstance(p, pa.Array) else pa.array(p) for p in parts]
            )
        else:
            cols[name] = np.concatenate(parts)
    n = sum(b.num_rows for b in batches)
    extras: dict[str, pa.Array] = {}
    names = dict.fromkeys(k for b in batches for k in b.extras)
    for name in names:
        typ = next(b.extras[name].type for b in batches if name in b.extras)
        pieces = []
        try:
            for b in batches:
                arr = b.extras.get(name)
                if arr is None:
                    pieces.append(pa.nulls(b.num_rows, typ))
                else:
                    pieces.append(arr if arr.type == typ else arr.cast(typ))
            extras[name] = pa.concat_arrays(pieces)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return FlowBatch(cols, n, extras)


def split_by_exporter(batch: FlowBatch) -> Iterator[tuple[bytes, FlowBatch]]:
    """(exporter address 16 bytes, its rows) for each exporter, rows kept in order."""
    n = batch.num_rows
    if not n:
        return
    exporters = batch.columns["exporter_addr"]
    # Compared as two uint64 per address: much cheaper than bytes compares.
    halves = np.ascontiguousarray(exporters).view(np.uint64).reshape(-1, 2)
    if (halves == halves[0]).all():  # the common case: one exporter per group
        yield bytes(exporters[0]), batch
        return
    uniq, inverse = np.unique(exporters, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(uniq)))
    start = 0
    for i, end in enumerate(bounds.tolist()):
        yield bytes(uniq[i]), batch.take(order[start:end])
        start = end


def _slice(batch: FlowBatch, start: int, stop: int) -> FlowBatch:
    cols: dict[str, Any] = {}
    for name, col in batch.columns.items():
        if isinstance(col, np.ndarray):
            cols[name] = col[start:stop]
        else:
            cols[name] = col.slice(start, stop - start)
    extras = {k: v.slice(start, stop - start) for k, v in batch.extras.items()}
    return FlowBatch(cols, stop - start, extras)


class MessageEncoder:
    """Encode batches as messages of at most ``max_bytes`` and ``max_rows`` each.

    The bytes a record takes once encoded are learnt from the messages made
    so far, so a big batch is cut into right-sized row ranges before it is
    encoded, not encoded whole first only to find it too big. A piece that
    still overflows is halved and encoded again. A single record larger than
    ``max_bytes`` is sent alone: the broker, not this code, decides.
    """

    def __init__(
        self, max_bytes: int, max_rows: int | None = None, compression: str | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        #: Arrow IPC body compression of the messages (None: plain buffers).
        self.compression = compression
        #: Encoded bytes per record seen last (0 until the first message).
        self.row_bytes = 0.0
        # Bytes of a message with no rows (schema, framing), per set of extras.
        self._overhead: dict[tuple[str, ...], int] = {}

    def _fixed_bytes(self, batch: FlowBatch) -> int:
        key = tuple(f"{k}:{v.type}" for k, v in batch.extras.items())
        size = self._overhead.get(key)
        if size is None:
            if len(self._overhead) > 64:
                self._overhead.clear()
            # From two small messages (a zero-row slice would not do: Arrow
            # then writes whole buffers).
            n = min(batch.num_rows, 11)
            one = flowbatch.encode_view(_slice(batch, 0, 1), self.compression).nbytes
            more = (
                flowbatch.encode_view(_slice(batch, 0, n), self.compression).nbytes
                if n > 1
                else one
            )
            per_row = (more - one) / (n - 1) if n > 1 else 0.0
            size = self._overhead[key] = max(0, int(one - per_row))
        return size

    def encode(self, batch: FlowBatch) -> list[tuple[bytes | memoryview, int]]:
        """(message value, records) pairs covering every row of ``batch`` in order."""
        n = batch.num_rows
        if n == 0:
            return []
        out: list[tuple[bytes | memoryview, int]] = []
        start = 0
        while start < n:
            rows = n - start if self.max_rows is None else min(n - start, self.max_rows)
            if self.row_bytes:
                room = self.max_bytes * 0.9 - self._fixed_bytes(batch)
                rows = min(rows, max(1, int(room / self.row_bytes)))
            piece = batch if rows == n else _slice(batch, start, start + rows)
            out.extend(self._fit(piece))
            start += rows
        return out

    def _fit(self, batch: FlowBatch) -> list[tuple[bytes | memoryview, int]]:
        value = flowbatch.encode_view(batch, self.compression)
        n = batch.num_rows
        if n:
            self.row_bytes = max(1.0, (value.nbytes - self._fixed_bytes(batch)) / n)
        if value.nbytes <= self.max_bytes or n <= 1:
            return [(value, n)]
        half = n // 2
        return self._fit(_slice(batch, 0, half)) + self._fit(_slice(batch, half, n))


def encode_sized(
    batch: FlowBatch, max_bytes: int, max_rows: int | None = None
) -> list[tuple[bytes | memoryview, int]]:
    """One-off :class:`MessageEncoder` use (nothing learnt beforehand)."""
    return MessageEncoder(max_bytes, max_rows).encode(batch)


class Accumulator:
    """Collects decoded batches until one is due by size or by age."""

    def __init__(self, max_records: int, max_delay_ms: int) -> None:
        self.max_records = max_records
        self.max_delay_s = max_delay_ms / 1000.0
        self._batches: list[FlowBatch] = []
        self._records = 0
        self._since = 0.0

    @property
    def records(self) -> int:
        return self._records

    def add(self, batch: FlowBatch, now: float) -> None:
        """Add a decoded batch received at ``now`` (monotonic seconds)."""
        if not batch.num_rows:
            return
        if not self._batches:
            self._since = now
        self._batches.append(batch)
        self._records += batch.num_rows

    def due(self, now: float) -> bool:
        return bool(self._batches) and (
            self._records >= self.max_records or now - self._since >= self.max_delay_s
        )

    def deadline(self) -> float | None:
        """Monotonic time at which the held records become due by age."""
        return self._since + self.max_delay_s if self._batches else None

    def take(self) -> FlowBatch | None:
        """Everything accumulated as one batch (None if empty), and start over."""
        if not self._batches:
            return None
        out = concat(self._batches)
        self._batches = []
        self._records = 0
        return out
