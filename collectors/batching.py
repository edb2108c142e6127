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

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.collectors.codec.assemble import concat
from voipflow.schemas import flowbatch
from voipflow.schemas.flowbatch import FlowBatch


def exporter_ranges(batch: FlowBatch) -> tuple[FlowBatch, list[tuple[bytes, int, int]]]:
    """The rows grouped by exporter (order kept within each) and, per exporter,
    its address (16 bytes) and row range in that batch.

    One ``take`` of the whole batch, however many exporters: the parts are
    then slices (views), not one copy per exporter.
    """
    n = batch.num_rows
    if not n:
        return batch, []
    exporters = batch.columns["exporter_addr"]
    # Compared as two uint64 per address: much cheaper than bytes compares.
    halves = np.ascontiguousarray(exporters).view(np.uint64).reshape(-1, 2)
    if (halves == halves[0]).all():  # the common case: one exporter per group
        return batch, [(bytes(exporters[0]), 0, n)]
    uniq, inverse = np.unique(exporters, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(uniq))).tolist()
    ranges = []
    start = 0
    for i, end in enumerate(bounds):
        ranges.append((bytes(uniq[i]), start, end))
        start = end
    return batch.take(order), ranges


#: Messages of fewer rows are not compressed (see :meth:`MessageEncoder._fit`).
SMALL_MESSAGE_ROWS = 32


class MessageEncoder:
    """Encode batches as messages of at most ``max_bytes`` and ``max_rows`` each.

    The bytes a record takes once encoded are learnt from the messages made
    so far, so a big batch is cut into right-sized row ranges before it is
    encoded, not encoded whole first only to find it too big. A piece that
    still overflows is halved and encoded again. A single record larger than
    ``max_bytes`` is sent alone: the broker, not this code, decides.

    Batches may be given as :class:`FlowBatch` or as the Arrow record batch
    of one (:meth:`FlowBatch.to_arrow`, or a slice of one): converting a
    whole batch once and slicing it per exporter saves a conversion per
    message.
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
        # Bytes of a message with no rows (schema, framing), per set of extra
        # columns (hashing a pa.Schema itself takes ~15 us).
        self._overhead: dict[tuple[Any, ...], int] = {}

    def _fixed_bytes(self, rb: pa.RecordBatch) -> int:
        schema = rb.schema
        core = len(flowbatch.FLOW_COLUMNS)
        key = (tuple(schema.names[core:]), tuple(str(t) for t in schema.types[core:]))
        size = self._overhead.get(key)
        if size is None:
            if len(self._overhead) > 64:
                self._overhead.clear()
            # From two small messages (a zero-row slice would not do: Arrow
            # then writes whole buffers).
            n = min(rb.num_rows, 11)
            one = flowbatch.encode_view(rb.slice(0, 1), self.compression).nbytes
            more = flowbatch.encode_view(rb.slice(0, n), self.compression).nbytes if n > 1 else one
            per_row = (more - one) / (n - 1) if n > 1 else 0.0
            size = self._overhead[key] = max(0, int(one - per_row))
        return size

    def encode(self, batch: FlowBatch | pa.RecordBatch) -> list[tuple[bytes | memoryview, int]]:
        """(message value, records) pairs covering every row of ``batch`` in order."""
        rb = batch.to_arrow() if isinstance(batch, FlowBatch) else batch
        n = rb.num_rows
        if n == 0:
            return []
        out: list[tuple[bytes | memoryview, int]] = []
        fixed = self._fixed_bytes(rb) if n >= SMALL_MESSAGE_ROWS else 0
        start = 0
        while start < n:
            rows = n - start if self.max_rows is None else min(n - start, self.max_rows)
            if self.row_bytes and fixed:
                room = self.max_bytes * 0.9 - fixed
                rows = min(rows, max(1, int(room / self.row_bytes)))
            piece = rb if rows == n else rb.slice(start, rows)
            out.extend(self._fit(piece, fixed))
            start += rows
        return out

    def _fit(self, rb: pa.RecordBatch, fixed: int) -> list[tuple[bytes | memoryview, int]]:
        n = rb.num_rows
        if n < SMALL_MESSAGE_ROWS:
            # A few rows: compressing 27 tiny buffers costs more CPU (about
            # as much again as the whole encoding) than it saves bytes.
            value = flowbatch.encode_view(rb, None)
        else:
            value = flowbatch.encode_view(rb, self.compression)
            self.row_bytes = max(1.0, (value.nbytes - fixed) / n)
        if value.nbytes <= self.max_bytes or n <= 1:
            return [(value, n)]
        half = n // 2
        return self._fit(rb.slice(0, half), fixed) + self._fit(rb.slice(half, n - half), fixed)


class Accumulator:
    """Collects decoded batches until they are due: by size or by age.

    Each exporter's rows become Kafka messages of their own, so the size
    that matters is per exporter: the batches are due when one exporter has
    ``max_records`` rows waiting (a full message), or all together
    ``total_factor`` times as many (a memory bound when many exporters each
    send little), or the oldest row waited ``max_delay_ms``. With many
    exporters the messages are then bigger than if every ``max_records``
    rows of all of them were cut, which would make one small message per
    exporter every time.
    """

    def __init__(self, max_records: int, max_delay_ms: int, total_factor: int = 4) -> None:
        self.max_records = max_records
        self.max_total = max_records * max(1, total_factor)
        self.max_delay_s = max_delay_ms / 1000.0
        self._batches: list[FlowBatch] = []
        self._records = 0
        self._per_exporter: dict[bytes, int] = {}
        self._largest = 0
        self._since = 0.0

    @property
    def records(self) -> int:
        return self._records

    def add(
        self, batch: FlowBatch, now: float, per_exporter: Mapping[bytes, int] | None = None
    ) -> None:
        """Add a decoded batch received at ``now`` (monotonic seconds), with its
        rows per exporter (address -> rows; None: all from one exporter)."""
        if not batch.num_rows:
            return
        if not self._batches:
            self._since = now
        self._batches.append(batch)
        self._records += batch.num_rows
        if per_exporter is None:
            per_exporter = {b"": batch.num_rows}
        counts = self._per_exporter
        for exporter, n in per_exporter.items():
            now_n = counts.get(exporter, 0) + n
            counts[exporter] = now_n
            if now_n > self._largest:
                self._largest = now_n

    def full(self) -> bool:
        """Due by size (see the class doc)."""
        return self._largest >= self.max_records or self._records >= self.max_total

    def due(self, now: float) -> bool:
        return bool(self._batches) and (self.full() or now - self._since >= self.max_delay_s)

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
        self._per_exporter = {}
        self._largest = 0
        return out
