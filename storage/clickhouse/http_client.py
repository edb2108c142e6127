"""Reading the embedded engine's data wherever it is: in this process, or over HTTP.

chdb lets one process at a time open a data directory. The process that owns
it (the sink) may serve ClickHouse's HTTP interface
(:mod:`voipflow.storage.clickhouse.http_server`) and then writes its address to
``<data_dir>/clickhouse/http.json`` with its pid. :func:`open_clickhouse` is
what readers (``voipflow db query``, reports, the demo) call:

* ``VOIPFLOW_CLICKHOUSE_URL`` set: the server, as :func:`voipflow.storage.clickhouse.connect`;
* a live process serves the directory: :class:`HTTPClickHouse` to its endpoint;
* nobody holds it: chdb in this process.

When a process holds the directory without serving it, the error names that
process and the setting that makes it serve (``VOIPFLOW_CLICKHOUSE_HTTP_LISTEN``)
instead of chdb's "Cannot lock file".

:class:`HTTPClickHouse` implements the :class:`~storage.clickhouse.base.ClickHouse`
interface over HTTP: results come as Arrow streams, exactly as the embedded
backend reads them, so callers get the same Python values either way. The
endpoint is read-only for other processes: ``insert`` is refused with a
message saying so.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pyarrow as pa

from voipflow.storage.clickhouse.base import (
    ClickHouse,
    Columns,
    QueryResult,
    dedup_supported,
    parse_version,
    quote_ident,
    result_from_arrow,
)
from voipflow.storage.clickhouse.errors import AccessError, ConfigError, ConnectionLost, classify
from voipflow.storage.clickhouse.http_server import ENDPOINT_FILE
from voipflow.storage.config import ClickHouseConfig

_CODE_RE = re.compile(r"Code:\s*(\d+)")
#: How long a reader gives a process that holds the engine to write its endpoint.
_STARTING_S = 2.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a live voipflow process serves its data directory."""

    pid: int
    url: str
    database: str


def read_endpoint(engine_dir: Path | str) -> Endpoint | None:
    """The endpoint in ``engine_dir`` if the process that wrote it still runs."""
    path = Path(engine_dir) / ENDPOINT_FILE
    try:
        doc = json.loads(path.read_text())
        endpoint = Endpoint(int(doc["pid"]), str(doc["url"]), str(doc.get("database", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(endpoint.pid):
        return None
    return endpoint


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_pid(engine_dir: Path | str) -> int | None:
    """The pid of another process that holds the engine directory now, else None.

    The engine keeps an exclusive ``flock`` on its ``status`` file while it
    runs and writes its pid there; probing the lock tells a live holder from
    a file left behind, without opening the engine (whose refusal would be
    printed on stderr by the engine itself).
    """
    import fcntl

    path = Path(engine_dir) / "status"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            m = re.search(rb"PID:\s*(\d+)", os.pread(fd, 4096, 0))
            pid = int(m.group(1)) if m else -1
            return None if pid == os.getpid() else pid
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def open_clickhouse(config: ClickHouseConfig, data_dir: Path | str) -> ClickHouse:
    """A connection to voipflow's ClickHouse data for reading, wherever it lives.

    The server of ``config.url``; else the HTTP endpoint of the live process
    that owns ``<data_dir>/clickhouse``; else chdb in this process. Raises
    :class:`~storage.clickhouse.errors.ConfigError` naming the fix when another
    process holds the directory without serving it.
    """
    from voipflow.storage.clickhouse import connect

    if config.url:
        return connect(config, data_dir)
    engine_dir = Path(data_dir) / "clickhouse"
    endpoint = read_endpoint(engine_dir)
    if endpoint is None:
        pid = holder_pid(engine_dir)
        if pid is None:
            return connect(config, data_dir)
        # The owner may be starting: its endpoint file comes right after the engine.
        time.sleep(_STARTING_S)
        endpoint = read_endpoint(engine_dir)
        if endpoint is None:
            raise ConfigError(
                f"the data directory {engine_dir} is used by process {pid}, which does not "
                "serve SQL over HTTP: start it with VOIPFLOW_CLICKHOUSE_HTTP_LISTEN="
                "127.0.0.1:8123 (any free port: 127.0.0.1:0) to query while it runs, or stop it"
            )
    try:
        return HTTPClickHouse(
            endpoint.url,
            endpoint.database or config.database,
            user=config.http_user,
            password=config.http_password.get_secret_value(),
            timeout_s=config.timeout_s,
        )
    except ConnectionLost:
        # A file left by a killed process whose pid now belongs to another one.
        if holder_pid(engine_dir) is not None:
            raise
        return connect(config, data_dir)


class HTTPClickHouse:
    """The :class:`~storage.clickhouse.base.ClickHouse` interface over ClickHouse's HTTP."""

    kind = "http"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        user: str = "default",
        password: str = "",
        timeout_s: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"not an HTTP URL: {url!r}")
        self.url = url
        self.database = database
        self._host = parts.hostname
        self._port = parts.port or (8443 if parts.scheme == "https" else 8123)
        self._https = parts.scheme == "https"
        self._timeout_s = timeout_s
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"
        self._conn: http.client.HTTPConnection | None = None
        try:
            self._version = parse_version(self._post("SELECT version()").decode().strip())
        except BaseException:
            self._drop()
            raise

    # -- plumbing -----------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout_s)
        return self._conn

    def _post(
        self,
        sql: str,
        settings: Mapping[str, Any] | None = None,
        fmt: str = "TabSeparated",
    ) -> bytes:
        params: dict[str, Any] = {"database": self.database, "default_format": fmt}
        for k, v in (settings or {}).items():
            params[k] = int(v) if isinstance(v, bool) else v
        path, payload = "/?" + urlencode(params), sql.encode()
        headers = {"Authorization": self._auth, "Content-Type": "text/plain; charset=UTF-8"}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                # A kept-alive connection the server closed fails once; a second is real.
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise ConnectionLost(f"{self.url}: {exc}", sql=sql) from exc
        if resp.status != 200:
            text = data.decode("utf-8", "replace")
            code = resp.getheader("X-ClickHouse-Exception-Code")
            code_n = int(code) if code and code.isdigit() else None
            if code_n is None:
                m = _CODE_RE.search(text)
                code_n = int(m.group(1)) if m else None
            raise classify(code_n, text or f"HTTP {resp.status}", sql)
        return data

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- interface ----------------------------------------------------------------

    @property
    def version(self) -> tuple[int, ...]:
        return self._version

    @property
    def supports_dedup_token(self) -> bool:
        return dedup_supported(self._version)

    def ensure_database(self) -> None:
        self._post(f"CREATE DATABASE IF NOT EXISTS {quote_ident(self.database)}")

    def execute(self, sql: str, settings: Mapping[str, Any] | None = None) -> None:
        self._post(sql, settings)

    def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> QueryResult:
        data = self._post(sql, settings, fmt="ArrowStream")
        try:
            return result_from_arrow(data)
        except pa.ArrowInvalid as exc:
            # Not Arrow: an error written after the answer had started.
            text = data.decode("utf-8", "replace")
            m = _CODE_RE.search(text)
            raise classify(int(m.group(1)) if m else None, text[-500:], sql) from exc

    def insert(
        self,
        table: str,
        columns: Columns,
        dedup_token: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> int:
        raise AccessError(
            f"cannot insert into {table} through {self.url}: another voipflow process owns "
            "the data directory and serves it read-only; stop it and run this again",
            code=164,
        )

    def close(self) -> None:
        self._drop()
