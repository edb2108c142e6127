"""Migrations on chdb: from empty, from every earlier state, reruns, cluster DDL."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from voipflow.schemas.traffic import COUNTERS as TRAFFIC_COUNTERS
from voipflow.storage.clickhouse.migrations import (
    Migration,
    Migrator,
    RenderOptions,
    load_migrations,
    render,
)
from voipflow.storage.config import ClickHouseConfig

MIGRATIONS = load_migrations()


def _opts(chdb, **config: object) -> RenderOptions:
    return RenderOptions.from_config(ClickHouseConfig(**config), chdb.database)  # type: ignore[arg-type]


def _schema(chdb) -> dict[str, str]:
    res = chdb.query(
        "SELECT name, create_table_query FROM system.tables "
        f"WHERE database = '{chdb.database}' ORDER BY name"
    )
    return {name: sql.replace(chdb.database, "DB") for name, sql in res.rows}


@pytest.fixture(scope="module")
def fresh_schema(chdb_dir) -> dict[str, str]:
    """The schema a migration from empty gives, for comparison."""
    import os

    from voipflow.storage.clickhouse.embedded import EmbeddedClickHouse

    ch = EmbeddedClickHouse(chdb_dir, "fresh_" + os.urandom(4).hex())
    try:
        Migrator(ch, RenderOptions.from_config(ClickHouseConfig(), ch.database)).migrate()
        return _schema(ch)
    finally:
        ch.execute(f"DROP DATABASE {ch.database} SYNC")
        ch.close()


def test_files_are_numbered_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len(MIGRATIONS) >= 4


def test_migrate_from_empty_then_rerun_is_noop(chdb, fresh_schema) -> None:
    migrator = Migrator(chdb, _opts(chdb))
    ran = migrator.migrate()
    assert [m.version for m in ran] == [m.version for m in MIGRATIONS]
    schema = _schema(chdb)
    for table in (
        "flows_voip",
        "voip_usage_in",
        "voip_usage_1m",
        "voip_usage_1h",
        "voip_usage_1d",
        "exporter_traffic_1m",
        "exporter_traffic_1h",
        "exporter_traffic_1d",
        "rules",
        "rule_events",
        "exporter_health",
        "pipeline_stats",
        "schema_migrations",
    ):
        assert table in schema
    assert schema == fresh_schema
    assert migrator.migrate() == []
    assert _schema(chdb) == schema
    recorded = chdb.query("SELECT count(), uniqExact(version) FROM schema_migrations").rows[0]
    assert recorded == (len(MIGRATIONS), len(MIGRATIONS))
    assert {s.state for s in migrator.status()} == {"applied"}


@pytest.mark.parametrize("state", range(len(MIGRATIONS)))
def test_migrate_from_every_earlier_state(chdb, fresh_schema, state: int) -> None:
    migrator = Migrator(chdb, _opts(chdb))
    first = migrator.migrate(target=state)
    assert [m.version for m in first] == list(range(1, state + 1))
    assert [s.state for s in migrator.status()].count("pending") == len(MIGRATIONS) - state
    rest = migrator.migrate()
    assert [m.version for m in rest] == list(range(state + 1, len(MIGRATIONS) + 1))
    assert _schema(chdb) == fresh_schema


@pytest.mark.parametrize("version", [m.version for m in MIGRATIONS])
def test_half_applied_migration_runs_again(chdb, fresh_schema, version: int) -> None:
    """A migration that stopped after its first statement (not recorded) completes."""
    opts = _opts(chdb)
    migrator = Migrator(chdb, opts)
    migrator.migrate(target=version - 1)
    mig = next(m for m in MIGRATIONS if m.version == version)
    chdb.execute(render(mig, opts)[0])
    migrator.migrate()
    assert _schema(chdb) == fresh_schema


def test_changed_file_is_reported_not_rerun(chdb) -> None:
    migrator = Migrator(chdb, _opts(chdb))
    migrator.migrate()
    edited = [replace(m, template=m.template + "\n-- edited\n") for m in MIGRATIONS]
    again = Migrator(chdb, _opts(chdb), edited)
    assert again.migrate() == []
    assert {s.state for s in again.status()} == {"changed"}


def test_ttl_comes_from_settings(chdb) -> None:
    Migrator(chdb, _opts(chdb, flows_ttl_days=7, usage_1m_ttl_days=0)).migrate()
    schema = _schema(chdb)
    assert "TTL toDateTime(time_received) + toIntervalDay(7)" in schema["flows_voip"]
    assert "TTL" not in schema["voip_usage_1m"]
    assert "toIntervalDay(400)" in schema["voip_usage_1h"]


def test_usage_rollups_merge_distinct_subscribers(chdb) -> None:
    Migrator(chdb, _opts(chdb)).migrate()
    # Recent windows: older ones would already be past the tables' TTL.
    base = np.datetime64("now", "h") - np.timedelta64(3, "h")
    starts = np.array([base, base + np.timedelta64(60, "s"), base + np.timedelta64(3600, "s")])
    chdb.insert(
        "voip_usage_in",
        {
            "window_start": starts.astype("datetime64[s]"),
            "window_s": np.full(3, 60, dtype=np.uint32),
            "city": np.array(["Oslo"] * 3, dtype=object),
            "region": np.array(["Oslo"] * 3, dtype=object),
            "country": np.array(["NO"] * 3, dtype=object),
            "app": np.array(["teams"] * 3, dtype=object),
            "flows": np.array([1, 2, 4], dtype=np.uint64),
            "packets": np.array([10, 20, 40], dtype=np.uint64),
            "bytes": np.array([100, 200, 400], dtype=np.uint64),
            "subscribers": np.array([2, 2, 1], dtype=np.uint64),
            "subscriber_hashes": [[11, 12], [12, 13], [14]],
            "call_seconds": np.array([60.0, 30.0, 15.0]),
            "voip_share": np.array([0.5, 0.25, 0.75]),
            "produced": (starts + np.timedelta64(90, "s")).astype("datetime64[ms]"),
        },
    )
    assert chdb.query("SELECT count(), sum(flows) FROM voip_usage_1m").rows[0] == (3, 7)
    hours = chdb.query(
        "SELECT window_start, sum(minutes), sum(flows), uniqMerge(subscribers_state), "
        "avgMerge(voip_share_state) FROM voip_usage_1h GROUP BY window_start ORDER BY window_start"
    )
    assert [r[1:] for r in hours.rows] == [(2.0, 3, 3, 0.375), (1.0, 4, 1, 0.75)]
    day = chdb.query(
        "SELECT sum(bytes), uniqMerge(subscribers_state), sum(call_seconds) FROM voip_usage_1d"
    )
    assert day.rows == [(700, 4, 105.0)]


def _usage_windows(chdb, starts: np.ndarray, window_s: int) -> None:
    """One teams window per start in Oslo: 1 flow, 10 bytes, 1 call second, half the city."""
    n = len(starts)
    chdb.insert(
        "voip_usage_in",
        {
            "window_start": starts.astype("datetime64[s]"),
            "window_s": np.full(n, window_s, dtype=np.uint32),
            "city": np.array(["Oslo"] * n, dtype=object),
            "region": np.array(["Oslo"] * n, dtype=object),
            "country": np.array(["NO"] * n, dtype=object),
            "app": np.array(["teams"] * n, dtype=object),
            "flows": np.ones(n, dtype=np.uint64),
            "packets": np.full(n, 2, dtype=np.uint64),
            "bytes": np.full(n, 10, dtype=np.uint64),
            "subscribers": np.ones(n, dtype=np.uint64),
            "subscriber_hashes": [[7]] * n,
            "call_seconds": np.ones(n),
            "voip_share": np.full(n, 0.5),
            "produced": (starts + np.timedelta64(window_s + 30, "s")).astype("datetime64[ms]"),
        },
    )


@pytest.mark.parametrize("window_s", [5, 60, 300])
def test_usage_rollups_hold_for_any_window_width(chdb, window_s: int) -> None:
    """An hour of usage is 60 minutes in the rollups whatever the windows' width."""
    Migrator(chdb, _opts(chdb)).migrate()
    hour = np.datetime64("now", "h") - np.timedelta64(3, "h")
    starts = hour + np.arange(0, 3600, window_s).astype("timedelta64[s]")
    _usage_windows(chdb, starts, window_s)
    n = len(starts)
    for table, period in (("voip_usage_1h", "window_start"), ("voip_usage_1d", "day")):
        rows = chdb.query(
            f"SELECT count() OVER () AS periods, sum(minutes), sum(flows), sum(bytes), "
            f"sum(call_seconds), uniqMerge(subscribers_state), avgMerge(voip_share_state) "
            f"FROM {table} GROUP BY {period}"
        ).rows
        assert rows == [(1, 60.0, n, 10 * n, float(n), 1, 0.5)], table


def test_rollup_minutes_of_60_s_windows_survive_the_width_migration(chdb) -> None:
    """Rows the rollups counted before migration 007 (60 s windows) keep their minutes."""
    migrator = Migrator(chdb, _opts(chdb))
    migrator.migrate(target=6)
    hour = np.datetime64("now", "h") - np.timedelta64(3, "h")
    _usage_windows(chdb, hour + np.arange(0, 1800, 60).astype("timedelta64[s]"), 60)
    migrator.migrate()
    _usage_windows(chdb, hour + np.arange(1800, 3600, 5).astype("timedelta64[s]"), 5)
    minutes = chdb.query("SELECT sum(minutes) FROM voip_usage_1h").scalar()
    assert minutes == 60.0


def _city_windows(
    chdb, rows: list[tuple[np.datetime64, str, str, int, int]], window_s: int
) -> None:
    """Usage rows (window start, city, app, bytes, city's bytes in the window)."""
    n = len(rows)
    starts = np.array([r[0] for r in rows]).astype("datetime64[s]")
    chdb.insert(
        "voip_usage_in",
        {
            "window_start": starts,
            "window_s": np.full(n, window_s, dtype=np.uint32),
            "city": np.array([r[1] for r in rows], dtype=object),
            "region": np.array(["R"] * n, dtype=object),
            "country": np.array(["NO"] * n, dtype=object),
            "app": np.array([r[2] for r in rows], dtype=object),
            "flows": np.ones(n, dtype=np.uint64),
            "packets": np.ones(n, dtype=np.uint64),
            "bytes": np.array([r[3] for r in rows], dtype=np.uint64),
            "subscribers": np.ones(n, dtype=np.uint64),
            "subscriber_hashes": [[1]] * n,
            "call_seconds": np.ones(n),
            "voip_share": np.array([r[3] / r[4] if r[4] else 0.0 for r in rows]),
            "produced": (starts + np.timedelta64(90, "s")).astype("datetime64[ms]"),
        },
    )


@pytest.mark.parametrize("window_s", [5, 60])
def test_city_traffic_counts_each_window_once(chdb, window_s: int) -> None:
    """Hourly city bytes: each window's total once, whatever the apps, the inserts, the
    re-sent rows; the windows stored before migration 011 are backfilled."""
    migrator = Migrator(chdb, _opts(chdb))
    migrator.migrate(target=10)
    rng = np.random.default_rng(window_s)
    hour = np.datetime64("now", "h") - np.timedelta64(5, "h")
    want: dict[tuple[str, np.datetime64], int] = {}
    rows = []
    for h in range(3):
        for off in range(0, 3600, window_s * 7):  # every 7th window has VoIP
            for city in ("Oslo", "Bergen"):
                ws = hour + np.timedelta64(h * 3600 + off, "s")
                apps = [a for a in ("sip", "teams", "zoom") if rng.random() < 0.6] or ["sip"]
                voip = {a: int(rng.integers(1, 10_000)) for a in apps}
                total = sum(voip.values()) + int(rng.integers(1, 10**9))
                rows += [(ws, city, a, b, total) for a, b in voip.items()]
                key = (city, hour + np.timedelta64(h, "h"))
                want[key] = want.get(key, 0) + total
    # A window with no bytes at all (voip_share 0) adds nothing.
    rows.append((hour + np.timedelta64(1, "s") * window_s, "Oslo", "sip", 0, 0))
    half = len(rows) // 2
    _city_windows(chdb, rows[:half], window_s)  # before the migration: the backfill's
    migrator.migrate()
    rng.shuffle(rows)
    for part in (rows[: len(rows) // 3], rows[len(rows) // 3 :], rows[:40]):  # 40 re-sent
        _city_windows(chdb, part, window_s)
    got = chdb.query(
        "SELECT city, window_start, arraySum((maxMap(windows)).2) FROM city_traffic_1h "
        "GROUP BY city, window_start ORDER BY city, window_start"
    ).rows
    assert len(got) == len(want) == 6
    for city, start, total in got:
        assert total == pytest.approx(want[(city, np.datetime64(start, "s"))], rel=1e-6)
    # The migration's backfill may run again (a half-applied rerun): nothing changes.
    (backfill,) = [s for s in render(MIGRATIONS[10], _opts(chdb)) if s.startswith("INSERT")]
    chdb.execute(backfill)
    again = chdb.query(
        "SELECT city, window_start, arraySum((maxMap(windows)).2) FROM city_traffic_1h "
        "GROUP BY city, window_start ORDER BY city, window_start"
    ).rows
    assert again == got


def test_subscriber_rollups_are_unions(chdb) -> None:
    """Per app (city) and hour (day): the subscribers of every city (app), backfilled
    from the per-city rollups for windows stored before migration 012, once however
    often seen."""
    migrator = Migrator(chdb, _opts(chdb))
    migrator.migrate(target=11)
    hour = np.datetime64("now", "h") - np.timedelta64(4, "h")

    def windows(minutes: range, seed: int) -> None:
        r = np.random.default_rng(seed)
        rows = []
        for m in minutes:
            for city in ("Oslo", "Bergen", "Tromso"):
                for app in ("sip", "teams"):
                    subs = sorted({int(x) for x in r.integers(1, 200, r.integers(1, 6))})
                    rows.append((hour + np.timedelta64(m, "m"), city, app, subs))
        n = len(rows)
        starts = np.array([x[0] for x in rows]).astype("datetime64[s]")
        chdb.insert(
            "voip_usage_in",
            {
                "window_start": starts,
                "window_s": np.full(n, 60, dtype=np.uint32),
                "city": np.array([x[1] for x in rows], dtype=object),
                "region": np.array(["R"] * n, dtype=object),
                "country": np.array(["NO"] * n, dtype=object),
                "app": np.array([x[2] for x in rows], dtype=object),
                "flows": np.ones(n, dtype=np.uint64),
                "packets": np.ones(n, dtype=np.uint64),
                "bytes": np.ones(n, dtype=np.uint64),
                "subscribers": np.array([len(x[3]) for x in rows], dtype=np.uint64),
                "subscriber_hashes": [x[3] for x in rows],
                "call_seconds": np.ones(n),
                "voip_share": np.full(n, 0.5),
                "produced": (starts + np.timedelta64(90, "s")).astype("datetime64[ms]"),
            },
        )

    windows(range(0, 150, 2), 1)  # before the migration: backfilled
    migrator.migrate()
    windows(range(1, 150, 2), 2)
    windows(range(60, 90), 3)  # overlaps both
    for table, usage, period, key in (
        ("app_subscribers_1h", "voip_usage_1h", "window_start", "app"),
        ("app_subscribers_1d", "voip_usage_1d", "day", "app"),
        ("city_subscribers_1h", "voip_usage_1h", "window_start", "city"),
        ("city_subscribers_1d", "voip_usage_1d", "day", "city"),
    ):
        want = chdb.query(
            f"SELECT {period}, {key}, uniqMerge(subscribers_state) FROM {usage} "
            f"GROUP BY {period}, {key} ORDER BY {period}, {key}"
        ).rows
        got = chdb.query(
            f"SELECT {period}, {key}, uniqMerge(subscribers_state) FROM {table} "
            f"GROUP BY {period}, {key} ORDER BY {period}, {key}"
        ).rows
        assert got == want and len(want) >= 2, table
        one = chdb.query(
            f"SELECT max(n) FROM (SELECT uniqMerge(subscribers_state) AS n FROM {usage} "
            f"GROUP BY {period}, app, city)"
        ).scalar()
        assert max(n for *_, n in got) > one, table  # a union, not one city's and app's


def _traffic_windows(chdb, exporter: bytes, starts: np.ndarray, window_s: int, seed: int) -> dict:
    """Inserts one exporter_traffic_1m row per window; returns each counter's total."""
    rng = np.random.default_rng(seed)
    n = len(starts)
    counters = {c: rng.integers(0, 10**9, n, dtype=np.uint64) for c in TRAFFIC_COUNTERS}
    chdb.insert(
        "exporter_traffic_1m",
        {
            "window_start": starts.astype("datetime64[s]"),
            "window_s": np.full(n, window_s, dtype=np.uint32),
            "exporter": np.array([exporter] * n, dtype="S16"),
            "observation_domain_id": np.full(n, 7, dtype=np.uint32),
            **counters,
            "produced": (starts + np.timedelta64(window_s + 30, "s")).astype("datetime64[ms]"),
        },
    )
    return {c: int(v.sum()) for c, v in counters.items()}


@pytest.mark.parametrize("window_s", [5, 60])
def test_traffic_rollups_sum_every_counter_per_exporter(chdb, window_s: int) -> None:
    """Two exporters, two hours of windows: each hour and the day hold the sums."""
    Migrator(chdb, _opts(chdb)).migrate()
    # Two whole recent hours inside one UTC day (older ones could be past the TTL).
    day = np.datetime64("now", "D") - np.timedelta64(1, "D")
    hours = [day + np.timedelta64(h, "h") for h in (10, 11)]
    a = b"\x00" * 10 + b"\xff\xff" + bytes([192, 0, 2, 1])  # 192.0.2.1 as IPv6
    b = bytes.fromhex("20010db8000000000000000000000001")  # 2001:db8::1
    offsets = np.arange(0, 3600, window_s).astype("timedelta64[s]")
    want: dict[tuple[str, int], dict[str, int]] = {}
    for i, (exp, text) in enumerate(((a, "::ffff:192.0.2.1"), (b, "2001:db8::1"))):
        for j, hour in enumerate(hours):
            want[(text, j)] = _traffic_windows(chdb, exp, hour + offsets, window_s, 10 * i + j)
    cols = ", ".join(f"sum({c})" for c in TRAFFIC_COUNTERS)
    hourly = chdb.query(
        f"SELECT toString(exporter), window_start, sum(seconds), {cols} FROM exporter_traffic_1h "
        "GROUP BY exporter, window_start ORDER BY exporter, window_start"
    ).rows
    assert len(hourly) == 4
    for text, start, seconds, *sums in hourly:
        hour = int((np.datetime64(start, "s") - hours[0]) // np.timedelta64(1, "h"))
        assert seconds == 3600
        assert dict(zip(TRAFFIC_COUNTERS, sums, strict=True)) == want[(text, hour)], (text, hour)
    daily = chdb.query(
        f"SELECT toString(exporter), day, sum(seconds), {cols} "
        "FROM exporter_traffic_1d GROUP BY exporter, day ORDER BY exporter"
    ).rows
    assert len(daily) == 2  # one day per exporter
    for text, d, seconds, *sums in daily:
        assert (np.datetime64(d, "D"), seconds) == (day, 7200)
        both = {c: want[(text, 0)][c] + want[(text, 1)][c] for c in TRAFFIC_COUNTERS}
        assert dict(zip(TRAFFIC_COUNTERS, sums, strict=True)) == both, text
    assert {r[0] for r in daily} == {"::ffff:192.0.2.1", "2001:db8::1"}


def test_cluster_ddl_is_rendered_and_parses(chdb) -> None:
    opts = _opts(chdb, cluster="voip_cluster")
    local = [s for m in MIGRATIONS for s in render(m, _opts(chdb))]
    clustered = [s for m in MIGRATIONS for s in render(m, opts)]
    for stmt in clustered:
        assert "{{" not in stmt
        if stmt.startswith("INSERT"):
            # A backfill runs once, on one node, through the Distributed tables.
            assert "_local" not in stmt and "ON CLUSTER" not in stmt, stmt
            chdb.query("EXPLAIN AST " + stmt)
            continue
        assert "ON CLUSTER `voip_cluster`" in stmt, stmt
        chdb.query("EXPLAIN AST " + stmt)  # parses as ClickHouse SQL
        if "MergeTree" in stmt:
            assert re.search(r"ENGINE = Replicated\w*MergeTree", stmt), stmt
            assert "replicated_deduplication_window" in stmt
    merge_tables = re.findall(r"CREATE TABLE IF NOT EXISTS `\w+`\.(\w+)", "\n".join(local))
    distributed = {
        m.group(1)
        for s in clustered
        if (m := re.search(r"CREATE TABLE IF NOT EXISTS `\w+`\.(\w+) ON CLUSTER .* Distributed", s))
    }
    assert distributed == set(merge_tables)
    for stmt in clustered:
        if "MATERIALIZED VIEW" in stmt:
            # Views read and write the local tables, never the Distributed ones.
            assert re.search(r"TO `\w+`\.\w+_local", stmt)
            assert re.search(r"FROM `\w+`\.\w+_local", stmt)


def test_unknown_placeholder_is_refused() -> None:
    from voipflow.storage.clickhouse.migrations import MigrationError

    bad = Migration(99, "bad", "CREATE TABLE {{db}}.x {{nope}} (a UInt8) ENGINE = Memory;")
    with pytest.raises(MigrationError, match="nope"):
        render(bad, RenderOptions(database="d"))
