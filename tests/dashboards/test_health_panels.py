"""Every panel of "Pipeline health" on chdb, against answers computed here.

Exporter health reports go in as exporter-health.v1 messages through the
sink's parser (two collector processes, a NetFlow v9 exporter, an IPFIX
exporter with two observation domains and an IPv6 exporter); usage windows
with known publish and insert times, VoIP flows and the sink's rows in
pipeline_stats (totals since start, one restart, lag per partition) are
inserted directly. Each panel's SQL is expanded by the Grafana stand-in
(:mod:`tests.dashboards.grafana_sim`; Grafana cannot run here), run, and
compared with the model below.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
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
from voipflow.dashboards import health
from voipflow.storage.sink.tables import combine, parse_health

NOW = int(time.time())
T0 = NOW // 3600 * 3600 - 3 * 3600
DASH = health.build()
PANELS = panels(DASH)
#: (exporter text, domain, NetFlow version) by collector process.
EXPORTERS = {
    "host-a:101": [("192.0.2.1", 0, 9), ("192.0.2.2", 1, 10)],
    "host-a:102": [("192.0.2.2", 2, 10), ("2001:db8::9", 7, 10)],
}
HEALTH_FIELDS = (
    "packets", "records", "bytes", "decode_errors", "templates", "records_held",
    "sequence_lost", "exporter_restarts", "sampling_rate",
)  # fmt: skip


def _make_reports() -> list[dict[str, Any]]:
    rng = random.Random(9)
    out = []
    for k in range(360):  # one hour, every 10 s
        for collector, exps in EXPORTERS.items():
            ts_ms = (T0 + 10 * k) * 1000 + rng.randrange(50)
            drops = rng.choice((0, 0, 0, rng.randrange(1, 40)))
            for exporter, domain, version in exps:
                pk = rng.randrange(0, 900)
                out.append(
                    {
                        "schema": "exporter-health.v1",
                        "ts_ms": ts_ms,
                        "collector": collector,
                        "exporter": exporter,
                        "observation_domain_id": domain,
                        "netflow_version": version,
                        "packets": pk,
                        "records": pk * rng.randrange(1, 30),
                        "bytes": pk * 1400,
                        "decode_errors": rng.choice((0, 0, 0, 1, 2)),
                        "templates": 2 + (k // 120),
                        "records_held": rng.choice((0, 0, 3)),
                        "sequence_lost": rng.choice((0, 0, 0, rng.randrange(1, 20))),
                        "exporter_restarts": 1 if rng.random() < 0.01 else 0,
                        "sampling_rate": 1 if version == 9 else (10 if k < 180 else 100),
                        "kernel_drops": drops,
                    }
                )
    return out


REPORTS = _make_reports()


@dataclass(frozen=True)
class Window:
    ws: int
    city: str  # one row per (city, app, window): voip_usage_1m keeps one per key
    produced_ms: int
    inserted: int


def _make_windows() -> list[Window]:
    rng = random.Random(4)
    out = []
    for m in range(60):
        ws = T0 + 60 * m
        for city in ("Berlin", "Paris", "Rome"):
            produced = (ws + 60 + rng.randrange(5, 40)) * 1000 + rng.randrange(1000)
            out.append(Window(ws, city, produced, produced // 1000 + rng.randrange(0, 4)))
    return out


WINDOWS = _make_windows()
FLOW_TIMES = [(T0 + random.Random(i).randrange(3600)) * 1000 + i for i in range(300)]
FLOW_APPS = [("teams", "sip", "zoom")[i % 3] for i in range(300)]


def _make_stats() -> list[tuple[int, str, str, str, float]]:
    """The sink's rows as it writes them: (ts, instance, metric, labels JSON, value)."""
    rng = random.Random(8)
    out = []
    totals: dict[tuple[str, str, str], float] = defaultdict(float)
    for i in range(60):
        for n, instance in enumerate(("sink-1", "sink-2")):
            ts = T0 + 60 * i + 7 * n
            if instance == "sink-2" and i == 30:  # restarted: its totals start again
                totals = defaultdict(float, {k: v for k, v in totals.items() if k[0] != instance})
            counters: list[tuple[str, dict[str, Any], int]] = [
                ("rows_inserted", {"table": t}, rng.randrange(0, 5000))
                for t in ("flows_voip", "voip_usage_in")
            ]
            counters += [
                ("bad_messages", {"topic": "voip-usage.v1", "reason": r}, rng.choice((0, 0, 1, 3)))
                for r in ("bad_json", "wrong_schema")
            ]
            counters.append(("transient_errors", {}, rng.choice((0, 0, 0, 1))))
            for metric, labels, inc in counters:
                key = (instance, metric, json.dumps(labels, sort_keys=True))
                totals[key] += inc
                out.append((ts, instance, metric, key[2], totals[key]))
            for topic in ("voip-flows.v1", "exporter-health.v1"):
                for part in (0, 1):
                    labels = json.dumps({"topic": topic, "partition": part}, sort_keys=True)
                    out.append((ts, instance, "lag", labels, float(rng.randrange(0, 500))))
    return out


STATS = _make_stats()


@dataclass(frozen=True)
class Traffic:
    """One traffic.v1 window of an exporter and observation domain."""

    ws: int
    exporter: str
    domain: int
    flows: int
    placed: int
    unlocated: int
    unhomed: int


def _make_traffic() -> list[Traffic]:
    rng = random.Random(6)
    out = []
    for exps in EXPORTERS.values():
        for exporter, domain, _ in exps:
            for m in range(60):
                if exporter == "2001:db8::9" and 20 <= m < 35:  # a gap of 15 minutes
                    continue
                placed, unloc, unhomed = rng.randrange(900), rng.randrange(90), rng.randrange(50)
                out.append(
                    Traffic(T0 + 60 * m, exporter, domain, placed + unloc + unhomed, placed,
                            unloc, unhomed)
                )  # fmt: skip
    return out


TRAFFIC = _make_traffic()


@pytest.fixture(scope="module")
def ch(chdb_dir: Path) -> Iterator[Any]:
    with migrated_database(chdb_dir) as ch:
        cols, _ = combine([parse_health(json.dumps(r).encode()) for r in REPORTS])
        ch.insert("exporter_health", cols)
        values = ", ".join(
            f"({w.ws}, 60, '{w.city}', 'teams', fromUnixTimestamp64Milli({w.produced_ms}), "
            f"toDateTime({w.inserted}), arrayReduce('uniqState', [toUInt64({i})]))"
            for i, w in enumerate(WINDOWS)
        )
        ch.execute(
            "INSERT INTO voip_usage_1m (window_start, window_s, city, app, produced, "
            f"inserted_at, subscribers_state) VALUES {values}"
        )
        n = len(FLOW_TIMES)
        ch.insert(
            "flows_voip",
            {
                "time_received": np.array(FLOW_TIMES, dtype="datetime64[ms]"),
                "flow_start": np.array(FLOW_TIMES, dtype="datetime64[ms]"),
                "flow_end": np.array(FLOW_TIMES, dtype="datetime64[ms]"),
                "app": pa.array(FLOW_APPS),
                "city": pa.array(["Berlin"] * n),
                "is_voip": np.ones(n, dtype=np.uint8),
            },
        )
        values = ", ".join(
            f"(toDateTime({t.ws}), 60, toIPv6('{t.exporter}'), {t.domain}, {t.flows}, "
            f"{t.placed}, {t.unlocated}, {t.unhomed}, now64(3))"
            for t in TRAFFIC
        )
        ch.execute(
            "INSERT INTO exporter_traffic_1m (window_start, window_s, exporter, "
            "observation_domain_id, flows, placed_flows, unlocated_flows, unhomed_flows, "
            f"produced) VALUES {values}"
        )
        ch.insert(
            "pipeline_stats",
            {
                "ts": np.array([x[0] for x in STATS], dtype="datetime64[s]"),
                "component": pa.array(["sink"] * len(STATS)),
                "instance": pa.array([x[1] for x in STATS]),
                "metric": pa.array([x[2] for x in STATS]),
                "labels": pa.array([x[3] for x in STATS]),
                "value": np.array([x[4] for x in STATS]),
            },
        )
        yield ch


@dataclass(frozen=True)
class Scenario:
    name: str
    from_s: int
    to_s: int
    exporters: tuple[str, ...] | None = None

    def request(self, panel: dict[str, Any]) -> Request:
        f_ms, t_ms = self.from_s * 1000, self.to_s * 1000
        names = sorted({e for exps in EXPORTERS.values() for e, _, _ in exps})
        return Request(
            f_ms,
            t_ms,
            panel_interval_ms(panel, f_ms, t_ms),
            {"exporter": selection("exporter", names, list(self.exporters or []))},
        )

    def reports(self, filtered: bool = True) -> list[dict[str, Any]]:
        lo, hi = self.from_s * 1000, self.to_s * 1000
        return [
            r
            for r in REPORTS
            if lo <= r["ts_ms"] <= hi
            and (not filtered or self.exporters is None or r["exporter"] in self.exporters)
        ]


SCENARIOS = [
    Scenario("hour", T0 - 600, T0 + 3600 + 600),
    Scenario("half-hour", T0 + 900, T0 + 2700),
    Scenario("two-exporters", T0 - 600, T0 + 3600 + 600, ("192.0.2.2", "2001:db8::9")),
]


def _interval(sc: Scenario, p: dict[str, Any]) -> int:
    return max(sc.request(p).interval_ms // 1000, 1)


def _expected(r: dict[str, Any]) -> int:
    return int(r["packets"] if r["netflow_version"] == 9 else r["records"])


def _loss(rs: list[dict[str, Any]]) -> float:
    lost = sum(r["sequence_lost"] for r in rs)
    return lost / (lost + sum(_expected(r) for r in rs))


def _kernel(sc: Scenario) -> dict[tuple[int, str], int]:
    per: dict[tuple[int, str], int] = {}
    for r in sc.reports(filtered=False):
        per[(r["ts_ms"], r["collector"])] = r["kernel_drops"]
    return per


def _buckets(
    sc: Scenario, p: dict[str, Any], rows: list[Any], key: Callable[[Any], Any]
) -> dict[Any, list[Any]]:
    iv = _interval(sc, p)
    out: dict[Any, list[Any]] = defaultdict(list)
    for r in rows:
        t, label = key(r)
        out[(t // iv * iv, label)].append(r)
    return out


def _series(res: Any) -> dict[tuple[int, str], float]:
    return {(epoch(r[0]), r[1]): r[2] for r in res.rows}


def _assert_series(res: Any, want: dict[Any, float]) -> None:
    assert want
    got = _series(res)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9), k


def _by_exporter(sc: Scenario, p: dict[str, Any]) -> dict[Any, list[Any]]:
    return _buckets(sc, p, sc.reports(), lambda r: (r["ts_ms"] // 1000, r["exporter"]))


def _range_s(sc: Scenario) -> int:
    return sc.to_s - sc.from_s


def _rate(field: str) -> Callable[[Any, Scenario, dict[str, Any]], None]:
    def check(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
        iv = _interval(sc, p)
        _assert_series(
            res, {k: sum(r[field] for r in rs) / iv for k, rs in _by_exporter(sc, p).items()}
        )

    return check


def _gauge(field: str) -> Callable[[Any, Scenario, dict[str, Any]], None]:
    def check(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
        _assert_series(res, {k: max(r[field] for r in rs) for k, rs in _by_exporter(sc, p).items()})

    return check


def check_exporters(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert res.rows == [(len({r["exporter"] for r in sc.reports()}),)]


def check_packets(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert res.rows[0][0] == pytest.approx(sum(r["packets"] for r in sc.reports()) / _range_s(sc))


def check_records(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert res.rows[0][0] == pytest.approx(sum(r["records"] for r in sc.reports()) / _range_s(sc))


def check_loss(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert res.rows[0][0] == pytest.approx(_loss(sc.reports()), rel=1e-12)


def check_decode_errors(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert res.rows == [(sum(r["decode_errors"] for r in sc.reports()),)]


def check_kernel_drops(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert res.rows == [(sum(_kernel(sc).values()),)]


def check_exporter_table(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in sc.reports():
        groups[(r["exporter"], r["observation_domain_id"])].append(r)
    assert [(r[0], r[1]) for r in res.rows] == sorted(groups)
    for row in res.rows:
        g = dict(zip(res.columns, row, strict=True))
        rs = groups[(g["exporter_ip"], g["domain"])]
        last = max(rs, key=lambda r: r["ts_ms"])
        assert g["version"] == last["netflow_version"]
        assert g["collectors"] == ", ".join(sorted({r["collector"] for r in rs}))
        assert epoch(g["last_report"]) == last["ts_ms"] // 1000
        for col, f in (("export_packets", "packets"), ("flow_records", "records")):
            assert g[col] == sum(r[f] for r in rs), f
        assert g["decode_errors"] == sum(r["decode_errors"] for r in rs)
        assert g["lost"] == sum(r["sequence_lost"] for r in rs)
        assert g["loss"] == pytest.approx(_loss(rs), rel=1e-12)
        assert g["restarts"] == sum(r["exporter_restarts"] for r in rs)
        for f in ("templates", "sampling_rate", "records_held"):
            assert g[f] == last[f], f


def check_loss_by_exporter(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    want = {}
    for k, rs in _by_exporter(sc, p).items():
        den = sum(r["sequence_lost"] + _expected(r) for r in rs)
        want[k] = sum(r["sequence_lost"] for r in rs) / den if den else None
    got = _series(res)
    assert set(got) == set(want)
    for k, v in want.items():
        assert (got[k] is None) if v is None else got[k] == pytest.approx(v, rel=1e-12)


def check_kernel_by_collector(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    iv = _interval(sc, p)
    acc: dict[tuple[int, str], int] = defaultdict(int)
    for (ts_ms, collector), drops in _kernel(sc).items():
        acc[(ts_ms // 1000 // iv * iv, collector)] += drops
    _assert_series(res, {k: v / iv for k, v in acc.items()})


def _in_range(sc: Scenario, t_s: int) -> bool:
    return sc.from_s <= t_s <= sc.to_s


def check_window_delay(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    iv = _interval(sc, p)
    acc: dict[int, list[Window]] = defaultdict(list)
    for w in WINDOWS:
        if _in_range(sc, w.ws):
            acc[w.ws // iv * iv].append(w)
    assert res.columns == [
        "time", "close_delay_avg", "close_delay_max", "sink_delay_avg", "sink_delay_max",
    ]  # fmt: skip
    got = {epoch(r[0]): r[1:] for r in res.rows}
    assert set(got) == set(acc)
    for t, ws in acc.items():
        close = [(w.produced_ms - (w.ws + 60) * 1000) / 1000 for w in ws]
        sink = [(w.inserted * 1000 - w.produced_ms) / 1000 for w in ws]
        want = (sum(close) / len(close), max(close), sum(sink) / len(sink), max(sink))
        assert got[t] == pytest.approx(want, rel=1e-9)


def check_flows_stored(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    iv = _interval(sc, p)
    acc: dict[tuple[int, str], int] = defaultdict(int)
    for t_ms, app in zip(FLOW_TIMES, FLOW_APPS, strict=True):
        if sc.from_s * 1000 <= t_ms <= sc.to_s * 1000:
            acc[(t_ms // 1000 // iv * iv, app)] += 1
    _assert_series(res, {k: v / iv for k, v in acc.items()})


def _sink_rate(metric: str, series: Callable[[str, dict[str, Any]], str]):  # type: ignore[no-untyped-def]
    def check(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
        iv = _interval(sc, p)
        acc: dict[tuple[int, str], float] = defaultdict(float)
        last: dict[tuple[str, str], float] = {}
        for ts, instance, m, labels, value in sorted(STATS, key=lambda x: x[0]):
            if m != metric or not _in_range(sc, ts):
                continue
            prev = last.get((instance, labels))
            step = 0.0 if prev is None else value - prev
            last[(instance, labels)] = value
            acc[(ts // iv * iv, series(instance, json.loads(labels)))] += (
                value if step < 0 else step
            )
        _assert_series(res, {k: v / iv for k, v in acc.items()})

    return check


def check_sink_lag(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    iv = _interval(sc, p)
    per_report: dict[tuple[int, str, str], float] = defaultdict(float)
    for ts, instance, m, labels, value in STATS:
        if m == "lag" and _in_range(sc, ts):
            per_report[(ts, instance, json.loads(labels)["topic"])] += value
    per_instance: dict[tuple[int, str, str], float] = {}
    for (ts, instance, topic), v in per_report.items():
        k = (ts // iv * iv, instance, topic)
        per_instance[k] = max(per_instance.get(k, v), v)
    want: dict[tuple[int, str], float] = defaultdict(float)
    for (t, _, topic), v in per_instance.items():
        want[(t, topic)] += v
    _assert_series(res, want)


def _traffic(sc: Scenario) -> list[Traffic]:
    return [
        t
        for t in TRAFFIC
        if sc.from_s <= t.ws <= sc.to_s and (sc.exporters is None or t.exporter in sc.exporters)
    ]


def check_coverage(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    per: dict[str, list[Traffic]] = defaultdict(list)
    for t in _traffic(sc):
        per[t.exporter].append(t)
    got = {r["exporter_ip"]: r for r in res.dicts()}
    assert set(got) == set(per)
    for e, ts in per.items():
        g = got[e]
        flows = sum(t.flows for t in ts)
        assert g["flow_records"] == flows
        assert (g["placed"], g["unlocated"], g["unhomed"]) == (
            sum(t.placed for t in ts),
            sum(t.unlocated for t in ts),
            sum(t.unhomed for t in ts),
        )
        assert g["placed_share"] == pytest.approx(sum(t.placed for t in ts) / flows)
        domains = len({t.domain for t in ts})
        covered = min(1.0, 60 * len(ts) / (domains * (sc.to_s - sc.from_s)))
        assert g["time_covered"] == pytest.approx(covered)
        assert epoch(g["last_window"]) == max(t.ws for t in ts)
    assert [r["flow_records"] for r in res.dicts()] == sorted(
        (r["flow_records"] for r in res.dicts()), reverse=True
    )
    if "2001:db8::9" in per:  # the exporter with a gap covers less of the range
        assert got["2001:db8::9"]["time_covered"] < got["192.0.2.2"]["time_covered"]


def check_coverage_by_exporter(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    groups = _buckets(sc, p, _traffic(sc), lambda t: (t.ws, t.exporter))
    iv = _interval(sc, p)
    want = {
        k: min(1.0, 60 * len(ts) / (len({t.domain for t in ts}) * iv)) for k, ts in groups.items()
    }
    _assert_series(res, want)


CHECKS: dict[str, Callable[[Any, Scenario, dict[str, Any]], None]] = {
    "Exporters reporting": check_exporters,
    "Export packets/s": check_packets,
    "Flow records/s": check_records,
    "Sequence loss": check_loss,
    "Decode errors": check_decode_errors,
    "Kernel drops": check_kernel_drops,
    "Exporters": check_exporter_table,
    "Export packets/s by exporter": _rate("packets"),
    "Flow records/s by exporter": _rate("records"),
    "Sequence loss by exporter": check_loss_by_exporter,
    "Decode errors/s by exporter": _rate("decode_errors"),
    "Templates by exporter": _gauge("templates"),
    "Sampling rate by exporter": _gauge("sampling_rate"),
    "Records held for templates": _gauge("records_held"),
    "Kernel drops by collector": check_kernel_by_collector,
    "Exporter coverage": check_coverage,
    "Exporter coverage by exporter": check_coverage_by_exporter,
    "Usage window delay": check_window_delay,
    "VoIP flows stored/s": check_flows_stored,
    "Sink lag by topic": check_sink_lag,
    "Sink rows inserted/s by table": _sink_rate("rows_inserted", lambda i, lab: lab["table"]),
    "Sink bad messages/s": _sink_rate(
        "bad_messages", lambda i, lab: f"{lab['topic']} {lab['reason']}"
    ),
    "Sink retries/s": _sink_rate("transient_errors", lambda i, lab: i),
}


def test_every_panel_has_a_check() -> None:
    assert set(CHECKS) == set(PANELS)


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
@pytest.mark.parametrize("title", list(CHECKS))
def test_panel(ch: Any, title: str, sc: Scenario) -> None:
    panel = PANELS[title]
    CHECKS[title](run(ch, panel, sc.request(panel)), sc, panel)


def test_exporter_variable_shows_addresses_as_written(ch: Any) -> None:
    req = SCENARIOS[0].request(PANELS["Exporters"])
    assert variable_values(ch, DASH, "exporter", req) == ["192.0.2.1", "192.0.2.2", "2001:db8::9"]
