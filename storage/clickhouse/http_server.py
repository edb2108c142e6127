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
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import CollectorRegistry

from voipflow.storage.clickhouse.base import quote_ident, quote_literal
from voipflow.storage.clickhouse.errors import code_of
from voipflow.storage.clickhouse.http_protocol import (
    Admission,
    HTTPMetrics,
    QueryRefused,
    chunks,
    content_type,
    engine_error,
    exception_text,
    http_status,
    start_query,
)
from voipflow.storage.config import ClickHouseConfig, split_host_port

log = logging.getLogger(__name__)

#: The file, in the engine's directory, that tells other processes where to send SQL.
ENDPOINT_FILE = "http.json"


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
_INSERT_WITH_FORMAT = re.compile(r"^\s*INSERT\b.*\bFORMAT\s+[A-Za-z0-9_]+\s*$", re.I | re.S)
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_MAX_BODY = 16 << 20


class HTTPServerError(Exception):
    """The HTTP interface cannot start; ``str()`` names the setting."""


class ClickHouseHTTPServer:
    """The HTTP interface over the chdb engine at ``path``: ``start()``, ``stop()``."""

    name = "clickhouse-http"

    def __init__(
        self, config: ClickHouseConfig, path: Path | str, registry: CollectorRegistry | None = None
    ) -> None:
        self.config = config
        self.path = Path(path)
        self.url = ""
        self.endpoint_file = self.path / ENDPOINT_FILE
        self.metrics = HTTPMetrics(registry)
        self.admission = Admission(
            config.http_max_queries, config.http_queue, config.http_queue_timeout_s, self.metrics
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
        try:
            tmp.write_text(json.dumps(doc) + "\n")
            tmp.replace(self.endpoint_file)  # readers never see half a file
        except OSError as exc:
            # Served all the same; only voipflow's own readers will not find it.
            log.warning(
                "ClickHouse HTTP endpoint file not written",
                extra={"path": str(self.endpoint_file), "error": str(exc)},
            )

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
                if name == "readonly" and self.config.http_readonly:
                    continue  # ours, set below; a client's value could only refuse it
                conn.query(f"SET {name} = {quote_literal(value)}", "TabSeparated")
            limit = self.config.http_query_timeout_s
            asked = settings.get("max_execution_time")
            if asked is None or not _positive_below(asked, limit):
                conn.query(f"SET max_execution_time = {limit:g}", "TabSeparated")
            # Last: under readonly = 1 no setting can change any more.
            if self.config.http_readonly:
                conn.query("SET readonly = 1", "TabSeparated")
            try:
                conn.query(f"USE {quote_ident(database or self.config.database)}", "TabSeparated")
            except Exception as exc:
                # Without a database parameter the configured one is a default
                # that may not exist yet (before migrations), like the embedded backend's.
                if database or code_of(str(exc)) != 81:
                    raise
        except Exception:
            conn.close()
            raise
        return conn


def _positive_below(value: str, limit: float) -> bool:
    try:
        return 0 < float(value) <= limit
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    owner: ClickHouseHTTPServer
    protocol_version = "HTTP/1.1"
    #: Seconds a connection may sit idle (between or inside requests) before it is closed.
    timeout = 30

    def version_string(self) -> str:
        return "voipflow"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("clickhouse http: " + format, *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Without the query string: it may hold the password (``password=``).
        path = urlsplit(self.path).path
        log.debug("clickhouse http: %s %s %s", self.command, path, code)

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
        if encoding in ("gzip", "deflate", "lz4"):
            import zlib

            import lz4.frame

            try:
                if encoding == "lz4":
                    body = lz4.frame.decompress(body)
                else:
                    body = zlib.decompress(body, 47 if encoding == "gzip" else 15)
            except (zlib.error, RuntimeError) as exc:
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
        user = ""
        try:
            user, password = self._credentials(params)
            self.owner.check_user(user, password)
            url_query = params.get("query", "")
            data: bytes | None = None
            if body and _INSERT_WITH_FORMAT.match(url_query):
                # The statement in the URL, its rows in the body (in any input format).
                sql, data = url_query, body
            else:
                sql = "\n".join(
                    p for p in (url_query, body.decode("utf-8", "replace")) if p.strip()
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
            self.owner.metrics.queries.labels("refused").inc()
            if exc.code == 516:
                # Who and from where, never what password was tried.
                log.warning(
                    "ClickHouse HTTP authentication failed",
                    extra={"user": user, "client": self.client_address[0]},
                )
            self._error(exc, query_id=query_id)
            return
        if data is not None:
            self._insert(sql, data, params, settings, query_id)
        else:
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
        database = params.get("database", "")
        try:
            owner.admission.acquire()
        except QueryRefused as exc:
            self.owner.metrics.queries.labels("busy").inc()
            log.warning("ClickHouse HTTP query refused: %s", exc, extra={"query_id": query_id})
            self._error(exc, query_id=query_id)
            return
        t0 = time.monotonic()
        conn: Any = None
        stream: Any = None
        try:
            try:
                conn = owner.open_session(database, settings)
                stream, first = start_query(conn, sql, fmt, query_params)
            except Exception as exc:
                err = engine_error(exc)
                self.owner.metrics.queries.labels("error").inc()
                self._error(err, query_id=query_id, fmt=shown_format)
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type(shown_format))
            self.send_header("X-ClickHouse-Query-Id", query_id)
            self.send_header("X-ClickHouse-Format", shown_format)
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.send_header("X-ClickHouse-Server-Display-Name", "voipflow")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for chunk in chunks(first, stream):
                    self._write_chunk(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.owner.metrics.queries.labels("client_gone").inc()
                self.close_connection = True
                return
            except Exception as exc:
                # Too late for a status: like ClickHouse, the error ends the body.
                err = engine_error(exc)
                self.owner.metrics.queries.labels("error").inc()
                self._write_chunk(("\n" + exception_text(err.code, str(err)) + "\n").encode())
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")
            self.owner.metrics.queries.labels("ok").inc()
        finally:
            if stream is not None:
                stream.close()
            if conn is not None:
                conn.close()
            owner.admission.release()
            self.owner.metrics.seconds.observe(time.monotonic() - t0)

    def _insert(
        self, sql: str, data: bytes, params: dict[str, str], settings: dict[str, str], query_id: str
    ) -> None:
        """``INSERT ... FORMAT X`` with the rows in the body (refused under readonly)."""
        owner = self.owner
        m = _FORMAT_CLAUSE.search(sql)
        assert m is not None  # _INSERT_WITH_FORMAT matched
        try:
            owner.admission.acquire()
        except QueryRefused as exc:
            self.owner.metrics.queries.labels("busy").inc()
            self._error(exc, query_id=query_id)
            return
        t0 = time.monotonic()
        conn: Any = None
        try:
            conn = owner.open_session(params.get("database", ""), settings)
            ins = conn.send_insert(sql[: m.start()], m.group(1))
            try:
                ins.append(data)
                written = ins.finish()
            except BaseException:
                ins.cancel()
                raise
        except Exception as exc:
            self.owner.metrics.queries.labels("error").inc()
            self._error(engine_error(exc), query_id=query_id)
            return
        finally:
            if conn is not None:
                conn.close()
            owner.admission.release()
            self.owner.metrics.seconds.observe(time.monotonic() - t0)
        self.owner.metrics.queries.labels("ok").inc()
        summary = {"written_rows": str(getattr(written, "rows_written", 0))}
        self.send_response(200)
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("X-ClickHouse-Summary", json.dumps(summary))
        self.send_header("Content-Length", "0")
        self.end_headers()

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
