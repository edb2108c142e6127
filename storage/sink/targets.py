"""The tables the sink writes: checked once at start, then fitted per insert.

At start every topic's table must exist and share columns with the topic;
on a server without deduplication tokens it must also carry the offset
columns (:data:`voipflow.storage.sink.replay.OFFSET_COLUMNS`). A table may lack some
of a topic's columns (an older schema): those are left out, said once in the
log. Each insert then keeps the table's columns and fits time resolution to
its types (:func:`adapt`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voipflow.storage.clickhouse import ClickHouse
from voipflow.storage.clickhouse.base import quote_literal
from voipflow.storage.sink.errors import SinkStopped
from voipflow.storage.sink.replay import OFFSET_COLUMNS
from voipflow.storage.sink.tables import TableSpec

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TableInfo:
    """What the sink knows of one table: its column types, whether it has offsets."""

    types: dict[str, str]
    with_offsets: bool


def check_tables(ch: ClickHouse, specs: Iterable[TableSpec]) -> dict[str, TableInfo]:
    """Each spec's table, or SinkStopped saying what to fix."""
    tables: dict[str, TableInfo] = {}
    for spec in specs:
        res = ch.query(
            "SELECT name, type FROM system.columns "
            f"WHERE database = currentDatabase() AND table = {quote_literal(spec.table)}"
        )
        types = {str(n): str(t) for n, t in res.rows}
        where = f"{ch.database}.{spec.table}"
        if not types:
            raise SinkStopped(
                f"table {where} does not exist (topic {spec.topic}): run `voipflow db migrate`"
            )
        offsets = all(c in types for c in OFFSET_COLUMNS)
        if not ch.supports_dedup_token and not offsets:
            version = ".".join(map(str, ch.version))
            raise SinkStopped(
                f"ClickHouse {version} has no insert_deduplication_token: table {where} "
                f"needs columns kafka_partition UInt32 and kafka_offset UInt64 so replayed "
                f"batches are not inserted twice"
            )
        common = [c for c in spec.columns if c in types]
        if not common:
            raise SinkStopped(
                f"table {where} has none of the columns of topic {spec.topic}: "
                f"expected some of {', '.join(spec.columns)}"
            )
        missing = [c for c in spec.columns if c not in types]
        if missing:
            log.info(
                "table lacks some columns; they are not stored",
                extra={"table": where, "columns": ",".join(missing)},
            )
        tables[spec.table] = TableInfo(types, offsets)
    return tables


def adapt(cols: dict[str, Any], info: TableInfo) -> dict[str, Any]:
    """Keep the table's columns and fit time resolution to its types."""
    out: dict[str, Any] = {}
    for name, col in cols.items():
        t = info.types.get(name)
        if t is None:
            continue
        if (
            isinstance(col, np.ndarray)
            and col.dtype.kind == "M"
            and (t == "DateTime" or t.startswith("DateTime("))
        ):
            col = col.astype("datetime64[s]")
        out[name] = col
    return out
