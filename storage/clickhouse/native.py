"""A ClickHouse server through clickhouse-driver's native protocol.

Inserts are columnar (``columnar=True``) with the driver's numpy mode, so
numeric columns go to the wire as whole arrays. The connection is opened
lazily and reopened after a failure; every driver or socket error is
translated into :mod:`voipflow.storage.clickhouse.errors`.

Servers older than 22.2 (Debian's 18.16 among them) know no
``insert_deduplication_token``: ``supports_dedup_token`` is then false and the
token is not sent.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Mapping
from typing import Any

from voipflow.storage.clickhouse.base import (
    Columns,
    QueryResult,
    dedup_supported,
    parse_version,
    quote_ident,
    to_numpy_column,
    to_record_batch,
)
from voipflow.storage.clickhouse.errors import (
    ClickHouseError,
    ConfigError,
    ConnectionLost,
    QueryError,
    classify,
    code_of,
)

log = logging.getLogger(__name__)
# The driver logs every failed connection attempt with a traceback; the same
# failure reaches the caller as ConnectionLost, which the sink counts and logs
# at a bounded rate, so the driver's copy is only noise during an outage.
logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)


def _translate(exc: BaseException, sql: str) -> ClickHouseError:
    from clickhouse_driver import errors as drv

    if isinstance(exc, ClickHouseError):
        return exc
    if isinstance(exc, drv.ServerException):
        return classify(exc.code, exc.message or str(exc), sql)
    if isinstance(exc, drv.NetworkError | drv.SocketTimeoutError):
        return ConnectionLost(str(exc).split("\n")[0], code=exc.code, sql=sql)
    if isinstance(exc, OSError | EOFError | socket.timeout):
        return ConnectionLost(f"{type(exc).__name__}: {exc}", sql=sql)
    if isinstance(exc, drv.Error):
        code = exc.code if isinstance(exc.code, int) else code_of(str(exc))
        return classify(code, str(exc), sql)
    # Driver-side conversion errors (wrong Python type for a column) are a
    # schema mismatch between what the sink built and the table.
    if isinstance(exc, TypeError | ValueError | KeyError | AttributeError):
        return QueryError(f"{type(exc).__name__}: {exc}", sql=sql)
    return ConnectionLost(f"{type(exc).__name__}: {exc}", sql=sql)


class NativeClickHouse:
    """clickhouse-driver client for ``url`` (``clickhouse://user:pw@host:port/db``)."""

    kind = "native"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 60.0,
    ) -> None:
        from clickhouse_driver.util.helpers import parse_url

        try:
            host, kwargs = parse_url(url)
        except Exception as exc:
            raise ConfigError(f"bad ClickHouse URL: {exc}") from exc
        if not host:
            raise ConfigError("bad ClickHouse URL: no host")
        # host:port/database only: the credentials and the query string (a TLS
        # key password, keypass=) stay out of logs and messages.
        self.url_safe = url.split("@")[-1].split("?")[0]
        self.database: str = kwargs.get("database") or "default"
        kwargs["database"] = self.database
        kwargs.setdefault("connect_timeout", connect_timeout_s)
        kwargs.setdefault("send_receive_timeout", timeout_s)
        kwargs.setdefault("sync_request_timeout", min(timeout_s, 5.0))
        self._host = host
        self._kwargs = kwargs
        self._client: Any = None
        self._version: tuple[int, ...] | None = None

    # -- plumbing -----------------------------------------------------------

    def _connect(self, database: str | None = None) -> Any:
        from clickhouse_driver import Client

        kwargs = dict(self._kwargs)
        if database is not None:
            kwargs["database"] = database
        return Client(self._host, **kwargs)

    def _get(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()

    def _run(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._get().execute(sql, *args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            err = _translate(exc, sql)
            if err.transient:
                self._drop()  # a half-read socket is not reusable
            raise err from exc

    # -- interface ----------------------------------------------------------

    @property
    def version(self) -> tuple[int, ...]:
        if self._version is None:
            rows = self._run("SELECT version()")
            self._version = parse_version(str(rows[0][0]))
        return self._version

    @property
    def supports_dedup_token(self) -> bool:
        return dedup_supported(self.version)

    def ensure_database(self) -> None:
        try:
            self._run("SELECT 1")
            return  # it exists; a user may lack rights on `default` to create it
        except ClickHouseError as exc:
            if exc.code != 81:  # UNKNOWN_DATABASE
                raise
        sql = f"CREATE DATABASE IF NOT EXISTS {quote_ident(self.database)}"
        client = self._connect(database="default")
        try:
            client.execute(sql)
        except BaseException as exc:
            raise _translate(exc, sql) from exc
        finally:
            client.disconnect()

    def execute(self, sql: str, settings: Mapping[str, Any] | None = None) -> None:
        self._run(sql, settings=dict(settings or {}) or None)

    def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> QueryResult:
        rows, types = self._run(sql, settings=dict(settings or {}) or None, with_column_types=True)
        return QueryResult([n for n, _ in types], [tuple(r) for r in rows], [t for _, t in types])

    def insert(
        self,
        table: str,
        columns: Columns,
        dedup_token: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> int:
        if isinstance(columns, Mapping):
            names = list(columns)
            data = [to_numpy_column(columns[n]) for n in names]
        else:
            rb = to_record_batch(columns)
            names = rb.schema.names
            data = [to_numpy_column(c) for c in rb.columns]
        n = len(data[0]) if data else 0
        if n == 0:
            return 0
        opts: dict[str, Any] = {"use_numpy": True}
        opts.update(settings or {})
        if dedup_token is not None and self.supports_dedup_token:
            opts["insert_deduplication_token"] = dedup_token
            opts.setdefault("insert_deduplicate", 1)
            opts.setdefault("deduplicate_blocks_in_dependent_materialized_views", 1)
        cols = ", ".join(quote_ident(c) for c in names)
        sql = f"INSERT INTO {table} ({cols}) VALUES"
        self._run(sql, data, columnar=True, settings=opts)
        return n

    def close(self) -> None:
        self._drop()
