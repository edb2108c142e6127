"""The small interface both ClickHouse backends implement, and column helpers.

A backend runs statements (:meth:`ClickHouse.execute`), answers queries as
rows with column names (:meth:`ClickHouse.query`) and inserts whole columns
(:meth:`ClickHouse.insert`): numpy arrays, Arrow arrays or one Arrow record
batch, never rows. An insert may carry a deduplication token; backends that
can deduplicate by token (ClickHouse >= 22.2, chdb) say so with
``supports_dedup_token`` and the sink relies on another guard where they
cannot (see :mod:`voipflow.storage.sink.replay`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
import pyarrow as pa

#: What :meth:`ClickHouse.insert` accepts as columns.
Columns: TypeAlias = "Mapping[str, Any] | pa.RecordBatch"


@dataclass(slots=True)
class QueryResult:
    """Rows of a query with their column names (and ClickHouse types where known)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    types: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def scalar(self) -> Any:
        """The single value of a one-row, one-column result."""
        if len(self.rows) != 1 or len(self.rows[0]) != 1:
            raise ValueError(f"expected one value, got {len(self.rows)} rows")
        return self.rows[0][0]

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


@runtime_checkable
class ClickHouse(Protocol):
    """One connection to a ClickHouse engine, bound to one database."""

    #: ``chdb`` or ``native``.
    kind: str
    #: Database that unqualified table names refer to.
    database: str

    @property
    def version(self) -> tuple[int, ...]: ...

    @property
    def supports_dedup_token(self) -> bool: ...

    def execute(self, sql: str, settings: Mapping[str, Any] | None = None) -> None: ...

    def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> QueryResult: ...

    def insert(
        self,
        table: str,
        columns: Columns,
        dedup_token: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> int: ...

    def ensure_database(self) -> None: ...

    def close(self) -> None: ...


def result_from_arrow(data: bytes) -> QueryResult:
    """An ``ArrowStream`` answer as a :class:`QueryResult` (both backends get one)."""
    if not data:
        return QueryResult([], [])
    table = pa.ipc.open_stream(data).read_all()
    pylists = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = list(zip(*pylists, strict=True)) if pylists else []
    return QueryResult(table.column_names, rows, [str(t) for t in table.schema.types])


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def dedup_supported(version: Sequence[int]) -> bool:
    """``insert_deduplication_token`` exists from ClickHouse 22.2 on."""
    return tuple(version[:2]) >= (22, 2)


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def settings_clause(settings: Mapping[str, Any]) -> str:
    parts = []
    for k, v in settings.items():
        if isinstance(v, str):
            parts.append(f"{k} = {quote_literal(v)}")
        elif isinstance(v, bool):
            parts.append(f"{k} = {int(v)}")
        else:
            parts.append(f"{k} = {v}")
    return " SETTINGS " + ", ".join(parts) if parts else ""


def to_arrow_array(values: Any) -> pa.Array:
    """numpy/Arrow/list column -> Arrow array, without a per-row copy where possible.

    ``S16`` numpy arrays (addresses in the flow contracts) become
    ``fixed_size_binary(16)`` over the same buffer; ``datetime64`` keeps its
    unit; big-endian numbers are byte-swapped once.
    """
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "S":
            width = values.dtype.itemsize
            arr = np.ascontiguousarray(values)
            return pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(width), len(arr), [None, pa.py_buffer(arr)]
            )
        if values.dtype.byteorder == ">":
            values = values.astype(values.dtype.newbyteorder("="))
        if values.dtype == object:
            return pa.array(values.tolist())
        return pa.array(values)
    return pa.array(values)


def to_record_batch(columns: Columns) -> pa.RecordBatch:
    if isinstance(columns, pa.RecordBatch):
        return columns
    arrays = {name: to_arrow_array(col) for name, col in columns.items()}
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns differ in length: {sorted(lengths)}")
    return pa.RecordBatch.from_pydict(arrays)


def to_numpy_column(values: Any) -> Any:
    """A column as clickhouse-driver's numpy mode wants it."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        t = values.type
        if pa.types.is_fixed_size_binary(t):
            width = t.byte_width
            buf = values.buffers()[1]
            return np.frombuffer(
                buf, dtype=f"S{width}", count=len(values), offset=values.offset * width
            )
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return values.to_pylist()
        return values.to_numpy(zero_copy_only=False)
    if isinstance(values, np.ndarray) and values.dtype.byteorder == ">":
        return values.astype(values.dtype.newbyteorder("="))
    return values
