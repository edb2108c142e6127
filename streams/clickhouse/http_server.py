"""ClickHouse's HTTP interface, served by the process that owns the embedded engine.

chdb lets one process at a time open a data directory, so while the sink runs
no other process can read it. This component lets that process answer SQL
the way a ClickHouse server does on port 8123, for the subset clients use:

* ``GET /?query=...`` and ``POST /`` with the query in the body, the URL or
  both (URL first); ``GET /ping`` answers ``Ok.``;
* URL parameters ``database``, ``default_format``, ``query_id``,
  ``param_<name>`` (query parameters) and any ClickHouse setting;
* ``FORMAT`` clauses: the engine renders every output format itself, the
  bytes go to the client as they are;
* the configured user, by basic auth, by ``X-ClickHouse-User`` /
  ``X-ClickHouse-Key`` or by the ``user``/``password`` parameters;
* errors as ClickHouse sends them: its HTTP status for the error code, the
  ``X-ClickHouse-Exception-Code`` header and a body ``Code: N. DB::Exception: ...``.

Each request gets its own chdb connection to the same engine: per-connection
session state keeps one client's settings away from the next, and
connections run in parallel, so a query never waits for the sink's insert
lock nor holds it (the backend serialises calls on *its* connection only).
The client's settings are applied first, then ``readonly = 1`` (unless
``http_readonly`` is off), which the engine enforces for every statement kind
and for table functions reading files or URLs, then ``max_execution_time``.

Admission: at most ``http_max_queries`` run; up to ``http_queue`` more wait
for at most ``http_queue_timeout_s``; any other is refused at once with
error 202 (TOO_MANY_SIMULTANEOUS_QUERIES, HTTP 503), which clients retry.

Errors::

    HTTPServerError    the server cannot start (address in use, bad listen)
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import Counter, Gauge, Histogram

from streams.clickhouse.base import quote_ident, quote_literal
from streams.clickhouse.errors import code_of
from streams.config import ClickHouseConfig, split_host_port

log = logging.getLogger(__name__)

#: The file, in the engine's directory, that tells other processes where to send SQL.
ENDPOINT_FILE = "http.json"

QUERIES = Counter(
    "voipflow_clickhouse_http_queries", "Queries served over HTTP, by outcome", ["outcome"]
)
RUNNING = Gauge("voipflow_clickhouse_http_running", "Queries running now")
WAITING = Gauge("voipflow_clickhouse_http_waiting", "Queries waiting for a slot")
DURATION = Histogram(
    "voipflow_clickhouse_http_query_seconds",
    "Time from admission to the last byte sent",
    buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

# HTTP parameters that are part of the protocol, not settings.
_PROTOCOL_PARAMS = frozenset(
    {
        "query",
        "user",
        "password",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "buffer_size",
        "wait_end_of_query",
        "quota_key",
        "stacktrace",
        "role",
        "decompress",
        "client_protocol_version",
    }
)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_MAX_BODY = 16 << 20

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

_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
}


class HTTPServerError(Exception):
    """The HTTP interface cannot start; ``str()`` names the setting."""


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

    def __init__(self, slots: int, queue: int, timeout_s: float) -> None:
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
                RUNNING.set(self.running)
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
            WAITING.set(self.waiting)
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
                RUNNING.set(self.running)
            finally:
                self.waiting -= 1
                WAITING.set(self.waiting)

    def release(self) -> None:
        with self._cond:
            self.running -= 1
            RUNNING.set(self.running)
            self._cond.notify()


class ClickHouseHTTPServer:
    """The HTTP interface over the chdb engine at ``path``: ``start()``, ``stop()``."""

    name = "clickhouse-http"

    def __init__(self, config: ClickHouseConfig, path: Path | str) -> None:
        self.config = config
        self.path = Path(path)
        self.url = ""
        self.endpoint_file = self.path / ENDPOINT_FILE
        self.admission = Admission(
            config.http_max_queries, config.http_queue, config.http_queue_timeout_s
        )
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._keeper: Any = None

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        from chdb import state

        try:
            host, port = split_host_port(self.config.http_listen)
        except ValueError as exc:
            raise HTTPServerError(
                f"VOIPFLOW_CLICKHOUSE_HTTP_LISTEN={self.config.http_listen!r}: {exc}"
            ) from exc
        # Holds the engine open between requests, whatever the owner does with its connection.
        self._keeper = state.connect(str(self.path))
        server = self

        class Handler(_Handler):
            owner = server

        try:
            httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            self._keeper.close()
            raise HTTPServerError(
                f"VOIPFLOW_CLICKHOUSE_HTTP_LISTEN={self.config.http_listen!r}: cannot listen "
                f"on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        httpd.daemon_threads = True
        self._httpd = httpd
        bound = int(httpd.server_address[1])
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        self.url = f"http://[{shown}]:{bound}/" if ":" in shown else f"http://{shown}:{bound}/"
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="clickhouse-http", daemon=True
        )
        self._thread.start()
        self._write_endpoint()
        log.info(
            "ClickHouse HTTP interface listening",
            extra={"url": self.url, "user": self.config.http_user},
        )

    def stop(self) -> None:
        self.endpoint_file.unlink(missing_ok=True)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None

    def _write_endpoint(self) -> None:
        doc = {
            "pid": os.getpid(),
            "url": self.url,
            "user": self.config.http_user,
            "database": self.config.database,
        }
        tmp = self.endpoint_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        tmp.replace(self.endpoint_file)  # readers never see half a file

    # -- one query ----------------------------------------------------------------

    def check_user(self, user: str, password: str) -> None:
        want_user = self.config.http_user
        want_password = self.config.http_password.get_secret_value()
        ok_user = hmac.compare_digest(user.encode(), want_user.encode())
        ok_password = hmac.compare_digest(password.encode(), want_password.encode())
        if not (ok_user and ok_password):
            raise QueryRefused(
                516,
                f"{user}: Authentication failed: password is incorrect, or there is no user "
                "with such name. (AUTHENTICATION_FAILED)",
            )

    def open_session(self, database: str, settings: dict[str, str]) -> Any:
        """A chdb connection of its own, with the client's settings, then ours."""
        from chdb import state

        conn = state.connect(str(self.path))
        try:
            for name, value in settings.items():
                conn.query(f"SET {name} = {quote_literal(value)}", "TabSeparated")
            limit = self.config.http_query_timeout_s
            asked = settings.get("max_execution_time")
            if asked is None or not _positive_below(asked, limit):
                conn.query(f"SET max_execution_time = {limit:g}", "TabSeparated")
            # Last: under readonly = 1 no setting can change any more.
            if self.config.http_readonly:
                conn.query("SET readonly = 1", "TabSeparated")
            conn.query(f"USE {quote_ident(database)}", "TabSeparated")
        except Exception:
            conn.close()
            raise
        return conn


def _positive_below(value: str, limit: float) -> bool:
    try:
        return 0 < float(value) <= limit
    except ValueError:
        return False


def _engine_error(exc: Exception) -> QueryRefused:
    message = str(exc)
    # Errors raised while streaming carry a prefix of chdb's own.
    message = message.removeprefix("Streaming query failed: ")
    code = code_of(message) or 1001
    return QueryRefused(code, message)


class _Handler(BaseHTTPRequestHandler):
    owner: ClickHouseHTTPServer
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "voipflow"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("clickhouse http: " + format, *args)

    # -- routing ------------------------------------------------------------------

    def do_GET(self) -> None:
        self._serve(body=b"")

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._read_chunked()
                if body is None:
                    return
            else:
                body = b""
        elif not length.isdigit() or int(length) > _MAX_BODY:
            self._error(
                QueryRefused(229, f"Query of {length} bytes is too large. (QUERY_IS_TOO_LARGE)"),
                close=True,
            )
            return
        else:
            body = self.rfile.read(int(length))
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            import zlib

            try:
                body = zlib.decompress(body, 47 if encoding == "gzip" else 15)
            except zlib.error as exc:
                self._error(
                    QueryRefused(271, f"Cannot decompress the body: {exc}. (CANNOT_DECOMPRESS)")
                )
                return
        elif encoding not in ("", "identity"):
            self._error(
                QueryRefused(
                    89, f"Unknown Content-Encoding {encoding!r}. (UNKNOWN_COMPRESSION_METHOD)"
                )
            )
            return
        self._serve(body=body)

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(parts)
            total += size
            if total > _MAX_BODY:
                self._error(
                    QueryRefused(229, "Query is too large. (QUERY_IS_TOO_LARGE)"), close=True
                )
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _serve(self, body: bytes) -> None:
        split = urlsplit(self.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if split.path in ("/ping", "/ping/"):
            self._send(200, b"Ok.\n", "text/html; charset=UTF-8")
            return
        if split.path not in ("/", ""):
            self._send(
                404,
                f"There is no handle {split.path}\n\nUse / or /ping.\n".encode(),
                "text/plain; charset=UTF-8",
            )
            return
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            user, password = self._credentials(params)
            self.owner.check_user(user, password)
            sql = "\n".join(
                p for p in (params.get("query", ""), body.decode("utf-8", "replace")) if p.strip()
            )
            if not sql.strip():
                raise QueryRefused(62, "Empty query. (SYNTAX_ERROR)")
            if params.get("compress") == "1":
                raise QueryRefused(
                    48,
                    "compress=1 (ClickHouse block compression of results) is not served "
                    "here; turn compression off in the client. (NOT_IMPLEMENTED)",
                )
            settings, query_params = self._settings(params)
        except QueryRefused as exc:
            QUERIES.labels("refused").inc()
            self._error(exc, query_id=query_id)
            return
        self._run(sql, params, settings, query_params, query_id)

    def _credentials(self, params: dict[str, str]) -> tuple[str, str]:
        h = self.headers
        if h.get("X-ClickHouse-User") is not None or h.get("X-ClickHouse-Key") is not None:
            return h.get("X-ClickHouse-User") or "default", h.get("X-ClickHouse-Key") or ""
        auth = h.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise QueryRefused(516, "Malformed basic authentication header") from exc
            return user or "default", password
        return params.get("user") or "default", params.get("password", "")

    @staticmethod
    def _settings(params: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        settings: dict[str, str] = {}
        query_params: dict[str, str] = {}
        for name, value in params.items():
            if name.startswith("param_"):
                query_params[name[6:]] = value
            elif name in _PROTOCOL_PARAMS or name == "compress":
                continue
            elif not _SETTING_NAME.match(name):
                raise QueryRefused(115, f"Unknown setting '{name}'. (UNKNOWN_SETTING)")
            else:
                settings[name] = value
        return settings, query_params

    # -- running ------------------------------------------------------------------

    def _run(
        self,
        sql: str,
        params: dict[str, str],
        settings: dict[str, str],
        query_params: dict[str, str],
        query_id: str,
    ) -> None:
        owner = self.owner
        fmt = params.get("default_format") or "TabSeparated"
        m = _FORMAT_CLAUSE.search(sql)
        shown_format = m.group(1) if m else fmt
        database = params.get("database") or owner.config.database
        try:
            owner.admission.acquire()
        except QueryRefused as exc:
            QUERIES.labels("busy").inc()
            log.warning("ClickHouse HTTP query refused: %s", exc, extra={"query_id": query_id})
            self._error(exc, query_id=query_id)
            return
        t0 = time.monotonic()
        conn: Any = None
        stream: Any = None
        try:
            try:
                conn = owner.open_session(database, settings)
                stream, first = _start(conn, sql, fmt, query_params)
            except Exception as exc:
                err = _engine_error(exc)
                QUERIES.labels("error").inc()
                self._error(err, query_id=query_id, fmt=shown_format)
                return
            self.send_response(200)
            self.send_header("Content-Type", _content_type(shown_format))
            self.send_header("X-ClickHouse-Query-Id", query_id)
            self.send_header("X-ClickHouse-Format", shown_format)
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.send_header("X-ClickHouse-Server-Display-Name", "voipflow")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for chunk in _chunks(first, stream):
                    self._write_chunk(chunk)
            except (BrokenPipeError, ConnectionResetError):
                QUERIES.labels("client_gone").inc()
                self.close_connection = True
                return
            except Exception as exc:
                # Too late for a status: like ClickHouse, the error ends the body.
                err = _engine_error(exc)
                QUERIES.labels("error").inc()
                self._write_chunk(("\n" + exception_text(err.code, str(err)) + "\n").encode())
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")
            QUERIES.labels("ok").inc()
        finally:
            if stream is not None:
                stream.close()
            if conn is not None:
                conn.close()
            owner.admission.release()
            DURATION.observe(time.monotonic() - t0)

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    # -- answers ------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(
        self, exc: QueryRefused, query_id: str = "", fmt: str = "", close: bool = False
    ) -> None:
        text = exception_text(exc.code, str(exc)) + "\n"
        body = text.encode()
        status = http_status(exc.code)
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Exception-Code", str(exc.code))
        if query_id:
            self.send_header("X-ClickHouse-Query-Id", query_id)
        if fmt:
            self.send_header("X-ClickHouse-Format", fmt)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


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


def _start(conn: Any, sql: str, fmt: str, query_params: dict[str, str]) -> tuple[Any, Any]:
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


def _content_type(fmt: str) -> str:
    return _CONTENT_TYPES.get(fmt.lower(), "application/octet-stream")


def _chunks(first: Any, stream: Any) -> Iterator[bytes]:
    chunk = first
    while chunk is not None:
        data = chunk.bytes()
        if not data:
            return
        yield data
        chunk = stream.fetch()
