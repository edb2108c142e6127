"""Replay deduplication: a batch the sink may have inserted already goes in once.

Exactly once, on both backends
------------------------------
A batch covers one partition's contiguous offset range ``[first, last]``; its
deduplication token is ``<table>/<topic>/<partition>/<first>-<last>``
(:func:`batch_token`).

1. Before inserting, the sink commits the partition's current offset
   (``first``, unchanged) with the metadata ``{"pending": [first, last]}``
   (:func:`intent_metadata`): an *intent* kept by Kafka with the group's
   offsets.
2. It inserts with the token.
3. It commits ``last + 1`` with empty metadata.

A sink that dies between 2 and 3 leaves the intent behind. Whoever owns the
partition next reads it (:func:`pending_last`) and rebuilds exactly that
batch, same messages, same rows, same token, before anything else: replays
are cut at the same offsets. ClickHouse >= 22.2 and chdb then drop the
replayed block (``insert_deduplication_token`` with
``non_replicated_deduplication_window`` or the replicated window, carried
into materialized views by
``deduplicate_blocks_in_dependent_materialized_views``).

Servers without tokens (ClickHouse < 22.2, such as Debian's 18.16) cannot
drop a replayed block, so there the table must carry ``kafka_partition`` and
``kafka_offset`` columns (:data:`OFFSET_COLUMNS`), filled by the sink.
Whenever the outcome of an insert is unknown (first batch of a partition
after an assignment, a replayed intent, a retry after an error) the sink
first asks which offsets of the range the table already holds and leaves
those messages out (:func:`drop_present`).

Usage and traffic windows are re-published with the same values after a
worker crash, at new offsets: the sink keeps the first copy per
(window_start, city, app) of usage and (window_start, exporter,
observation_domain_id) of traffic by dropping rows whose key
``voip_usage_1m`` / ``exporter_traffic_1m`` already holds (and repeats within
a batch), so the hourly and daily rollups never see a window twice
(:func:`first_copies`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.storage.clickhouse import ClickHouse
from voipflow.storage.clickhouse.base import quote_literal
from voipflow.storage.sink.metrics import SinkMetrics
from voipflow.storage.sink.tables import TableSpec

log = logging.getLogger(__name__)

#: Columns a table needs on a server without deduplication tokens.
OFFSET_COLUMNS = ("kafka_partition", "kafka_offset")


def batch_token(table: str, topic: str, partition: int, first: int, last: int) -> str:
    """The insert deduplication token of a batch: the same for its replay."""
    return f"{table}/{topic}/{partition}/{first}-{last}"


def intent_metadata(first: int, last: int) -> str:
    """The offset commit metadata that announces an insert of ``[first, last]``."""
    return json.dumps({"pending": [first, last]})


def pending_last(offset: int, metadata: str | None) -> int | None:
    """Last offset of the batch an intent left at committed ``offset``; None: no intent."""
    try:
        meta = json.loads(metadata) if metadata else {}
        first, last = meta["pending"]
    except (ValueError, KeyError, TypeError):
        return None
    if first == offset and last >= first:
        return int(last)
    return None


def drop_present(
    ch: ClickHouse,
    metrics: SinkMetrics,
    table: str,
    partition: int,
    first: int,
    last: int,
    cols: dict[str, Any],
    n: int,
) -> tuple[dict[str, Any], int]:
    """Leave out the rows of offsets ``[first, last]`` the table holds already."""
    res = ch.query(
        f"SELECT DISTINCT kafka_offset FROM {table} WHERE kafka_partition = {partition} "
        f"AND kafka_offset >= {first} AND kafka_offset <= {last}"
    )
    present = np.array([int(r[0]) for r in res.rows], dtype=np.uint64)
    if not len(present):
        return cols, n
    keep = ~np.isin(cols["kafka_offset"], present)
    kept = int(keep.sum())
    metrics.skipped.labels(table, "replayed").inc(n - kept)
    log.info(
        "replayed rows already in ClickHouse left out",
        extra={"table": table, "partition": partition, "rows": n - kept},
    )
    return mask(cols, keep), kept


def first_copies(
    ch: ClickHouse, metrics: SinkMetrics, spec: TableSpec, cols: dict[str, Any], n: int
) -> tuple[dict[str, Any], int]:
    """Keep only rows whose ``spec.first_copy_key`` neither the table nor the batch had."""
    assert spec.first_copy_key and spec.first_copy_table
    w_name, *names = spec.first_copy_key
    windows = np.asarray(cols[w_name]).astype("datetime64[s]").astype(np.int64)
    # 16-byte addresses are compared as hex: the table's IPv6 text form
    # would differ from Python's for IPv4-mapped addresses.
    exprs, values = [], []
    for name in names:
        col = cols[name]
        if isinstance(col, np.ndarray) and col.dtype == np.dtype("S16"):
            raw = np.ascontiguousarray(col).view(np.uint8).reshape(-1, 16)
            exprs.append(f"hex({name})")
            values.append([bytes(r).hex().upper() for r in raw])
        else:
            exprs.append(name)
            values.append(_as_list(col))
    keys = list(zip(windows.tolist(), *values, strict=True))
    firsts = sorted({k[1] for k in keys})
    res = ch.query(
        f"SELECT DISTINCT toUnixTimestamp({w_name}), {', '.join(exprs)} "
        f"FROM {spec.first_copy_table} "
        f"WHERE {w_name} >= toDateTime({int(windows.min())}) "
        f"AND {w_name} < toDateTime({int(windows.max()) + 1}) "  # DateTime64: ms of the last s
        f"AND {exprs[0]} IN ({', '.join(_literal(v) for v in firsts)})"
    )
    seen = {tuple(r) for r in res.rows}
    keep = np.ones(n, dtype=bool)
    for i, key in enumerate(keys):
        if key in seen:
            keep[i] = False
        else:
            seen.add(key)
    kept = int(keep.sum())
    if kept < n:
        metrics.skipped.labels(spec.table, "repeated_window").inc(n - kept)
    return (mask(cols, keep), kept) if kept < n else (cols, n)


def mask(cols: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """The rows of ``cols`` where ``keep`` is true, column by column."""
    out: dict[str, Any] = {}
    for name, col in cols.items():
        if isinstance(col, np.ndarray):
            out[name] = col[keep]
        elif isinstance(col, pa.Array | pa.ChunkedArray):
            out[name] = col.filter(pa.array(keep))
        else:
            out[name] = [v for v, k in zip(col, keep, strict=True) if k]
    return out


def _literal(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return quote_literal(str(value))


def _as_list(col: Any) -> list[Any]:
    if isinstance(col, pa.Array | pa.ChunkedArray):
        return list(col.to_pylist())
    return list(np.asarray(col).tolist())
