"""Every panel of "Rules" on chdb, against answers computed here.

Rules (several versions of one, rules for all cities or all apps, one
without events) and their state-machine events with hit counters are
inserted into ``rules`` and ``rule_events``; each panel's SQL is expanded by
the Grafana stand-in (:mod:`tests.dashboards.grafana_sim`; Grafana cannot
run here), run for a few ranges and selections, and compared with the model
below.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
from voipflow.dashboards import rules

NOW = int(time.time())
T0 = NOW // 3600 * 3600 - 5 * 3600
DASH = rules.build()
PANELS = panels(DASH)


@dataclass(frozen=True)
class Rule:
    rule_id: str
    version: int
    action: str
    city: str
    app: str


RULES = [
    Rule("r-berlin-teams", 1, "block", "Berlin", "teams"),
    Rule("r-berlin-teams", 2, "throttle", "Berlin", "teams"),
    Rule("r-paris-all-apps", 1, "monitor", "Paris", ""),
    Rule("r-all-cities-whatsapp", 1, "alert", "", "whatsapp"),
    Rule("r-aquila-sip", 1, "block", "L'Aquila", "sip"),
    Rule("r-paris-sip-quiet", 1, "monitor", "Paris", "sip"),  # never gets an event
]
LATEST = {r.rule_id: r for r in sorted(RULES, key=lambda r: r.version)}


@dataclass(frozen=True)
class Event:
    ts_ms: int
    rule_id: str
    version: int
    event: str
    state: str
    action: str
    feedback: str
    ep: str
    hits: int
    hit_packets: int
    hit_bytes: int
    detail: str

    @property
    def kind(self) -> str:
        return self.feedback or self.event


def _make_events() -> list[Event]:
    """State-machine events and the enforcement points' feedback (docs/sql.md)."""
    rng = random.Random(5)
    out: list[Event] = []
    used: set[int] = set()

    def add(t_s: int, rule: Rule, event: str, state: str, feedback: str = "", ep: str = "",
            hits: int = 0, detail: str = "") -> None:  # fmt: skip
        ms = t_s * 1000 + rng.randrange(1000)
        while ms in used:  # distinct times: a rule's latest state is well defined
            ms += 1
        used.add(ms)
        out.append(Event(ms, rule.rule_id, rule.version, event, state, rule.action, feedback, ep,
                         hits, hits * 3, hits * 600, detail))  # fmt: skip

    for rid in ("r-berlin-teams", "r-paris-all-apps", "r-all-cities-whatsapp", "r-aquila-sip"):
        rule = LATEST[rid]
        t = T0 + rng.randrange(600)
        add(t, rule, "created", "created")
        add(t + 5, rule, "published", "published")
        for k in range(40):
            t += rng.randrange(60, 360)
            ep = rng.choice(("ep-1", "ep-2"))
            if rng.random() < 0.15:
                add(t, rule, "feedback", "failed", "failed", ep, detail=f"nft: error {k}")
            else:
                add(t, rule, "feedback", "active", "applied", ep, hits=rng.randrange(0, 500))
        if rid == "r-aquila-sip":
            add(t + 30, rule, "feedback", "removed", "removed", "ep-1")
        if rid == "r-all-cities-whatsapp":
            add(t + 40, rule, "expired", "expired")
        if rid == "r-paris-all-apps":
            add(t + 50, rule, "feedback", "failed", "failed", "ep-2", detail="nft: table full")
    return out


EVENTS = _make_events()

#: Expiry of each rule version (the latest version's counts).
EXPIRES = {
    ("r-berlin-teams", 1): T0 + 3600,
    ("r-berlin-teams", 2): T0 + 3 * 3600,
    ("r-aquila-sip", 1): T0 + 10 * 3600,  # past every range: spans end with the range
}


def _expires(rule: Rule) -> int:
    return EXPIRES.get((rule.rule_id, rule.version), T0 + 4 * 3600)


@dataclass(frozen=True)
class Usage:
    ws: int
    city: str
    app: str
    call_seconds: float
    bytes: int
    subs: frozenset[int]


def _make_usage() -> list[Usage]:
    """Per-minute VoIP of the rules' cities and apps (and one no rule matches)."""
    rng = random.Random(9)
    out = []
    pairs = [("Berlin", "teams"), ("L'Aquila", "sip"), ("Paris", "sip"), ("Paris", "zoom")]
    for m in range(13 * 60):
        ws = T0 - 6 * 3600 + 60 * m
        for city, app in pairs:
            if rng.random() < 0.8:
                subs = frozenset(rng.sample(range(1, 40), rng.randint(1, 4)))
                out.append(
                    Usage(ws, city, app, rng.randint(0, 900) / 4, rng.randint(1, 10**6), subs)
                )
    return out


USAGE = _make_usage()


@pytest.fixture(scope="module")
def ch(chdb_dir: Path) -> Iterator[Any]:
    with migrated_database(chdb_dir) as ch:
        ch.insert(
            "rules",
            {
                "rule_id": np.array([r.rule_id for r in RULES], dtype=object),
                "version": np.array([r.version for r in RULES], dtype=np.uint32),
                "created": np.full(len(RULES), T0 * 1000, dtype="datetime64[ms]"),
                "action": np.array([r.action for r in RULES], dtype=object),
                "city": np.array([r.city for r in RULES], dtype=object),
                "app": np.array([r.app for r in RULES], dtype=object),
                "reason": np.array([f"because {r.rule_id}" for r in RULES], dtype=object),
                "expires": np.array([_expires(r) * 1000 for r in RULES], dtype="datetime64[ms]"),
            },
        )
        n = len(USAGE)
        starts = np.array([u.ws for u in USAGE], dtype="datetime64[s]")
        ch.insert(
            "voip_usage_in",
            {
                "window_start": starts,
                "window_s": np.full(n, 60, dtype=np.uint32),
                "city": np.array([u.city for u in USAGE], dtype=object),
                "region": np.array(["R"] * n, dtype=object),
                "country": np.array(["ZZ"] * n, dtype=object),
                "app": np.array([u.app for u in USAGE], dtype=object),
                "flows": np.ones(n, dtype=np.uint64),
                "packets": np.ones(n, dtype=np.uint64),
                "bytes": np.array([u.bytes for u in USAGE], dtype=np.uint64),
                "subscribers": np.array([len(u.subs) for u in USAGE], dtype=np.uint64),
                "subscriber_hashes": [sorted(u.subs) for u in USAGE],
                "call_seconds": np.array([u.call_seconds for u in USAGE]),
                "voip_share": np.full(n, 0.5),
                "produced": (starts + np.timedelta64(90, "s")).astype("datetime64[ms]"),
            },
        )
        ev = EVENTS
        ch.insert(
            "rule_events",
            {
                "ts": np.array([e.ts_ms for e in ev], dtype="datetime64[ms]"),
                "rule_id": np.array([e.rule_id for e in ev], dtype=object),
                "rule_version": np.array([e.version for e in ev], dtype=np.uint32),
                "event": np.array([e.event for e in ev], dtype=object),
                "state": np.array([e.state for e in ev], dtype=object),
                "action": np.array([e.action for e in ev], dtype=object),
                "feedback": np.array([e.feedback for e in ev], dtype=object),
                "enforcement_point": np.array([e.ep for e in ev], dtype=object),
                "hits": np.array([e.hits for e in ev], dtype=np.uint64),
                "hit_packets": np.array([e.hit_packets for e in ev], dtype=np.uint64),
                "hit_bytes": np.array([e.hit_bytes for e in ev], dtype=np.uint64),
                "detail": np.array([e.detail for e in ev], dtype=object),
            },
        )
        yield ch


@dataclass(frozen=True)
class Scenario:
    name: str
    from_s: int
    to_s: int
    cities: tuple[str, ...] | None = None
    apps: tuple[str, ...] | None = None

    def request(self, panel: dict[str, Any]) -> Request:
        f_ms, t_ms = self.from_s * 1000, self.to_s * 1000 + 999
        cities = sorted({r.city for r in RULES if r.city})
        apps = sorted({r.app for r in RULES if r.app})
        return Request(
            f_ms,
            t_ms,
            panel_interval_ms(panel, f_ms, t_ms),
            {
                "city": selection("city", cities, list(self.cities or [])),
                "app": selection("app", apps, list(self.apps or [])),
            },
        )

    def selected(self) -> set[str]:
        return {
            r.rule_id
            for r in LATEST.values()
            if (self.cities is None or r.city in self.cities or r.city == "")
            and (self.apps is None or r.app in self.apps or r.app == "")
        }

    def events(self) -> list[Event]:
        lo, hi = self.from_s * 1000, self.to_s * 1000 + 999
        sel = self.selected()
        return [e for e in EVENTS if lo <= e.ts_ms <= hi and e.rule_id in sel]

    def states(self) -> dict[str, str]:
        hi = self.to_s * 1000 + 999
        latest: dict[str, Event] = {}
        for e in sorted(EVENTS, key=lambda e: e.ts_ms):
            if e.ts_ms <= hi:
                latest[e.rule_id] = e
        return {rid: e.state for rid, e in latest.items()}


SCENARIOS = [
    Scenario("all", T0 - 3600, T0 + 6 * 3600),
    Scenario("middle", T0 + 3600, T0 + 2 * 3600),
    Scenario("berlin", T0 - 3600, T0 + 6 * 3600, cities=("Berlin",)),
    Scenario("aquila-sip", T0 + 1800, T0 + 5 * 3600, cities=("L'Aquila",), apps=("sip",)),
]


def _interval(sc: Scenario, p: dict[str, Any]) -> int:
    return max(sc.request(p).interval_ms // 1000, 1)


def _series(res: Any) -> dict[tuple[int, str], float]:
    return {(epoch(r[0]), r[1]): r[2] for r in res.rows}


def check_by_state(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    counts: dict[str, int] = defaultdict(int)
    for rid, state in sc.states().items():
        if rid in sc.selected():
            counts[state] += 1
    assert res.rows == sorted(counts.items())


def check_hits(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert res.rows == [(sum(e.hits for e in sc.events()),)]


def check_failed(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    assert res.rows == [(sum(e.feedback == "failed" for e in sc.events()),)]


def check_top(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    per: dict[str, list[Event]] = defaultdict(list)
    for e in sc.events():
        per[e.rule_id].append(e)
    want = []
    for rid, es in per.items():
        hits = sum(e.hits for e in es)
        if hits > 0:
            last = max(es, key=lambda e: e.ts_ms)
            want.append(
                (
                    rid,
                    last.action,
                    hits,
                    sum(e.hit_packets for e in es),
                    sum(e.hit_bytes for e in es),
                    len({e.ep for e in es if e.ep}),
                )
            )
    want.sort(key=lambda w: (-w[2], w[0]))
    assert res.rows == want[:20]


def check_rules(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    states = sc.states()
    ev = sc.events()
    got = {r[0]: dict(zip(res.columns, r, strict=True)) for r in res.rows}
    assert set(got) == sc.selected()
    for rid, g in got.items():
        rule = LATEST[rid]
        assert (g["version"], g["action"], g["city"], g["app"]) == (
            rule.version,
            rule.action,
            rule.city,
            rule.app,
        )
        assert g["state"] == states.get(rid, "")
        assert g["hits"] == sum(e.hits for e in ev if e.rule_id == rid)
        assert g["failures"] == sum(e.feedback == "failed" for e in ev if e.rule_id == rid)
        assert g["reason"] == f"because {rid}"
    order = [(-r[res.columns.index("hits")], r[0]) for r in res.rows]
    assert order == sorted(order)


def _bucketed(
    sc: Scenario,
    p: dict[str, Any],
    key: Callable[[Event], str | None],
    value: Callable[[list[Event]], float],
) -> dict[tuple[int, str], float]:
    iv = _interval(sc, p)
    acc: dict[tuple[int, str], list[Event]] = defaultdict(list)
    for e in sc.events():
        k = key(e)
        if k is not None:
            acc[(e.ts_ms // 1000 // iv * iv, k)].append(e)
    return {k: value(es) for k, es in acc.items()}


def _assert_series(res: Any, want: dict[tuple[int, str], float]) -> None:
    assert want, "the scenario must select data"
    got = _series(res)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k


def check_hits_by_rule(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    iv = _interval(sc, p)
    _assert_series(
        res, _bucketed(sc, p, lambda e: e.rule_id, lambda es: sum(e.hits for e in es) / iv)
    )


def check_failed_by_ep(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    want = _bucketed(sc, p, lambda e: e.ep if e.feedback == "failed" else None, len)
    if not want:
        assert res.rows == []
        return
    _assert_series(res, want)


def check_events_by_type(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    _assert_series(res, _bucketed(sc, p, lambda e: e.kind, len))


def check_recent_failures(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    want = sorted(
        (e for e in sc.events() if e.feedback == "failed"), key=lambda e: (-e.ts_ms, e.rule_id)
    )
    assert [
        (epoch(r[0]) * 1000 + r[0].microsecond // 1000, r[1], r[2], r[3], r[5]) for r in res.rows
    ] == [(e.ts_ms, e.rule_id, e.version, e.ep, e.detail) for e in want[:100]]


def check_event_log(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    want = sorted(sc.events(), key=lambda e: (-e.ts_ms, e.rule_id))[:500]
    assert res.columns[:4] == ["ts", "rule_id", "rule_version", "event"]
    assert [(r[1], r[3], r[4], r[7], r[8]) for r in res.rows] == [
        (e.rule_id, e.event, e.state, e.ep, e.hits) for e in want
    ]


def rule_effect(sc: Scenario) -> dict[str, dict[str, Any]]:
    """rule id -> the effect row the model expects (spans overlapping the range)."""
    out = {}
    for rid in sc.selected():
        applied = [e.ts_ms for e in EVENTS if e.rule_id == rid and e.feedback == "applied"]
        if not applied:
            continue
        rule = LATEST[rid]
        t_on = min(applied) // 1000
        t_off = min(_expires(rule), sc.to_s)
        if not (t_on <= sc.to_s and t_off >= sc.from_s):
            continue
        t_before = t_on - (t_off - t_on)
        mine = [u for u in USAGE if (u.city, u.app) == (rule.city, rule.app)]
        before = [u for u in mine if t_before <= u.ws < t_on]
        after = [u for u in mine if t_on <= u.ws < t_off]
        cs_before = sum(u.call_seconds for u in before)
        cs_after = sum(u.call_seconds for u in after)
        out[rid] = {
            "action": rule.action,
            "city": rule.city,
            "app": rule.app,
            "applied_at": t_on,
            "applied_until": t_off,
            "call_seconds_before": cs_before,
            "call_seconds_after": cs_after,
            "bytes_before": sum(u.bytes for u in before),
            "bytes_after": sum(u.bytes for u in after),
            "subscribers_before": len(frozenset().union(*(u.subs for u in before))),
            "subscribers_after": len(frozenset().union(*(u.subs for u in after))),
            "leakage": cs_after / cs_before if cs_before > 0 else None,
        }
    return out


def check_effect(res: Any, sc: Scenario, p: dict[str, Any]) -> None:
    from voipflow.schemas.rule_effect import COLUMNS

    assert tuple(res.columns) == COLUMNS
    want = rule_effect(sc)
    got = {r[0]: dict(zip(res.columns, r, strict=True)) for r in res.rows}
    assert set(got) == set(want)
    for rid, w in want.items():
        g = got[rid]
        for k, v in w.items():
            if k in ("applied_at", "applied_until"):
                assert epoch(g[k]) == v, (rid, k)
            elif v is None or isinstance(v, str):
                assert g[k] == v, (rid, k)
            else:
                assert g[k] == pytest.approx(v, rel=1e-9), (rid, k)
    assert [epoch(r[4]) for r in res.rows] == sorted(epoch(r[4]) for r in res.rows)


CHECKS: dict[str, Callable[[Any, Scenario, dict[str, Any]], None]] = {
    "Rules by state": check_by_state,
    "Rule hits": check_hits,
    "Failed applications": check_failed,
    "Top rules by hits": check_top,
    "Rules": check_rules,
    "Rule effect": check_effect,
    "Rule hits by rule": check_hits_by_rule,
    "Failed applications by enforcement point": check_failed_by_ep,
    "Rule events by type": check_events_by_type,
    "Recent failures": check_recent_failures,
    "Rule events": check_event_log,
}


def test_every_panel_has_a_check() -> None:
    assert set(CHECKS) == set(PANELS)


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
@pytest.mark.parametrize("title", list(CHECKS))
def test_panel(ch: Any, title: str, sc: Scenario) -> None:
    panel = PANELS[title]
    CHECKS[title](run(ch, panel, sc.request(panel)), sc, panel)


def test_rule_effect_is_measured() -> None:
    """The model's effects have usage on both sides, a leakage and rules without usage."""
    effects = rule_effect(SCENARIOS[0])
    assert effects["r-berlin-teams"]["call_seconds_before"] > 0
    assert effects["r-aquila-sip"]["leakage"] is not None
    assert effects["r-paris-all-apps"]["call_seconds_after"] == 0  # empty app: no usage row
    assert effects["r-aquila-sip"]["applied_until"] == SCENARIOS[0].to_s


def test_scenarios_differ() -> None:
    """The selections pick different rule sets, global rules included."""
    assert SCENARIOS[2].selected() == {"r-berlin-teams", "r-all-cities-whatsapp"}
    assert SCENARIOS[3].selected() == {"r-aquila-sip"}
    assert {"removed", "expired", "failed", "active"} <= set(SCENARIOS[0].states().values())


def test_variables_list_rule_cities_and_apps(ch: Any) -> None:
    req = SCENARIOS[0].request(PANELS["Rules"])
    assert variable_values(ch, DASH, "city", req) == ["Berlin", "L'Aquila", "Paris"]
    assert variable_values(ch, DASH, "app", req) == ["sip", "teams", "whatsapp"]
