"""Both ClickHouse backends on real engines: chdb in-process, clickhouse-server 18.16."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.fixtures.paths import REPO
from voipflow.schemas.flowbatch import text_to_addr16
from voipflow.storage.clickhouse import (
    ConfigError,
    ConnectionLost,
    QueryError,
    SchemaError,
    TransientError,
    connect,
)
from voipflow.storage.clickhouse.native import NativeClickHouse
from voipflow.storage.config import ClickHouseConfig


def _flows(n: int) -> dict[str, object]:
    addrs = np.array([text_to_addr16(f"10.0.{i // 256 % 256}.{i % 256}") for i in range(n)])
    return {
        "t": (np.arange(n, dtype=np.uint64) + 1_700_000_000_000).view("datetime64[ms]"),
        "addr": addrs,
        "bytes": np.arange(n, dtype=np.uint64) * 3,
        "app": pa.array(["teams", "whatsapp"] * (n // 2) + ["sip"] * (n % 2)),
    }


def test_chdb_columnar_insert_round_trip(chdb) -> None:
    chdb.execute(
        "CREATE TABLE f (t DateTime64(3, 'UTC'), addr IPv6, bytes UInt64, "
        "app LowCardinality(String)) ENGINE = MergeTree ORDER BY t"
    )
    cols = _flows(1001)
    assert chdb.insert("f", cols) == 1001
    res = chdb.query("SELECT count(), sum(bytes), uniqExact(addr), toString(min(addr)) FROM f")
    assert res.rows[0] == (1001, int(np.sum(cols["bytes"])), 1001, "::ffff:10.0.0.0")
    apps = chdb.query("SELECT app, count() AS n FROM f GROUP BY app ORDER BY app")
    assert apps.columns == ["app", "n"]
    assert apps.rows == [("sip", 1), ("teams", 500), ("whatsapp", 500)]
    # A record batch goes in as is.
    rb = pa.RecordBatch.from_pydict({"bytes": pa.array([7, 8], pa.uint64())})
    assert chdb.insert("f", rb) == 2
    assert chdb.query("SELECT count() FROM f").scalar() == 1003


def test_chdb_dedup_token_drops_replayed_insert(chdb) -> None:
    chdb.execute(
        "CREATE TABLE d (x UInt64) ENGINE = MergeTree ORDER BY x "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    assert chdb.supports_dedup_token
    cols = {"x": np.arange(10, dtype=np.uint64)}
    chdb.insert("d", cols, dedup_token="flows:0:0-9")
    chdb.insert("d", cols, dedup_token="flows:0:0-9")  # replay: dropped
    chdb.insert("d", cols, dedup_token="flows:0:10-19")  # same rows, new range: kept
    assert chdb.query("SELECT count() FROM d").scalar() == 20


def test_chdb_errors_are_translated(chdb) -> None:
    with pytest.raises(SchemaError) as exc:
        chdb.query("SELECT * FROM no_such_table")
    assert exc.value.code == 60
    chdb.execute("CREATE TABLE e (x UInt64) ENGINE = MergeTree ORDER BY x")
    with pytest.raises(SchemaError):
        chdb.insert("e", {"nope": np.zeros(3, dtype=np.uint64)})
    with pytest.raises(QueryError) as syn:
        chdb.query("SELEC 1")
    assert syn.value.code == 62 and not syn.value.transient


@pytest.mark.slow
def test_chdb_data_survives_restart(tmp_path: Path) -> None:
    # chdb binds one directory per process: each "restart" is a new process.
    script = textwrap.dedent(
        """
        import sys, numpy as np
        from voipflow.storage.clickhouse import connect
        from voipflow.storage.config import ClickHouseConfig
        ch = connect(ClickHouseConfig(database="keep"), sys.argv[1])
        ch.ensure_database()
        if sys.argv[2] == "write":
            ch.execute("CREATE TABLE k (x UInt64) ENGINE = MergeTree ORDER BY x")
            ch.insert("k", {"x": np.arange(5, dtype=np.uint64)})
        print(ch.query("SELECT sum(x) FROM k").scalar())
        ch.close()
        """
    )
    for mode in ("write", "read"):
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), mode],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert out.stdout.strip() == "10"
    assert (tmp_path / "clickhouse").is_dir()


def test_connect_picks_backend(clickhouse_server, server_database, tmp_path: Path) -> None:
    ch = connect(ClickHouseConfig(url=clickhouse_server.url_for(server_database)), tmp_path)
    try:
        assert ch.kind == "native"
        assert ch.version[:2] == (18, 16)
        assert not ch.supports_dedup_token
        assert ch.database == server_database
    finally:
        ch.close()


def test_server_columnar_insert_and_errors(clickhouse_server, server_database) -> None:
    ch = NativeClickHouse(clickhouse_server.url_for(server_database))
    ch.execute(
        "CREATE TABLE f (d Date, addr FixedString(16), bytes UInt64, app String) "
        "ENGINE = MergeTree(d, (app, bytes), 8192)"
    )
    n = 1001
    cols = _flows(n)
    assert (
        ch.insert(
            "f",
            {
                "d": np.full(n, 19_700, dtype="datetime64[D]"),
                "addr": cols["addr"],
                "bytes": cols["bytes"],
                "app": cols["app"],
            },
            dedup_token="ignored-by-18.16",
        )
        == n
    )
    res = ch.query("SELECT count(), sum(bytes), uniqExact(addr) FROM f")
    assert res.rows[0] == (n, int(np.sum(cols["bytes"])), n)
    first = ch.query("SELECT addr FROM f ORDER BY bytes LIMIT 1").scalar()
    assert bytes(first).rstrip(b"\0") == text_to_addr16("10.0.0.0").rstrip(b"\0")
    with pytest.raises(SchemaError) as exc:
        ch.query("SELECT * FROM missing")
    assert exc.value.code == 60
    with pytest.raises(SchemaError):
        ch.insert("f", {"nope": np.zeros(2, dtype=np.uint64)})
    with pytest.raises(QueryError):
        ch.query("SELEC 1")
    # The connection is still usable after permanent errors.
    assert ch.query("SELECT count() FROM f").scalar() == n
    ch.close()


def test_server_down_is_transient(clickhouse_server) -> None:
    from voipflow.netutil import free_port

    ch = NativeClickHouse(f"clickhouse://127.0.0.1:{free_port()}/default", connect_timeout_s=1)
    with pytest.raises(ConnectionLost) as exc:
        ch.query("SELECT 1")
    assert isinstance(exc.value, TransientError)


def test_bad_url_is_config_error() -> None:
    with pytest.raises(ConfigError):
        NativeClickHouse("clickhouse://")


def test_server_ensure_database_creates_it(clickhouse_server) -> None:
    import os

    name = "test_" + os.urandom(5).hex()
    ch = NativeClickHouse(clickhouse_server.url_for(name))
    with pytest.raises(SchemaError) as exc:
        ch.query("SELECT 1")
    assert exc.value.code == 81
    ch.ensure_database()
    ch.ensure_database()  # exists now: a no-op
    assert ch.query("SELECT currentDatabase()").scalar() == name
    ch.execute(f"DROP DATABASE {name}")
    ch.close()
