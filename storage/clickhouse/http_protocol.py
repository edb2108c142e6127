"""What the HTTP interface answers besides rows: ClickHouse's errors, and admission.

Errors go out as a ClickHouse server sends them: the HTTP status it gives the
error code, an ``X-ClickHouse-Exception-Code`` header, and a body
``Code: N. DB::Exception: ... (NAME)``. :class:`Admission` is the one bounded
queue of queries of :mod:`voipflow.storage.clickhouse.http_server`; :func:`start_query`
and :func:`chunks` stream an answer from the engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from voipflow.storage.clickhouse.errors import code_of


class HTTPMetrics:
    """The HTTP interface's metrics, registered in ``registry`` (a fresh one by default).

    As the sink's: the command passes the registry its endpoint serves, tests
    their own, so several servers in one process never clash.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queries = Counter(
            "voipflow_clickhouse_http_queries",
            "Queries served over HTTP, by outcome",
            ["outcome"],
            registry=r,
        )
        self.running = Gauge("voipflow_clickhouse_http_running", "Queries running now", registry=r)
        self.waiting = Gauge(
            "voipflow_clickhouse_http_waiting", "Queries waiting for a slot", registry=r
        )
        self.seconds = Histogram(
            "voipflow_clickhouse_http_query_seconds",
            "Time from admission to the last byte sent",
            buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )


# ClickHouse error codes -> HTTP status, as a ClickHouse server answers them
# (codes not listed: 500). One addition: 202, too many queries, is 503 so that
# clients retry it (clickhouse-connect retries 429/503/504).
_STATUS_OF_CODE: dict[int, int] = {
    194: 401,  # REQUIRED_PASSWORD
    # UNKNOWN_USER, WRONG_PASSWORD, ACCESS_DENIED, SET_NON_GRANTED_ROLE, AUTHENTICATION_FAILED
    **dict.fromkeys((192, 193, 497, 512, 516), 403),
    # BAD_ARGUMENTS; CANNOT_PARSE_* (text, escape, quoted, date, datetime, number,
    # domain value, IPv4, IPv6, UUID, input assertion); CANNOT_COMPILE_REGEXP;
    # DUPLICATE_COLUMN, ILLEGAL_COLUMN, THERE_IS_NO_COLUMN; AST errors (unknown
    # element, unknown node, too deep, too big, unexpected structure);
    # SYNTAX_ERROR, INCORRECT_DATA, TYPE_MISMATCH, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    **dict.fromkeys(
        (
            *(36, 6, 25, 26, 38, 41, 72, 441, 675, 676, 376, 27, 427, 15, 44, 8, 37, 123),
            *(167, 168, 223, 62, 117, 53, 321),
        ),
        400,
    ),
    # UNKNOWN_ TABLE, FUNCTION, IDENTIFIER, TYPE, STORAGE, DATABASE, SETTING,
    # DIRECTION_OF_SORTING, AGGREGATE_FUNCTION, FORMAT, DATABASE_ENGINE,
    # TYPE_OF_QUERY, ROLE
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    229: 413,  # QUERY_IS_TOO_LARGE
    48: 501,  # NOT_IMPLEMENTED
    # SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK, TOO_MANY_SIMULTANEOUS_QUERIES
    **dict.fromkeys((209, 76, 439, 202), 503),
    381: 411,  # HTTP_LENGTH_REQUIRED
    159: 408,  # TIMEOUT_EXCEEDED
    779: 415,  # UNSUPPORTED_MEDIA_TYPE
}


class QueryRefused(Exception):
    """A request answered with a ClickHouse error (``code``) before or instead of running."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def http_status(code: int | None) -> int:
    """The HTTP status a ClickHouse server gives for error ``code``."""
    return _STATUS_OF_CODE.get(code or 0, 500)


def exception_text(code: int, message: str) -> str:
    """``Code: N. DB::Exception: ...`` as ClickHouse writes it; engine messages kept as they are."""
    message = message.strip()
    if message.startswith("Code:"):
        return message
    return f"Code: {code}. DB::Exception: {message}"


class Admission:
    """At most ``slots`` queries run; ``queue`` more wait up to ``timeout_s`` each."""

    def __init__(
        self, slots: int, queue: int, timeout_s: float, metrics: HTTPMetrics | None = None
    ) -> None:
        self.metrics = metrics if metrics is not None else HTTPMetrics()
        self.slots = slots
        self.queue = queue
        self.timeout_s = timeout_s
        self.running = 0
        self.waiting = 0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            if self.running < self.slots and self.waiting == 0:
                self.running += 1
                self.metrics.running.set(self.running)
                return
            if self.waiting >= self.queue:
                raise QueryRefused(
                    202,
                    f"Too many simultaneous queries: {self.running} running and "
                    f"{self.waiting} waiting, the most this process serves "
                    "(VOIPFLOW_CLICKHOUSE_HTTP_MAX_QUERIES, VOIPFLOW_CLICKHOUSE_HTTP_QUEUE); "
                    "retry later. "
                    "(TOO_MANY_SIMULTANEOUS_QUERIES)",
                )
            self.waiting += 1
            self.metrics.waiting.set(self.waiting)
            deadline = time.monotonic() + self.timeout_s
            try:
                while self.running >= self.slots:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise QueryRefused(
                            202,
                            f"Too many simultaneous queries: no free slot within "
                            f"{self.timeout_s:g} s (VOIPFLOW_CLICKHOUSE_HTTP_QUEUE_TIMEOUT_S); "
                            "retry later. (TOO_MANY_SIMULTANEOUS_QUERIES)",
                        )
                    self._cond.wait(left)
                self.running += 1
                self.metrics.running.set(self.running)
            finally:
                self.waiting -= 1
                self.metrics.waiting.set(self.waiting)

    def release(self) -> None:
        with self._cond:
            self.running -= 1
            self.metrics.running.set(self.running)
            self._cond.notify()


_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
}


def engine_error(exc: Exception) -> QueryRefused:
    message = str(exc)
    # Errors raised while streaming carry a prefix of chdb's own.
    message = message.removeprefix("Streaming query failed: ")
    code = code_of(message) or 1001
    return QueryRefused(code, message)


class _Whole:
    """A non-streamed answer shaped like a stream of one chunk."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def bytes(self) -> bytes:
        return bytes(self.result.bytes())

    def fetch(self) -> None:
        return None

    def close(self) -> None:
        pass


def start_query(conn: Any, sql: str, fmt: str, query_params: dict[str, str]) -> tuple[Any, Any]:
    """(stream, first chunk): streamed when the engine can stream the statement.

    chdb streams queries that produce rows (SELECT, SHOW, DESCRIBE, ...); other
    statements it runs only whole, which is what the engine then refuses or
    answers (an INSERT under ``readonly`` is refused with its READONLY error).
    """
    try:
        stream = conn.send_query(sql, fmt, params=query_params)
    except Exception as exc:
        if "Streaming query is not supported" not in str(exc):
            raise
        whole = _Whole(conn.query(sql, fmt, params=query_params))
        return whole, whole
    return stream, stream.fetch()


def content_type(fmt: str) -> str:
    return _CONTENT_TYPES.get(fmt.lower(), "application/octet-stream")


def chunks(first: Any, stream: Any) -> Iterator[bytes]:
    chunk = first
    while chunk is not None:
        data = chunk.bytes()
        if not data:
            return
        yield data
        chunk = stream.fetch()
