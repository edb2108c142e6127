"""The analysts' queries (schemas/clickhouse/queries) on chdb, against known answers.

Each test inserts crafted rows through the same tables the sink fills
(usage through voip_usage_in, so the rollups are exercised too), computes the
answer independently in Python, and compares. Times are placed well inside
or well outside each query's window so the test never straddles a boundary.
"""

from __future__ import annotations

import ipaddress
import time
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from tests.fixtures.paths import REPO
from voipflow.schemas.flowbatch import addr_to_text, ipv4_to_addr16
from voipflow.storage.clickhouse.migrations import MIGRATIONS_DIR, Migrator, RenderOptions
from voipflow.storage.config import ClickHouseConfig

QUERIES = MIGRATIONS_DIR / "queries"
DOC = REPO / "docs" / "sql.md"
CITIES = ("Oslo", "Bergen", "Tromsø")
APPS = ("teams", "whatsapp", "sip")
HOURS_AGO = (1, 3, 10, 20, 30, 40, 60, 200)


def query(name: str) -> str:
    return (QUERIES / f"{name}.sql").read_text()


@pytest.fixture()
def db(chdb):
    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    return chdb


@pytest.fixture()
def usage(db):
    """Two minutes per (hour, city, app); returns the rows inserted."""
    rng = np.random.default_rng(7)
    hour_now = int(time.time()) // 3600 * 3600
    rows = []
    for h in HOURS_AGO:
        for city in CITIES:
            for app in APPS:
                for minute in (0, 1):
                    if rng.random() < 0.2:
                        continue  # not every app everywhere every hour
                    hashes = sorted(set(rng.integers(0, 40, rng.integers(1, 6)).tolist()))
                    rows.append(
                        {
                            "window_start": hour_now - h * 3600 + minute * 60,
                            "hours_ago": h,
                            "city": city,
                            "app": app,
                            "flows": int(rng.integers(1, 100)),
                            "bytes": int(rng.integers(1000, 10**6)),
                            "call_seconds": 6.0 * int(rng.integers(0, 100)),
                            "hashes": hashes,
                        }
                    )
    n = len(rows)
    db.insert(
        "voip_usage_in",
        {
            "window_start": np.array([r["window_start"] for r in rows], dtype="datetime64[s]"),
            "window_s": np.full(n, 60, dtype=np.uint32),
            "city": pa.array([r["city"] for r in rows]),
            "region": pa.array(["R"] * n),
            "country": pa.array(["NO"] * n),
            "app": pa.array([r["app"] for r in rows]),
            "flows": np.array([r["flows"] for r in rows], dtype=np.uint64),
            "packets": np.array([r["flows"] * 50 for r in rows], dtype=np.uint64),
            "bytes": np.array([r["bytes"] for r in rows], dtype=np.uint64),
            "subscribers": np.array([len(r["hashes"]) for r in rows], dtype=np.uint64),
            "subscriber_hashes": pa.array([r["hashes"] for r in rows], pa.list_(pa.uint64())),
            "call_seconds": np.array([r["call_seconds"] for r in rows]),
            "voip_share": np.full(n, 0.5),
            "produced": np.array([r["window_start"] * 1000 for r in rows], dtype="datetime64[ms]"),
        },
    )
    return rows


def test_top_cities_by_voip_minutes(db, usage) -> None:
    seconds: dict[str, float] = defaultdict(float)
    subs: dict[str, set[int]] = defaultdict(set)
    for r in usage:
        if r["hours_ago"] <= 7 * 24 - 2:
            seconds[r["city"]] += r["call_seconds"]
            subs[r["city"]].update(r["hashes"])
    expected = sorted(
        ((c, round(s / 60, 1), len(subs[c])) for c, s in seconds.items()),
        key=lambda t: (-t[1], t[0]),
    )
    got = db.query(query("top_cities_voip_minutes")).rows
    assert [(c, pytest.approx(m), s) for c, m, s in expected] == got


def test_app_share_per_city(db, usage) -> None:
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    for r in usage:
        if r["hours_ago"] < 24:
            seconds[(r["city"], r["app"])] += r["call_seconds"]
    got = db.query(query("app_share_per_city")).rows
    assert {(c, a) for c, a, _, _ in got} == set(seconds)
    for city, app, minutes, share in got:
        city_total = sum(s for (c, _), s in seconds.items() if c == city)
        assert minutes == pytest.approx(round(seconds[(city, app)] / 60, 1))
        assert share == pytest.approx(seconds[(city, app)] / city_total, abs=1e-4)
    for city in CITIES:
        assert sum(s for c, _, _, s in got if c == city) == pytest.approx(1.0, abs=1e-3)


def test_hourly_trend(db, usage) -> None:
    per_hour: dict[int, dict[str, object]] = {}
    for r in usage:
        if r["hours_ago"] >= 48:
            continue
        hour = r["window_start"] // 3600 * 3600
        acc = per_hour.setdefault(hour, {"flows": 0, "bytes": 0, "s": 0.0, "subs": set()})
        acc["flows"] += r["flows"]
        acc["bytes"] += r["bytes"]
        acc["s"] += r["call_seconds"]
        acc["subs"].update(r["hashes"])
    got = db.query(query("hourly_trend")).rows
    assert [int(h.timestamp()) if hasattr(h, "timestamp") else int(h) for h, *_ in got] == sorted(
        per_hour
    )
    for (_hour, flows, nbytes, minutes, subs), key in zip(got, sorted(per_hour), strict=True):
        acc = per_hour[key]
        assert (flows, nbytes, subs) == (acc["flows"], acc["bytes"], len(acc["subs"]))
        assert minutes == pytest.approx(round(acc["s"] / 60, 1))


def test_new_subscribers_per_app(db) -> None:
    from tests.storage.sinkdata import flow_batch
    from voipflow.storage.sink.tables import parse_voip_flows

    now_ms = int(time.time() * 1000)
    rng = np.random.default_rng(3)
    recent: dict[str, set[str]] = defaultdict(set)
    before: dict[str, set[str]] = defaultdict(set)
    for when_ms, bucket in (
        (now_ms - 2 * 3600_000, recent),
        (now_ms - 3 * 86400_000, before),
        (now_ms - 10 * 86400_000, None),  # outside both windows
    ):
        cols, n = parse_voip_flows(flow_batch(300, base=0, now_ms=when_ms))
        subs = ipv4_to_addr16((0x0A000000 + rng.integers(0, 60, n)).astype(np.uint32))
        apps = rng.choice(APPS, n)
        cols["subscriber_addr"] = subs
        cols["app"] = pa.array(apps.tolist())
        db.insert("flows_voip", cols)
        if bucket is not None:
            for a, s in zip(apps.tolist(), subs.tolist(), strict=True):
                bucket[a].add(addr_to_text(s))
    expected = {app: len(recent[app] - before[app]) for app in recent}
    got = dict(db.query(query("new_subscribers_per_app")).rows)
    assert got == {a: n for a, n in expected.items() if n}
    assert any(len(recent[a] & before[a]) for a in recent), "test data has no returning users"


def test_rule_hits(db) -> None:
    now = time.time()
    events = [
        # rule, seconds ago, event, state, action, feedback, point, hits, bytes
        ("r1", 3600, "published", "pending", "block", "", "", 0, 0),
        ("r1", 3500, "feedback", "active", "block", "applied", "ep1", 10, 1000),
        ("r1", 3400, "feedback", "active", "block", "applied", "ep2", 5, 500),
        ("r1", 100, "feedback", "active", "block", "applied", "ep1", 7, 700),
        ("r2", 7200, "published", "pending", "throttle", "", "", 0, 0),
        ("r2", 7100, "feedback", "failed", "throttle", "failed", "ep1", 0, 0),
        ("r3", 86400 * 2, "feedback", "active", "alert", "applied", "ep3", 3, 30),
        ("r3", 60, "expired", "removed", "alert", "removed", "ep3", 1, 10),
        ("r4", 86400 * 10, "feedback", "active", "block", "applied", "ep1", 99, 9),  # too old
    ]
    n = len(events)
    db.insert(
        "rule_events",
        {
            "ts": np.array([int((now - e[1]) * 1000) for e in events], dtype="datetime64[ms]"),
            "rule_id": pa.array([e[0] for e in events]),
            "rule_version": np.ones(n, dtype=np.uint32),
            "event": pa.array([e[2] for e in events]),
            "state": pa.array([e[3] for e in events]),
            "action": pa.array([e[4] for e in events]),
            "feedback": pa.array([e[5] for e in events]),
            "enforcement_point": pa.array([e[6] for e in events]),
            "hits": np.array([e[7] for e in events], dtype=np.uint64),
            "hit_bytes": np.array([e[8] for e in events], dtype=np.uint64),
        },
    )
    got = {r[0]: r[1:7] for r in db.query(query("rule_hits")).rows}
    expected = {}
    for rule in ("r1", "r2", "r3"):
        evs = [e for e in events if e[0] == rule]
        last = min(evs, key=lambda e: e[1])
        expected[rule] = (
            last[4],
            last[3],
            sum(e[7] for e in evs),
            sum(e[8] for e in evs),
            len({e[6] for e in evs if e[5] == "applied"}),
            sum(1 for e in evs if e[5] == "failed"),
        )
    assert got == expected
    order = [r[0] for r in db.query(query("rule_hits")).rows]
    assert order == sorted(expected, key=lambda r: (-expected[r][2], r))


def test_exporter_health(db) -> None:
    from tests.storage.sinkdata import health_message
    from voipflow.storage.sink.tables import combine, parse_health

    now_ms = int(time.time() * 1000)
    reports = [
        ("192.0.2.1", now_ms - 60_000, 1000, 0),
        ("192.0.2.1", now_ms - 50_000, 1000, 10),
        ("192.0.2.2", now_ms - 40_000, 500, 500),
        ("192.0.2.2", now_ms - 2 * 3600_000, 9999, 9999),  # older than the hour
    ]
    parts = []
    for exporter, ts, records, lost in reports:
        cols, n = parse_health(health_message(ts, exporter, records))
        cols["sequence_lost"] = np.array([lost], dtype=np.uint64)
        parts.append((cols, n))
    db.insert("exporter_health", combine(parts)[0])
    got = db.query(query("exporter_health")).rows
    assert [(r[0], r[2], r[3], r[4]) for r in got] == [
        ("::ffff:192.0.2.2", 500, 500, 0.5),
        ("::ffff:192.0.2.1", 2000, 10, round(10 / 2010, 4)),
    ]


def test_exporter_coverage(db) -> None:
    from tests.storage.sinkdata import traffic_message
    from voipflow.storage.sink.tables import combine, parse_traffic

    minute = (int(time.time()) // 60 - 10) * 60_000
    windows = [
        # exporter, minutes ago (x10), domain, flows, placed, unlocated, unhomed, voip, bytes, voip
        ("192.0.2.1", 0, 0, 100, 80, 5, 15, 4, 10_000, 2_000),
        ("192.0.2.1", 1, 0, 50, 50, 0, 0, 1, 5_000, 100),
        ("192.0.2.1", 1, 7, 10, 0, 0, 10, 0, 1_000, 0),  # a second observation domain
        ("2001:db8::9", 2, 0, 20, 10, 10, 0, 0, 30_000, 0),
        ("192.0.2.3", 0, 0, 0, 0, 0, 0, 0, 0, 0),  # an exporter that sent nothing
        ("192.0.2.1", 9, 0, 999, 999, 0, 0, 999, 999_999, 9),  # older than the hour
    ]
    parts = [
        parse_traffic(
            traffic_message(
                minute - ago * 600_000,
                exporter,
                domain,
                flows,
                placed_flows=placed,
                unlocated_flows=unlocated,
                unhomed_flows=unhomed,
                voip_flows=voip,
                bytes_est=nbytes,
                voip_bytes_est=vbytes,
            )
        )
        for exporter, ago, domain, flows, placed, unlocated, unhomed, voip, nbytes, vbytes in (
            windows
        )
    ]
    db.insert("exporter_traffic_1m", combine(parts)[0])
    got = db.query(query("exporter_coverage")).rows
    sums: dict[str, list[int]] = defaultdict(lambda: [0] * 7)
    last: dict[str, int] = {}
    for exporter, ago, _, *counters in windows:
        if ago >= 6:
            continue
        acc = sums[exporter]
        for k, v in enumerate(counters):
            acc[k] += v
        last[exporter] = max(last.get(exporter, 0), (minute - ago * 600_000) // 1000)
    expected = []
    for exporter, (flows, placed, unlocated, unhomed, voip, nbytes, vbytes) in sums.items():
        expected.append(
            (
                # ClickHouse shows IPv4 exporters as IPv4-mapped IPv6
                f"::ffff:{exporter}" if ipaddress.ip_address(exporter).version == 4 else exporter,
                flows,
                nbytes,
                round(placed / max(flows, 1), 4),
                round(unlocated / max(flows, 1), 4),
                round(unhomed / max(flows, 1), 4),
                voip,
                round(vbytes / max(nbytes, 1), 4),
                last[exporter],
            )
        )
    expected.sort(key=lambda r: (-r[2], r[0]))
    assert [r[0] for r in got] == [r[0] for r in expected]
    for row, want in zip(got, expected, strict=True):
        assert row[1:3] == want[1:3] and row[6] == want[6]
        assert row[3:6] == pytest.approx(want[3:6], abs=1e-4)
        assert row[7] == pytest.approx(want[7], abs=1e-4)
        last_window = row[8]
        assert (
            int(last_window.timestamp()) if hasattr(last_window, "timestamp") else last_window
        ) == want[8]


def test_exporter_daily_traffic(db) -> None:
    from tests.storage.sinkdata import traffic_message
    from voipflow.storage.sink.tables import combine, parse_traffic

    today = int(time.time()) // 86400 * 86400
    windows = [
        # exporter, days ago, minute of the day, domain, flows, placed, bytes, voip bytes
        ("192.0.2.1", 1, 600, 0, 100, 80, 10_000, 2_000),
        ("192.0.2.1", 1, 601, 0, 50, 50, 5_000, 100),
        ("192.0.2.1", 1, 700, 7, 10, 0, 1_000, 0),  # a second observation domain
        ("192.0.2.1", 3, 10, 0, 20, 20, 2_000, 0),
        ("2001:db8::9", 1, 1000, 0, 20, 10, 30_000, 0),
        ("192.0.2.1", 45, 0, 0, 999, 999, 999_999, 9),  # older than 30 days
    ]
    parts = [
        parse_traffic(
            traffic_message(
                (today - ago * 86400 + minute * 60) * 1000,
                exporter,
                domain,
                flows,
                placed_flows=placed,
                bytes_est=nbytes,
                voip_bytes_est=vbytes,
            )
        )
        for exporter, ago, minute, domain, flows, placed, nbytes, vbytes in windows
    ]
    db.insert("exporter_traffic_1m", combine(parts)[0])
    got = db.query(query("exporter_daily_traffic")).rows
    sums: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0] * 5)
    for exporter, ago, _, _, flows, placed, nbytes, vbytes in windows:
        if ago > 30:
            continue
        text = f"::ffff:{exporter}" if ipaddress.ip_address(exporter).version == 4 else exporter
        acc = sums[(today - ago * 86400, text)]
        for k, v in enumerate((nbytes, flows, placed, vbytes, 60)):
            acc[k] += v
    expected = sorted(
        (
            (day, text, nbytes, flows, round(placed / flows, 4), round(vbytes / nbytes, 4), secs)
            for (day, text), (nbytes, flows, placed, vbytes, secs) in sums.items()
        ),
        key=lambda r: (-r[0], -r[2], r[1]),
    )
    assert len(got) == len(expected) == 3
    for row, want in zip(got, expected, strict=True):
        day = row[0]
        assert int(np.datetime64(day, "s").astype(np.int64)) == want[0]
        assert row[1:4] == want[1:4]
        assert row[4:6] == pytest.approx(want[4:6], abs=1e-4)
        assert row[6] == pytest.approx(want[6] / 3600, abs=0.01)


def test_every_query_is_documented_and_tested() -> None:
    doc = DOC.read_text()
    names = sorted(p.stem for p in QUERIES.glob("*.sql"))
    tested = {
        "top_cities_voip_minutes",
        "app_share_per_city",
        "hourly_trend",
        "new_subscribers_per_app",
        "rule_hits",
        "exporter_health",
        "exporter_coverage",
        "exporter_daily_traffic",
    }
    assert set(names) == tested
    for name in names:
        assert query(name).strip() in doc, f"docs/sql.md does not show {name}.sql as it is"
