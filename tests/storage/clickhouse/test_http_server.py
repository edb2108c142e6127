"""ClickHouse's HTTP interface over the session's chdb engine, spoken to with curl.

The server runs in this process over the session's chdb directory (one
engine per process), each test on a database of its own; requests come from
the real ``curl`` binary, so what is checked is what goes over the wire:
status line, headers, and bodies in ClickHouse's formats and error text.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.storage.sinkdata import wait_until
from voipflow.storage.clickhouse.embedded import EmbeddedClickHouse
from voipflow.storage.clickhouse.http_server import ENDPOINT_FILE, ClickHouseHTTPServer, http_status
from voipflow.storage.config import ClickHouseConfig

USER, PASSWORD = "analyst", "s3cret pass"


def _server(chdb_dir: Path, **config: Any) -> ClickHouseHTTPServer:
    cfg = ClickHouseConfig(
        http_listen="127.0.0.1:0", http_user=USER, http_password=PASSWORD, **config
    )
    return ClickHouseHTTPServer(cfg, chdb_dir)


@pytest.fixture()
def db(chdb: EmbeddedClickHouse) -> EmbeddedClickHouse:
    chdb.execute(
        "CREATE TABLE calls (id UInt32, city String, minutes Float64, at DateTime('UTC')) "
        "ENGINE = MergeTree ORDER BY id"
    )
    chdb.execute(
        "INSERT INTO calls VALUES (1, 'Oslo', 2.5, 1700000000), (2, 'Bergen', 10, 1700000060), "
        "(3, 'L''Aquila', 0.25, 1700000120)"
    )
    return chdb


@pytest.fixture()
def server(chdb_dir: Path) -> Iterator[ClickHouseHTTPServer]:
    srv = _server(chdb_dir)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def curl(*args: str, auth: bool = True) -> tuple[int, dict[str, str], str]:
    """(status, headers with lower-case names, body) of one curl call."""
    cmd = ["curl", "-sS", "-i", "--max-time", "60"]
    if auth:
        cmd += ["-u", f"{USER}:{PASSWORD}"]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, check=True).stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, body


def _url(server: ClickHouseHTTPServer, db: EmbeddedClickHouse, **params: str) -> str:
    from urllib.parse import urlencode

    return server.url + "?" + urlencode({"database": db.database, **params})


def test_ping_and_endpoint_file(server: ClickHouseHTTPServer, chdb_dir: Path) -> None:
    assert curl(server.url + "ping", auth=False)[::2] == (200, "Ok.\n")
    doc = json.loads((chdb_dir / ENDPOINT_FILE).read_text())
    assert doc["pid"] == os.getpid() and doc["url"] == server.url and doc["user"] == USER
    assert "s3cret" not in (chdb_dir / ENDPOINT_FILE).read_text()


def test_formats_get_post_and_default_format(server, db) -> None:
    sql = "SELECT id, city, minutes, at FROM calls ORDER BY id"
    status, headers, body = curl("-G", "--data-urlencode", f"query={sql}", _url(server, db))
    assert status == 200 and headers["x-clickhouse-format"] == "TabSeparated"
    assert body.splitlines() == [
        "1\tOslo\t2.5\t2023-11-14 22:13:20",
        "2\tBergen\t10\t2023-11-14 22:14:20",
        "3\tL\\'Aquila\t0.25\t2023-11-14 22:15:20",  # TSV escapes quotes
    ]
    status, headers, body = curl(
        "--data-binary", sql + " FORMAT JSONEachRow", _url(server, db, query_id="q-42")
    )
    assert status == 200 and headers["x-clickhouse-query-id"] == "q-42"
    assert headers["x-clickhouse-format"] == "JSONEachRow"
    assert [json.loads(line) for line in body.splitlines()] == [
        {"id": 1, "city": "Oslo", "minutes": 2.5, "at": "2023-11-14 22:13:20"},
        {"id": 2, "city": "Bergen", "minutes": 10, "at": "2023-11-14 22:14:20"},
        {"id": 3, "city": "L'Aquila", "minutes": 0.25, "at": "2023-11-14 22:15:20"},
    ]
    # Query split between URL and body, format from default_format.
    status, headers, body = curl(
        "--data-binary",
        "FROM calls WHERE minutes > 1 ORDER BY id",
        _url(server, db, query="SELECT city, minutes", default_format="CSVWithNames"),
    )
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert body.splitlines() == ['"city","minutes"', '"Oslo",2.5', '"Bergen",10']


def test_settings_and_query_parameters_from_the_url(server, db) -> None:
    status, _, body = curl(
        "--data-binary",
        "SELECT getSetting('max_threads'), count() FROM calls WHERE city = {c:String}",
        _url(server, db, max_threads="1", param_c="L'Aquila"),
    )
    assert (status, body) == (200, "1\t1\n")
    status, headers, body = curl("--data-binary", "SELECT 1", _url(server, db, no_such="1"))
    assert status == 404 and headers["x-clickhouse-exception-code"] == "115"
    assert body.startswith("Code: 115. DB::Exception: ") and "no_such" in body


def test_the_three_ways_to_authenticate(server, db, caplog) -> None:
    caplog.set_level("DEBUG")
    url = _url(server, db, query="SELECT 7")
    assert curl(url)[::2] == (200, "7\n")
    headers = ["-H", f"X-ClickHouse-User: {USER}", "-H", f"X-ClickHouse-Key: {PASSWORD}"]
    assert curl(*headers, url, auth=False)[::2] == (200, "7\n")
    assert curl(url + f"&user={USER}&password=s3cret%20pass", auth=False)[::2] == (200, "7\n")
    assert "clickhouse http: POST /" in caplog.text or "clickhouse http: GET /" in caplog.text
    assert "s3cret" not in caplog.text


@pytest.mark.parametrize(
    "how",
    [
        ["-u", f"{USER}:wrong"],
        ["-H", f"X-ClickHouse-User: {USER}", "-H", "X-ClickHouse-Key: wrong"],
        ["-u", f"default:{PASSWORD}"],
        [],  # no credentials: the user "default" without a password
    ],
    ids=["basic", "headers", "other-user", "none"],
)
def test_wrong_credentials_are_refused_like_clickhouse(server, db, how, caplog) -> None:
    caplog.set_level("DEBUG")
    status, headers, body = curl(*how, _url(server, db, query="SELECT 1"), auth=False)
    assert status == 403
    assert headers["x-clickhouse-exception-code"] == "516"
    assert body.startswith("Code: 516. DB::Exception: ") and "(AUTHENTICATION_FAILED)" in body
    assert PASSWORD not in body
    assert "authentication failed" in caplog.text
    assert "wrong" not in caplog.text and PASSWORD not in caplog.text


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO calls VALUES (4, 'Tromsø', 1, now())",
        "ALTER TABLE calls DELETE WHERE 1",
        "DROP TABLE calls",
        "CREATE TABLE x (a UInt8) ENGINE = Memory",
        "SET readonly = 0",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT count() FROM calls SETTINGS readonly = 0",
    ],
    ids=["insert", "alter", "drop", "create", "set", "file", "settings-clause"],
)
def test_writes_are_refused_by_the_engine(server, db, sql) -> None:
    status, headers, body = curl("--data-binary", sql, _url(server, db))
    assert status == 500 and headers["x-clickhouse-exception-code"] == "164", body
    assert body.startswith("Code: 164. DB::Exception: ") and "(READONLY)" in body
    assert db.query("SELECT count() FROM calls").scalar() == 3
    assert db.query(f"EXISTS TABLE {db.database}.calls").scalar() == 1
    counted = server.metrics.registry.get_sample_value(
        "voipflow_clickhouse_http_queries_total", {"outcome": "error"}
    )
    assert counted == 1


@pytest.mark.parametrize("readonly", ["0", "2"])
def test_writes_through_a_url_setting_are_refused_too(server, db, readonly) -> None:
    status, headers, _ = curl(
        "--data-binary",
        "INSERT INTO calls VALUES (5, 'x', 1, now())",
        _url(server, db, readonly=readonly),
    )
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "164")
    assert db.query("SELECT count() FROM calls").scalar() == 3
    # readonly = 2 would let file() read this machine's files; the client's value is not used.
    status, headers, body = curl(
        "--data-binary",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        _url(server, db, readonly=readonly),
    )
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "164"), body


@pytest.mark.parametrize(
    ("sql", "status", "code"),
    [
        ("SELECT city FROM calls WHERE", 400, 62),
        ("SELECT nope FROM calls", 404, 47),
        ("SELECT * FROM no_such_table", 404, 60),
        ("SELECT 1 FORMAT NoSuchFormat", 404, 73),
        ("SELECT throwIf(1)", 500, 395),
        ("", 400, 62),
    ],
    ids=["syntax", "column", "table", "format", "thrown", "empty"],
)
def test_malformed_queries_get_clickhouse_errors(server, db, sql, status, code) -> None:
    got, headers, body = curl("--data-binary", sql, _url(server, db))
    assert (got, headers["x-clickhouse-exception-code"]) == (status, str(code)), body
    assert body.startswith(f"Code: {code}. DB::Exception: ")
    assert http_status(code) == status


def test_unknown_path_and_database(server, db) -> None:
    assert curl(server.url + "play")[0] == 404
    status, headers, body = curl(server.url + "?database=nowhere&query=SELECT+1")
    assert (status, headers["x-clickhouse-exception-code"]) == (404, "81")
    assert body.startswith("Code: 81. DB::Exception: ")


@pytest.mark.slow
def test_a_full_queue_is_refused_and_a_long_query_times_out(chdb_dir: Path, db) -> None:
    srv = _server(chdb_dir, http_max_queries=1, http_queue=0, http_query_timeout_s=1.5)
    srv.start()
    try:
        slow = _url(
            srv, db, max_block_size="1", query="SELECT sum(sleepEachRow(0.5)) FROM numbers(8)"
        )
        first: list[Any] = []
        t = threading.Thread(target=lambda: first.append(curl(slow)))
        t.start()
        wait_until(lambda: srv.admission.running == 1, 30, "the slow query to run")
        status, headers, body = curl(_url(srv, db, query="SELECT 1"))
        t.join(60)
    finally:
        srv.stop()
    assert (status, headers["x-clickhouse-exception-code"]) == (503, "202")
    assert body.startswith("Code: 202. DB::Exception: Too many simultaneous queries")
    samples = {"outcome": "busy"}, {"outcome": "error"}
    assert [
        srv.metrics.registry.get_sample_value("voipflow_clickhouse_http_queries_total", s)
        for s in samples
    ] == [1, 1]
    assert "VOIPFLOW_CLICKHOUSE_HTTP_QUEUE" in body
    # The slow query ran into max_execution_time.
    got_status, got_headers, got_body = first[0]
    assert (got_status, got_headers["x-clickhouse-exception-code"]) == (408, "159"), got_body


@pytest.mark.slow
def test_a_running_query_does_not_hold_the_backends_inserts(server, db) -> None:
    """The sink inserts through its own connection while a served query runs."""
    slow = _url(
        server, db, max_block_size="1", query="SELECT sum(sleepEachRow(0.5)) FROM numbers(10)"
    )
    answer: list[Any] = []
    t = threading.Thread(target=lambda: answer.append(curl(slow)))
    t.start()
    wait_until(lambda: server.admission.running == 1, 30, "the slow query to run")
    for i in range(5):
        db.insert(
            "calls",
            {"id": [10 + i], "city": ["Bodø"], "minutes": [1.0], "at": [1700000000]},
        )
    still_running = server.admission.running == 1
    t.join(60)
    assert still_running, "the inserts waited for the query"
    assert answer[0][::2] == (200, "0\n")
    assert db.query("SELECT count() FROM calls WHERE city = 'Bodø'").scalar() == 5


def test_non_loopback_listen_needs_a_password() -> None:
    with pytest.raises(ValidationError, match="http_password"):
        ClickHouseConfig(http_listen="0.0.0.0:8123")
    with pytest.raises(ValidationError, match="host:port"):
        ClickHouseConfig(http_listen="8123")
    assert ClickHouseConfig(http_listen="0.0.0.0:8123", http_password="x").http_listen
    assert ClickHouseConfig(http_listen="[::1]:0").http_listen == "[::1]:0"


def test_rows_in_the_body_are_refused_unless_writes_are_allowed(chdb_dir: Path, db) -> None:
    rows = "7\tTromsø\t1.5\t1700000300\n8\tBodø\t3\t1700000360\n"
    insert = "INSERT INTO calls (id, city, minutes, at) FORMAT TabSeparated"
    srv = _server(chdb_dir)
    srv.start()
    try:
        status, headers, body = curl("--data-binary", rows, _url(srv, db, query=insert))
    finally:
        srv.stop()
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "164"), body
    assert db.query("SELECT count() FROM calls").scalar() == 3
    srv = _server(chdb_dir, http_readonly=False)
    srv.start()
    try:
        status, headers, body = curl("--data-binary", rows, _url(srv, db, query=insert))
    finally:
        srv.stop()
    assert status == 200, body
    assert json.loads(headers["x-clickhouse-summary"])["written_rows"] == "2"
    assert db.query(
        "SELECT groupArray(city) FROM (SELECT city FROM calls WHERE id > 5 ORDER BY id)"
    ).scalar() == ["Tromsø", "Bodø"]


def test_a_busy_port_fails_at_start_naming_the_setting(chdb_dir: Path) -> None:
    import socket

    from voipflow.storage.clickhouse.http_server import HTTPServerError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = ClickHouseConfig(http_listen=f"127.0.0.1:{port}")
        srv = ClickHouseHTTPServer(cfg, chdb_dir)
        with pytest.raises(
            HTTPServerError, match=r"VOIPFLOW_CLICKHOUSE_HTTP_LISTEN=.*cannot listen"
        ):
            srv.start()
    assert not (chdb_dir / ENDPOINT_FILE).exists()
