"""voipflow's reader over HTTP: same answers as chdb in-process, errors in the same tree,
and the endpoint file read the way open_clickhouse relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from voipflow.storage.clickhouse import AccessError, ConnectionLost, QueryError, SchemaError
from voipflow.storage.clickhouse.embedded import EmbeddedClickHouse
from voipflow.storage.clickhouse.http_client import HTTPClickHouse, holder_pid, read_endpoint
from voipflow.storage.clickhouse.http_server import ENDPOINT_FILE, ClickHouseHTTPServer
from voipflow.storage.config import ClickHouseConfig


@pytest.fixture()
def server(chdb_dir: Path) -> Iterator[ClickHouseHTTPServer]:
    cfg = ClickHouseConfig(http_listen="127.0.0.1:0", http_password="pw")
    srv = ClickHouseHTTPServer(cfg, chdb_dir)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_answers_as_chdb_does(server: ClickHouseHTTPServer, chdb: EmbeddedClickHouse) -> None:
    chdb.execute(
        "CREATE TABLE t (id UInt32, addr IPv6, at DateTime64(3, 'UTC'), tags Array(String), "
        "share Nullable(Float64), app LowCardinality(String)) ENGINE = MergeTree ORDER BY id"
    )
    chdb.execute(
        "INSERT INTO t VALUES "
        "(1, '::ffff:10.0.0.1', fromUnixTimestamp64Milli(1700000000123), ['a', 'b'], 0.5, 'sip'), "
        "(2, '2001:db8::1', fromUnixTimestamp64Milli(1700000001000), [], NULL, 'teams')"
    )
    client = HTTPClickHouse(server.url, chdb.database, password="pw")
    try:
        sql = "SELECT * FROM t ORDER BY id"
        got, want = client.query(sql), chdb.query(sql)
        assert (got.columns, got.rows, got.types) == (want.columns, want.rows, want.types)
        assert client.query("SELECT count() FROM t WHERE app = 'sip'").scalar() == 1
        assert client.kind == "http" and client.version == chdb.version
        with pytest.raises(SchemaError) as unknown:
            client.query("SELECT * FROM no_such_table")
        assert unknown.value.code == 60
        with pytest.raises(QueryError) as readonly:
            client.execute("DROP TABLE t")
        assert readonly.value.code == 164
        with pytest.raises(AccessError, match="read-only"):
            client.insert("t", {"id": [3]})
    finally:
        client.close()
    with pytest.raises(AccessError) as denied:
        HTTPClickHouse(server.url, chdb.database, password="wrong")
    assert denied.value.code == 516


def test_nobody_listening_is_a_lost_connection(chdb_dir: Path) -> None:
    from voipflow.netutil import free_port

    with pytest.raises(ConnectionLost):
        HTTPClickHouse(f"http://127.0.0.1:{free_port()}/", "voipflow")


def test_endpoint_of_a_dead_process_or_a_bad_file_is_ignored(tmp_path: Path) -> None:
    assert read_endpoint(tmp_path) is None
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = {"pid": int(dead.stdout), "url": "http://127.0.0.1:1/", "database": "voipflow"}
    (tmp_path / ENDPOINT_FILE).write_text(json.dumps(doc))
    assert read_endpoint(tmp_path) is None
    (tmp_path / ENDPOINT_FILE).write_text(json.dumps({**doc, "pid": os.getpid()}))
    endpoint = read_endpoint(tmp_path)
    assert endpoint is not None and endpoint.url == "http://127.0.0.1:1/"
    (tmp_path / ENDPOINT_FILE).write_text("{half a fi")
    assert read_endpoint(tmp_path) is None


def test_holder_is_found_by_the_engines_lock_not_by_the_file(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("PID: 1\nStarted at: 2026-01-01 00:00:00\n")
    assert holder_pid(tmp_path) is None  # a file nobody locks: left behind
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(status)!r}, 'r+')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert holder_pid(tmp_path) == 1
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert holder_pid(tmp_path) is None
