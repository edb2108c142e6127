"""Every panel of "VoIP usage" on chdb, against answers computed here.

Usage windows go in as voip-usage.v1 messages through the sink's parser into
``voip_usage_in``, so the materialized views build ``voip_usage_1m`` and the
hourly and daily rollups exactly as in production; VoIP flows go in as a
voip-flows.v2 batch; coordinates through ``dashboards.cities`` from a prefix
table. Each panel's SQL is expanded by the Grafana stand-in
(:mod:`tests.dashboards.grafana_sim`; Grafana cannot run here) for several
time ranges (each picking another usage table, one older than the per-minute
retention) and variable selections (including a city with a quote in its
name), run, and compared with what this module computes from the same
windows in Python.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.dashboards.grafana_sim import Request, panel_interval_ms
from tests.dashboards.panels import (
    epoch,
    migrated_database,
    panels,
    run,
    selection,
    variable_values,
)
from voipflow.dashboards import usage
from voipflow.dashboards.cities import city_columns, read_cities
from voipflow.schemas import voipflows
from voipflow.schemas.flowbatch import ipv4_to_addr16
from voipflow.storage.sink.tables import combine, parse_usage, parse_voip_flows

NOW = int(time.time())
DAY = 86400
T0 = NOW // 3600 * 3600 - 5 * 3600  # recent block: 4 hours of windows from here
T_OLD = (NOW - 40 * DAY) // 3600 * 3600  # older than the per-minute table keeps
CITY_INFO = {
    "Berlin": ("Berlin", "DE", 52.52, 13.405),
    "Paris": ("Ile-de-France", "FR", 48.8566, 2.3522),
    "L'Aquila": ("Abruzzo", "IT", 42.3498, 13.3995),
    "Nowhere": ("Atlantis", "ZZ", None, None),  # no coordinates: not on the map
}
APPS = ("sip", "teams", "whatsapp")
DASH = usage.build()
PANELS = panels(DASH)


@dataclass(frozen=True)
class Win:
    ws: int
    city: str
    app: str
    flows: int
    packets: int
    bytes: int
    subs: frozenset[int]
    call_seconds: float
    share: float
    city_total: int


@dataclass(frozen=True)
class Roll:
    """A row of one usage table as the model sees it."""

    t: int
    g: int
    city: str
    app: str
    flows: int
    packets: int
    bytes: int
    subs: frozenset[int]
    call_seconds: float


def _make_windows() -> list[Win]:
    rng = random.Random(7)
    pools = {c: [rng.getrandbits(63) for _ in range(25)] for c in CITY_INFO}
    out: list[Win] = []
    blocks = [(T0, 240, list(CITY_INFO)), (T_OLD, 120, ["Berlin", "Paris"])]
    for start, minutes, cities in blocks:
        for m in range(minutes):
            ws = start + 60 * m
            for city in cities:
                drafts = []
                for app in APPS:
                    if rng.random() < 0.55:
                        drafts.append(
                            (
                                app,
                                rng.randint(1, 40),
                                rng.randint(50, 5000),
                                rng.randint(500, 90_000),
                                frozenset(rng.sample(pools[city], rng.randint(1, 5))),
                                rng.randint(0, 6000) / 10,
                            )
                        )
                total = sum(d[3] for d in drafts) + rng.randint(1_000, 200_000)
                for app, fl, pk, by, subs, cs in drafts:
                    out.append(Win(ws, city, app, fl, pk, by, subs, cs, by / total, total))
    return out


WINDOWS = _make_windows()


@dataclass(frozen=True)
class Flow:
    t_ms: int
    city: str
    app: str
    sub: int
    peer: int
    is_voip: int


def _make_flows() -> list[Flow]:
    rng = random.Random(11)
    out = []
    for _ in range(400):
        ci = rng.randrange(len(CITY_INFO))
        out.append(
            Flow(
                (T0 + rng.randrange(4 * 3600)) * 1000 + rng.randrange(1000),
                list(CITY_INFO)[ci],
                rng.choice(APPS),
                (10 << 24) | (ci << 16) | rng.randrange(12),
                (52 << 24) | (112 << 16) | rng.randrange(5),
                0 if rng.random() < 0.1 else 1,
            )
        )
    return out


FLOWS = _make_flows()


def _confidence(f: Flow) -> float:
    """0.05, 0.15, ... 0.95 from the flow's time: every confidence tenth gets flows."""
    return (f.t_ms % 10) / 10 + 0.05


def _evidence(f: Flow) -> int:
    """UDP on every flow and one other bit, from the flow's time."""
    return (1 << 6) | (1 << (f.t_ms // 10 % 20))


def _role(f: Flow) -> str:
    """Every role and '' (rows of voip-flows.v1), from the flow's time."""
    return ("", *voipflows.ROLES)[f.t_ms // 7 % (len(voipflows.ROLES) + 1)]


def _usage_message(w: Win, rng: random.Random) -> bytes:
    region, country, _, _ = CITY_INFO[w.city]
    return json.dumps(
        {
            "schema": "voip-usage.v1",
            "window_start_ms": w.ws * 1000,
            "window_s": 60,
            "city": w.city,
            "region": region,
            "country": country,
            "app": w.app,
            "flows": w.flows,
            "packets": w.packets,
            "bytes": w.bytes,
            "subscribers": len(w.subs),
            "subscriber_hashes": sorted(w.subs),
            "call_seconds": w.call_seconds,
            "voip_share": w.share,
            "produced_ms": (w.ws + 65) * 1000 + rng.randrange(3000),
        }
    ).encode()


def _flow_batch(flows: list[Flow]) -> bytes:
    n = len(flows)
    t = np.array([f.t_ms for f in flows], dtype=np.uint64)
    cols: dict[str, Any] = dict(
        time_received_ms=t,
        flow_start_ms=t - np.uint64(30_000),
        flow_end_ms=t,
        exporter_addr=ipv4_to_addr16(np.full(n, 0xC0000201, dtype=np.uint32)),
        subscriber_addr=ipv4_to_addr16(np.array([f.sub for f in flows], dtype=np.uint32)),
        peer_addr=ipv4_to_addr16(np.array([f.peer for f in flows], dtype=np.uint32)),
        ip_version=np.full(n, 4, dtype=np.uint8),
        protocol=np.full(n, 17, dtype=np.uint8),
        packets=np.full(n, 100, dtype=np.uint64),
        bytes=np.full(n, 16_000, dtype=np.uint64),
        sampling_rate=np.ones(n, dtype=np.uint32),
        city=pa.array([f.city for f in flows]),
        region=pa.array([CITY_INFO[f.city][0] for f in flows]),
        country=pa.array([CITY_INFO[f.city][1] for f in flows]),
        app=pa.array([f.app for f in flows]),
        role=pa.array([_role(f) for f in flows]),
        is_voip=np.array([f.is_voip for f in flows], dtype=np.uint8),
        confidence=np.array([_confidence(f) for f in flows], dtype=np.float32),
        evidence=np.array([_evidence(f) for f in flows], dtype=np.uint32),
        classifier_version=pa.array(["test"] * n),
    )
    return voipflows.encode(voipflows.make_voip_batch(cols))


def _prefix_table(path: Path, berlin: tuple[float, float]) -> Path:
    lines = ["prefix,city,region,country,lat,lon"]
    for i, (city, (region, country, lat, lon)) in enumerate(CITY_INFO.items(), start=1):
        if city == "Berlin":
            lat, lon = berlin
        for prefix in (f"10.{i}.0.0/16", f"2001:db8:{i}::/48"):
            coords = "," if lat is None else f"{lat},{lon}"
            lines.append(f'{prefix},"{city}",{region},{country},{coords}')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ch(chdb_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    rng = random.Random(3)
    with migrated_database(chdb_dir) as ch:
        messages = [_usage_message(w, rng) for w in WINDOWS]
        for i in range(4):  # several inserts: parts the queries must aggregate over
            cols, _ = combine([parse_usage(m) for m in messages[i::4]])
            ch.insert("voip_usage_in", cols)
        cols, _ = parse_voip_flows(_flow_batch(FLOWS))
        ch.insert("flows_voip", cols)
        tmp = tmp_path_factory.mktemp("cities")
        # Berlin first at a wrong place: the later load must win on the map.
        first = read_cities(_prefix_table(tmp / "old.csv", (0.0, 0.0)))
        ch.insert("cities", city_columns(first, updated_ms=1_000))
        second = read_cities(_prefix_table(tmp / "new.csv", CITY_INFO["Berlin"][2:]))  # type: ignore[arg-type]
        ch.insert("cities", city_columns(second, updated_ms=2_000))
        yield ch


# -- the model ----------------------------------------------------------------


def _table(kind: str) -> list[Roll]:
    if kind == "1m":
        return [
            Roll(w.ws, 60, w.city, w.app, w.flows, w.packets, w.bytes, w.subs, w.call_seconds)
            for w in WINDOWS
            if w.ws >= NOW - 35 * DAY  # the per-minute TTL drops the old block on insert
        ]
    width = 3600 if kind == "1h" else DAY
    acc: dict[tuple[int, str, str], list[Win]] = defaultdict(list)
    for w in WINDOWS:
        acc[(w.ws // width * width, w.city, w.app)].append(w)
    return [
        Roll(
            t,
            width,
            city,
            app,
            sum(w.flows for w in ws),
            sum(w.packets for w in ws),
            sum(w.bytes for w in ws),
            frozenset().union(*(w.subs for w in ws)),
            sum(w.call_seconds for w in ws),
        )
        for (t, city, app), ws in acc.items()
    ]


def _by_range(f: int, t: int) -> str:
    if t - f <= 2 * DAY and f >= NOW - 35 * DAY:
        return "1m"
    if t - f <= 62 * DAY and f >= NOW - 400 * DAY:
        return "1h"
    return "1d"


def _by_interval(iv: int, f: int) -> str:
    if iv < 3600 and f >= NOW - 35 * DAY:
        return "1m"
    if iv < DAY and f >= NOW - 400 * DAY:
        return "1h"
    return "1d"


@dataclass(frozen=True)
class Scenario:
    name: str
    from_s: int
    to_s: int
    cities: tuple[str, ...] | None = None
    apps: tuple[str, ...] | None = None

    def request(self, panel: dict[str, Any]) -> Request:
        f_ms, t_ms = self.from_s * 1000 + 250, self.to_s * 1000 + 750
        return Request(
            f_ms,
            t_ms,
            panel_interval_ms(panel, f_ms, t_ms),
            {
                "city": selection("city", sorted(CITY_INFO), list(self.cities or [])),
                "app": selection("app", list(APPS), list(self.apps or [])),
            },
        )

    def keep(self, city: str, app: str) -> bool:
        return (self.cities is None or city in self.cities) and (
            self.apps is None or app in self.apps
        )


SCENARIOS = [
    Scenario("3h", T0 + 10 * 60, T0 + 190 * 60),
    Scenario("3h-filtered", T0 + 10 * 60, T0 + 190 * 60, ("Berlin", "L'Aquila"), ("sip", "teams")),
    Scenario("3d-hourly", T0 - 3 * DAY + 1800, T0 + 2 * 3600 + 600),
    Scenario("1y-daily", NOW - 365 * DAY, NOW),
    Scenario("old-hour", T_OLD + 15 * 60, T_OLD + 100 * 60, ("Paris",)),
    # Two days and eight hours around the old block's whole day: subscribers merge that
    # day's state and the hours at the edges.
    Scenario("days-and-hours", T_OLD // DAY * DAY - 19 * 3600, T_OLD // DAY * DAY + DAY + 3 * 3600),
    # A week and two hours: the old block's second hour now, both its hours a week before.
    Scenario("week-after-old", T_OLD + 3600, T_OLD + 7 * DAY + 7200),
]


def _rows(sc: Scenario, kind: str) -> list[Roll]:
    f, t = sc.from_s, sc.to_s  # the macros cut at whole seconds
    return [r for r in _table(kind) if f <= r.t <= t and sc.keep(r.city, r.app)]


def _range_rows(sc: Scenario) -> list[Roll]:
    return _rows(sc, _by_range(sc.from_s, sc.to_s))


def _interval(sc: Scenario, panel: dict[str, Any]) -> int:
    return max(sc.request(panel).interval_ms // 1000, 1)


def _interval_rows(sc: Scenario, panel: dict[str, Any]) -> list[Roll]:
    return _rows(sc, _by_interval(_interval(sc, panel), sc.from_s))


def _flows(sc: Scenario) -> list[Flow]:
    f_ms, t_ms = sc.from_s * 1000 + 250, sc.to_s * 1000 + 750
    return [x for x in FLOWS if f_ms <= x.t_ms <= t_ms and x.is_voip and sc.keep(x.city, x.app)]


def _group(rows: Iterable[Roll], key: Callable[[Roll], Any]) -> dict[Any, list[Roll]]:
    out: dict[Any, list[Roll]] = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out


def _minutes(rows: Iterable[Roll]) -> float:
    return sum(r.call_seconds for r in rows) / 60


def _subs(rows: Iterable[Roll]) -> int:
    return len(frozenset().union(*(r.subs for r in rows)))


def _calls(flows: Iterable[Flow]) -> int:
    return len({(x.sub, x.peer, x.app) for x in flows})


_WIDTH = {"1m": 60, "1h": 3600, "1d": DAY}


def _shares(sc: Scenario, kind: str) -> dict[tuple[int, str], list[float]]:
    """(period start, city) -> [VoIP bytes, city bytes] from the usage table ``kind``.

    VoIP bytes are those of the selected cities and apps; city bytes count each
    window with any VoIP of a selected city once, whatever the app selection.
    A window counts when its period (minute, hour, day) starts in the range;
    the per-minute table has lost the windows older than its TTL.
    """
    width = _WIDTH[kind]
    acc: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0, 0])
    seen: set[tuple[int, str]] = set()
    for w in WINDOWS:
        t = w.ws // width * width
        if kind == "1m" and w.ws < NOW - 35 * DAY:
            continue
        if not (sc.from_s <= t <= sc.to_s) or (sc.cities is not None and w.city not in sc.cities):
            continue
        a = acc[(t, w.city)]
        if (w.ws, w.city) not in seen:
            seen.add((w.ws, w.city))
            a[1] += w.city_total
        if sc.keep(w.city, w.app):
            a[0] += w.bytes
    return dict(acc)


# -- the checks: one per panel -----------------------------------------------


def _one(res: Any) -> Any:
    assert len(res.rows) == 1 and len(res.rows[0]) == 1, res.rows
    return res.rows[0][0]


def _series(res: Any) -> dict[tuple[int, str], float]:
    assert res.columns[0] == "time"
    return {(epoch(r[0]), r[1]): r[2] for r in res.rows}


def _assert_series(got: dict[Any, float], want: dict[Any, float]) -> None:
    assert want, "the scenario must select data"
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k


def check_minutes(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    rows = _range_rows(sc)
    assert rows
    assert _one(res) == pytest.approx(_minutes(rows), rel=1e-9)


def check_calls(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    want = _calls(_flows(sc))
    assert _one(res) == want


def check_subscribers(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert _one(res) == _subs(_range_rows(sc))


def check_bytes(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert _one(res) == sum(r.bytes for r in _range_rows(sc))


def check_share(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    shares = _shares(sc, _by_range(sc.from_s, sc.to_s))
    got = _one(res)
    if not shares:  # no traffic totals in the range: no answer, not a wrong one
        assert got is None
        return
    want = sum(s[0] for s in shares.values()) / sum(s[1] for s in shares.values())
    assert got == pytest.approx(want, rel=1e-5)


def check_active_cities(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert _one(res) == len({r.city for r in _range_rows(sc)})


def check_map(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    by_city = _group(_range_rows(sc), lambda r: r.city)
    shares: dict[str, list[float]] = defaultdict(lambda: [0, 0])
    for (_, city), (voip, total) in _shares(sc, _by_range(sc.from_s, sc.to_s)).items():
        shares[city][0] += voip
        shares[city][1] += total
    want = sorted(
        (
            (c, CITY_INFO[c][2], CITY_INFO[c][3], _minutes(rs), _subs(rs))
            for c, rs in by_city.items()
            if CITY_INFO[c][2] is not None
        ),
        key=lambda x: (-x[3], x[0]),
    )
    assert res.columns == ["city", "lat", "lon", "voip_minutes", "subscribers", "voip_share"]
    assert [r[0] for r in res.rows] == [w[0] for w in want]
    for got, exp in zip(res.rows, want, strict=True):
        assert got[1:3] == exp[1:3]
        assert got[3] == pytest.approx(exp[3], rel=1e-9)
        assert got[4] == exp[4]
        # A city without traffic totals in the range gets 0.
        voip, total = shares.get(got[0], (0, 0))
        assert got[5] == pytest.approx(voip / total if total else 0.0, rel=1e-5)


def check_week_over_week(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    week = 7 * DAY
    cur = _group(_range_rows(sc), lambda r: r.city)
    before = Scenario(sc.name, sc.from_s - week, sc.to_s - week, sc.cities, sc.apps)
    # The week before is read from the table the range itself would pick, from its own start.
    prev = _group(_rows(before, _by_range(before.from_s, before.to_s)), lambda r: r.city)
    want = sorted(((c, _minutes(rs)) for c, rs in cur.items()), key=lambda x: (-x[1], x[0]))[:15]
    assert res.columns == ["city", "voip_minutes", "voip_minutes_week_before", "change"]
    assert [r[0] for r in res.rows] == [w[0] for w in want]
    for (city, minutes, week_before, change), (_, m) in zip(res.rows, want, strict=True):
        assert minutes == pytest.approx(m, rel=1e-9)
        pm = _minutes(prev.get(city, []))
        assert week_before == pytest.approx(pm, rel=1e-9)
        if pm > 0:
            assert change == pytest.approx(m / pm - 1, rel=1e-9)
        else:
            assert change is None


def _classified(sc: Scenario) -> list[Flow]:
    f_ms, t_ms = sc.from_s * 1000 + 250, sc.to_s * 1000 + 750
    return [x for x in FLOWS if f_ms <= x.t_ms <= t_ms and sc.keep(x.city, x.app)]


def check_confidence(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for f in _classified(sc):
        bucket = min(int(_confidence(f) * 10), 9)
        acc[str(bucket / 10) if bucket else "0"][0 if f.is_voip else 1] += 1
    assert res.columns == ["confidence_from", "voip_flows", "other_flows"]
    assert {r[0]: [r[1], r[2]] for r in res.rows} == dict(acc)


def check_evidence(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    from voipflow.dashboards.usage import Evidence

    flows = _flows(sc)
    counts: dict[str, int] = defaultdict(int)
    for f in flows:
        for e in Evidence:
            if _evidence(f) & int(e):
                counts[str(e.name).lower().replace("_", " ")] += 1
    assert res.columns == ["evidence_kind", "voip_flows", "share"]
    assert {r[0]: r[1] for r in res.rows} == dict(counts)
    for _, n, share in res.rows:
        assert share == pytest.approx(n / len(flows))
    if flows:
        assert res.rows[0][0] == "udp" and res.rows[0][2] == pytest.approx(1.0)


def check_roles(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    flows = _flows(sc)
    want: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f in flows:
        want[f.app][_role(f) or "unknown"] += 1
    assert res.columns == ["app", *voipflows.ROLES, "unknown"]
    got = {r[0]: {k: v for k, v in zip(res.columns[1:], r[1:], strict=True) if v} for r in res.rows}
    assert got == {a: dict(c) for a, c in want.items()}
    totals = [sum(r[1:]) for r in res.rows]
    assert totals == sorted(totals, reverse=True)


def check_city_table(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    by_city = _group(_range_rows(sc), lambda r: r.city)
    got = {r[0]: dict(zip(res.columns, r, strict=True)) for r in res.rows}
    assert set(got) == set(by_city)
    for city, rs in by_city.items():
        g = got[city]
        per_app = {
            a: sum(r.call_seconds for r in x) for a, x in _group(rs, lambda r: r.app).items()
        }
        assert (g["region"], g["country"]) == CITY_INFO[city][:2]
        assert g["voip_minutes"] == pytest.approx(_minutes(rs), rel=1e-9)
        assert g["flows"] == sum(r.flows for r in rs)
        assert g["subscribers"] == _subs(rs)
        assert g["voip_bytes"] == sum(r.bytes for r in rs)
        assert g["top_app"] == max(per_app, key=lambda a: per_app[a])
    minutes = [r[res.columns.index("voip_minutes")] for r in res.rows]
    assert minutes == sorted(minutes, reverse=True)


def check_minutes_per_city(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    by_city = _group(_range_rows(sc), lambda r: r.city)
    want = sorted(((c, _minutes(rs)) for c, rs in by_city.items()), key=lambda x: -x[1])
    assert [r[0] for r in res.rows] == [w[0] for w in want]
    assert [r[1] for r in res.rows] == pytest.approx([w[1] for w in want], rel=1e-9)


def check_calls_per_city(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    want = {c: _calls(fs) for c, fs in _group(_flows(sc), lambda x: x.city).items()}  # type: ignore[arg-type, return-value]
    assert dict(res.rows) == want
    calls = [r[1] for r in res.rows]
    assert calls == sorted(calls, reverse=True)


def check_app_share(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert res.columns == ["city", "app", "voip_minutes", "share"]
    cells = {
        (c, a): _minutes(rs)
        for (c, a), rs in _group(_range_rows(sc), lambda r: (r.city, r.app)).items()
    }
    cells = {k: v for k, v in cells.items() if v > 0}
    totals: dict[str, float] = defaultdict(float)
    for (c, _), v in cells.items():
        totals[c] += v
    got = {(r[0], r[1]): (r[2], r[3]) for r in res.rows}
    assert set(got) == set(cells)
    for k, v in cells.items():
        assert got[k][0] == pytest.approx(v, rel=1e-9)
        assert got[k][1] == pytest.approx(v / totals[k[0]], rel=1e-9)
    for c in totals:
        assert sum(v[1] for k, v in got.items() if k[0] == c) == pytest.approx(1.0)


def _buckets(sc: Scenario, p: dict[str, Any]) -> tuple[int, dict[tuple[int, str], list[Roll]]]:
    iv = _interval(sc, p)
    return iv, _group(_interval_rows(sc, p), lambda r: (r.t // iv * iv, r.app))


def check_minutes_by_app(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    _, groups = _buckets(sc, p)
    _assert_series(_series(res), {k: _minutes(rs) for k, rs in groups.items()})


def check_bandwidth_by_app(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    iv, groups = _buckets(sc, p)
    want = {k: sum(r.bytes for r in rs) * 8 / max(iv, rs[0].g) for k, rs in groups.items()}
    _assert_series(_series(res), want)


def check_subscribers_by_app(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    _, groups = _buckets(sc, p)
    _assert_series(_series(res), {k: _subs(rs) for k, rs in groups.items()})


def check_share_by_city(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    iv = _interval(sc, p)
    acc: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0, 0])
    for (t, city), (voip, total) in _shares(sc, _by_interval(iv, sc.from_s)).items():
        a = acc[(t // iv * iv, city)]
        a[0] += voip
        a[1] += total
    got = _series(res)
    if not acc:
        assert got == {}
        return
    assert set(got) == set(acc)
    for k, (voip, total) in acc.items():
        assert got[k] == pytest.approx(voip / total, rel=1e-5)


CHECKS: dict[str, Callable[[Any, Scenario, dict[str, Any]], None]] = {
    "VoIP minutes": check_minutes,
    "Calls": check_calls,
    "Distinct subscribers": check_subscribers,
    "VoIP traffic": check_bytes,
    "VoIP share of traffic": check_share,
    "Active cities": check_active_cities,
    "VoIP minutes by city": check_map,
    "Cities": check_city_table,
    "Top cities, week over week": check_week_over_week,
    "VoIP minutes per city": check_minutes_per_city,
    "Calls per city": check_calls_per_city,
    "App share per city": check_app_share,
    "VoIP minutes by app": check_minutes_by_app,
    "VoIP bandwidth by app": check_bandwidth_by_app,
    "Distinct subscribers by app": check_subscribers_by_app,
    "VoIP share of traffic by city": check_share_by_city,
    "Classifier confidence": check_confidence,
    "Evidence mix": check_evidence,
    "Flows by role": check_roles,
}


def test_every_panel_has_a_check() -> None:
    assert set(CHECKS) == set(PANELS)


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
@pytest.mark.parametrize("title", list(CHECKS))
def test_panel(ch: Any, title: str, sc: Scenario) -> None:
    panel = PANELS[title]
    CHECKS[title](run(ch, panel, sc.request(panel)), sc, panel)


def test_scenarios_cover_every_table() -> None:
    """The ranges above make totals and time series read each usage table."""
    p = PANELS["VoIP minutes by app"]
    assert {_by_range(s.from_s, s.to_s) for s in SCENARIOS} == {"1m", "1h", "1d"}
    assert {_by_interval(_interval(s, p), s.from_s) for s in SCENARIOS} == {"1m", "1h", "1d"}


def _whole_days(sc: Scenario) -> bool:
    """The range holds a day whose 24 hours all start in it."""
    day = (sc.from_s + DAY - 1) // DAY * DAY
    return day + 23 * 3600 <= sc.to_s


def test_only_the_chosen_table_is_read(ch: Any) -> None:
    """The branches of the other tables fold to WHERE 0 and read no part; a range of
    hours reads its whole days from the daily table."""
    from tests.dashboards.panels import expand

    sql = PANELS["VoIP minutes"]["targets"][0]["rawSql"]
    days = next(s for s in SCENARIOS if s.name == "days-and-hours")
    for sc in [*SCENARIOS[:4], days]:
        kind = _by_range(sc.from_s, sc.to_s)
        want = {f"voip_usage_{kind}"}
        if kind == "1h" and _whole_days(sc):
            want.add("voip_usage_1d")
        read = _parts_read(ch, expand(sql, sc.request(PANELS["VoIP minutes"])))
        assert {r.split(".")[-1].rstrip(")") for r in read} == want, (sc.name, read)
    assert not _whole_days(SCENARIOS[4]) and _whole_days(days)


def _parts_read(ch: Any, sql: str) -> list[str]:
    """The tables of the query plan's reads that touch any part."""
    plan = "\n".join(r[0] for r in ch.query("EXPLAIN indexes = 1 " + sql).rows)
    return [r.split("\n")[0] for r in plan.split("ReadFromMergeTree")[1:] if "Parts:" in r]


def test_subscribers_of_all_cities_read_one_state_per_app(ch: Any) -> None:
    """Hours and days of every city come from app_subscribers_*, a city selection from
    the per-city rollups; the other branches read no part."""
    from tests.dashboards.panels import expand

    panel = PANELS["Distinct subscribers"]
    sql = panel["targets"][0]["rawSql"]
    days = next(s for s in SCENARIOS if s.name == "days-and-hours")
    cases = [
        (SCENARIOS[3], {"app_subscribers_1d"}),  # a year, every city
        (days, {"app_subscribers_1h", "app_subscribers_1d"}),  # a whole day and edge hours
        (
            Scenario("days-paris", days.from_s, days.to_s, ("Paris",)),
            {"voip_usage_1h", "voip_usage_1d"},
        ),
        (SCENARIOS[0], {"voip_usage_1m"}),  # hours: per-minute rows whatever the selection
    ]
    for sc, tables in cases:
        read = _parts_read(ch, expand(sql, sc.request(panel)))
        assert {r.split(".")[-1].rstrip(")") for r in read} == tables, (sc.name, read)
        check_subscribers(run(ch, panel, sc.request(panel)), sc, panel)


def test_days_older_than_the_daily_retention_are_read_as_hours(ch: Any) -> None:
    """With daily tables kept 30 days, a range of 40 days ago reads its whole day hourly."""
    from tests.dashboards.panels import expand
    from voipflow.dashboards.rollups import Retention

    panel = panels(usage.build(Retention(usage_1d_days=30)))["VoIP minutes"]
    days = next(s for s in SCENARIOS if s.name == "days-and-hours")
    read = _parts_read(ch, expand(panel["targets"][0]["rawSql"], days.request(panel)))
    assert {r.split(".")[-1].rstrip(")") for r in read} == {"voip_usage_1h"}
    check_minutes(run(ch, panel, days.request(panel)), days, panel)


def test_variables_list_cities_and_apps(ch: Any) -> None:
    sc = SCENARIOS[0]
    req = sc.request(PANELS["VoIP minutes"])
    assert variable_values(ch, DASH, "city", req) == sorted(CITY_INFO)
    assert variable_values(ch, DASH, "app", req) == list(APPS)
    req.variables["city"].current = ["Nowhere"]
    want = sorted({w.app for w in WINDOWS if w.city == "Nowhere"})
    assert variable_values(ch, DASH, "app", req) == want
