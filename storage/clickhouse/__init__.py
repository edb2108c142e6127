"""ClickHouse for voipflow: one small interface, two backends, migrations.

* :class:`~storage.clickhouse.embedded.EmbeddedClickHouse` — chdb, the engine
  in-process with its data in ``<data_dir>/clickhouse`` (the default);
* :class:`~storage.clickhouse.native.NativeClickHouse` — a server through
  clickhouse-driver's native protocol when ``VOIPFLOW_CLICKHOUSE_URL`` is set.

Both implement :class:`~storage.clickhouse.base.ClickHouse`: ``execute``,
``query``, ``insert`` (whole columns, optional deduplication token),
``ensure_database`` and ``close``. Foreign errors are translated at the
boundary into one tree (see :mod:`voipflow.storage.clickhouse.errors`)::

    ClickHouseError
     +-- TransientError        retry later, with backoff
     |    +-- ConnectionLost   server unreachable, connection refused/reset, timeout
     |    +-- ServerBusy       too many parts or queries, memory limit, replica read-only
     +-- PermanentError        retrying cannot help; fix data, schema or settings
          +-- SchemaError      unknown table/column/database, type mismatch
          +-- QueryError       syntax error, unknown setting, any other refused query
          +-- AccessError      authentication or authorisation failed
          +-- ConfigError      bad URL, chdb data directory unusable
"""

from __future__ import annotations

from pathlib import Path

from voipflow.storage.clickhouse.base import ClickHouse, Columns, QueryResult
from voipflow.storage.clickhouse.errors import (
    AccessError,
    ClickHouseError,
    ConfigError,
    ConnectionLost,
    PermanentError,
    QueryError,
    SchemaError,
    ServerBusy,
    TransientError,
)
from voipflow.storage.config import ClickHouseConfig

__all__ = [
    "AccessError",
    "ClickHouse",
    "ClickHouseError",
    "Columns",
    "ConfigError",
    "ConnectionLost",
    "PermanentError",
    "QueryError",
    "QueryResult",
    "SchemaError",
    "ServerBusy",
    "TransientError",
    "connect",
    "open_clickhouse",
]


def connect(config: ClickHouseConfig, data_dir: Path | str) -> ClickHouse:
    """The backend ``config`` asks for: a server if ``url`` is set, else chdb."""
    if config.url:
        from voipflow.storage.clickhouse.native import NativeClickHouse

        return NativeClickHouse(
            config.url,
            connect_timeout_s=config.connect_timeout_s,
            timeout_s=config.timeout_s,
        )
    from voipflow.storage.clickhouse.embedded import EmbeddedClickHouse

    return EmbeddedClickHouse(Path(data_dir) / "clickhouse", config.database)


def open_clickhouse(config: ClickHouseConfig, data_dir: Path | str) -> ClickHouse:
    """For readers: like :func:`connect`, but through the SQL endpoint of a running
    voipflow process that owns the embedded engine, if one does (see
    :mod:`voipflow.storage.clickhouse.http_client`)."""
    from voipflow.storage.clickhouse.http_client import open_clickhouse as open_for_reading

    return open_for_reading(config, data_dir)
