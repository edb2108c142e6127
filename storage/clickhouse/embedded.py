"""Embedded ClickHouse through chdb: the engine in this process, data on disk.

Inserts go through chdb's streaming insert as one Arrow IPC stream per call
(``INSERT INTO t (cols) SETTINGS ... FORMAT ArrowStream``): the columns are
serialised once by Arrow and parsed by the engine's Arrow reader, with no
per-row Python work. A process hosts one chdb engine bound to one data
directory; opening a second directory while the first is open is refused by
chdb and reported here as :class:`~storage.clickhouse.errors.ConfigError`.
Only one process may use a data directory at a time.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from voipflow.storage.clickhouse.base import (
    Columns,
    QueryResult,
    dedup_supported,
    parse_version,
    quote_ident,
    result_from_arrow,
    settings_clause,
    to_record_batch,
)
from voipflow.storage.clickhouse.errors import (
    ClickHouseError,
    ConfigError,
    DiskFull,
    classify,
    code_of,
)

log = logging.getLogger(__name__)


def _translate(exc: Exception, sql: str) -> ClickHouseError:
    msg = str(exc)
    return classify(code_of(msg), msg, sql)


#: Free bytes the data directory must keep for an insert (or twice its Arrow size):
#: parts, their temporary files and background merges need room too.
MIN_FREE_BYTES = 64 * 1024 * 1024


class EmbeddedClickHouse:
    """chdb connection to ``path``, using ``database``."""

    kind = "chdb"

    def __init__(self, path: Path | str, database: str) -> None:
        self.path = Path(path)
        self.database = database
        self._lock = threading.Lock()
        try:
            from chdb import state
        except ImportError as exc:  # pragma: no cover - chdb is a dependency
            raise ConfigError(f"chdb is not installed: {exc}") from exc
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"chdb data directory {self.path}: {exc}") from exc
        try:
            self._conn: Any = state.connect(str(self.path))
        except Exception as exc:
            raise ConfigError(
                f"cannot open chdb data directory {self.path}: {exc} "
                "(one directory per process; is another voipflow process using it?)"
            ) from exc
        self._version = parse_version(self._raw("SELECT version()").strip().strip('"'))
        self._use_database()

    # -- plumbing -----------------------------------------------------------

    def _raw(self, sql: str, fmt: str = "CSV") -> str:
        with self._lock:
            if self._conn is None:
                raise ConfigError("connection is closed", sql=sql)
            try:
                res = self._conn.query(sql, fmt)
            except Exception as exc:
                raise _translate(exc, sql) from exc
        return str(res)

    def _use_database(self) -> None:
        try:
            self._raw(f"USE {quote_ident(self.database)}")
        except ClickHouseError as exc:
            if exc.code != 81:  # UNKNOWN_DATABASE: ensure_database() creates it
                raise

    # -- interface ----------------------------------------------------------

    @property
    def version(self) -> tuple[int, ...]:
        return self._version

    @property
    def supports_dedup_token(self) -> bool:
        return dedup_supported(self._version)

    def ensure_database(self) -> None:
        self._raw(f"CREATE DATABASE IF NOT EXISTS {quote_ident(self.database)}")
        self._use_database()

    def execute(self, sql: str, settings: Mapping[str, Any] | None = None) -> None:
        if settings:
            sql = sql.rstrip().rstrip(";") + settings_clause(settings)
        self._raw(sql)

    def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> QueryResult:
        if settings:
            sql = sql.rstrip().rstrip(";") + settings_clause(settings)
        with self._lock:
            if self._conn is None:
                raise ConfigError("connection is closed", sql=sql)
            try:
                data = self._conn.query(sql, "ArrowStream").bytes()
            except Exception as exc:
                raise _translate(exc, sql) from exc
        return result_from_arrow(data)

    def insert(
        self,
        table: str,
        columns: Columns,
        dedup_token: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> int:
        rb = to_record_batch(columns)
        if rb.num_rows == 0:
            return 0
        opts: dict[str, Any] = dict(settings or {})
        if dedup_token is not None:
            opts["insert_deduplication_token"] = dedup_token
            opts.setdefault("insert_deduplicate", 1)
            # Carry the token into materialized views so a replayed block is
            # dropped all the way down the chain, not only at the first table.
            opts.setdefault("deduplicate_blocks_in_dependent_materialized_views", 1)
        names = ", ".join(quote_ident(n) for n in rb.schema.names)
        sql = f"INSERT INTO {table} ({names}){settings_clause(opts)}"
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, rb.schema) as writer:
            writer.write_batch(rb)
        payload = sink.getvalue()
        self._check_room(len(payload), sql)
        with self._lock:
            if self._conn is None:
                raise ConfigError("connection is closed", sql=sql)
            try:
                ins = self._conn.send_insert(sql, "ArrowStream")
                try:
                    ins.append(memoryview(payload))
                    ins.finish()
                except BaseException:
                    ins.cancel()
                    raise
            except Exception as exc:
                raise _translate(exc, sql) from exc
        return rb.num_rows

    def _check_room(self, payload_bytes: int, sql: str) -> None:
        """Refuse an insert the disk may not hold (:class:`DiskFull`: chdb loses it silently)."""
        need = max(MIN_FREE_BYTES, 2 * payload_bytes)
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            return
        if free < need:
            raise DiskFull(
                f"{free // 1_000_000} MB free in {self.path}, an insert needs {need // 1_000_000} "
                "MB: free space there; the insert is retried",
                sql=sql,
            )

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
