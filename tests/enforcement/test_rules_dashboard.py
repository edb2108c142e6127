"""The "Rules" dashboard on rows the enforcement path writes (not hand-made ones).

Rules come from the evaluator on usage windows, their events from the
evaluator and the ledger on the feedback enforcement points send; the rows
are written through the sink's table mappings (``storage.sink.tables``). Every panel's SQL
is expanded by the Grafana stand-in (Grafana cannot run here) and must run;
the state, hit and failure panels must agree with what the ledger decided.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboards.grafana_sim import Request, panel_interval_ms
from tests.dashboards.panels import migrated_database, panels, run, selection
from tests.enforcement.helpers import evaluator, insert_via_sink, policy, rule_feedback
from voipflow.dashboards import rules as rules_dashboard
from voipflow.enforcement.evaluator import Event, Publish
from voipflow.enforcement.ledger import Ledger, Record

NOW_MS = int(time.time()) // 60 * 60_000
T0 = NOW_MS - 3 * 3600_000
DASH = rules_dashboard.build()
PANELS = panels(DASH)
CITIES = ["Berlin", "Hamburg", "Munich"]


def _path() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str], dict[str, int]]:
    """Rules and events of three cities; the ledger's final state and hits per rule."""
    ev = evaluator([policy("dash", windows=2, threshold=100, ttl="1h", apps="[teams, zoom]")])
    led = Ledger(feedback_timeout_ms=60_000, max_republish=1)
    rules: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for minute in range(3):
        for city in CITIES:
            for app in ("teams", "zoom"):
                w = {
                    "schema": "voip-usage.v1", "window_start_ms": T0 + minute * 60_000,
                    "window_s": 60, "city": city, "region": city, "country": "DE", "app": app,
                    "flows": 1, "packets": 1, "bytes": 1, "subscribers": 1,
                    "subscriber_hashes": [1], "call_seconds": 500.0, "voip_share": 0.2,
                    "produced_ms": 0,
                }  # fmt: skip
                now = T0 + (minute + 1) * 60_000
                for out in ev.on_usage(w, now):
                    if isinstance(out, Publish):
                        rules.append(out.rule)
                        events += [o.event for o in led.on_rule(out.rule, now) if
                                   isinstance(o, Record)]  # fmt: skip
                    elif isinstance(out, Event):
                        events.append(out.event)
    assert len(rules) == 6
    hits: dict[str, int] = Counter()
    for i, rule in enumerate(rules):
        t = rule["created_ms"] + 1000
        feedback = [rule_feedback(rule, "applied", "ep-1", t)]
        if i % 3 == 1:
            feedback.append(rule_feedback(rule, "failed", "ep-2", t + 10, error=f"nft: error {i}"))
        for k in range(1, 4):
            feedback.append(
                rule_feedback(rule, "hits", "ep-1", t + k * 60_000, hit_packets=k * k * (i + 1))
            )
        if i == 5:  # never acknowledged after a new version: left to time out
            feedback = []
        for fb in feedback:
            events += [o.event for o in led.on_feedback(fb, 0) if isinstance(o, Record)]
        if feedback:
            hits[rule["rule_id"]] = 9 * (i + 1)  # the last cumulative count
    for out in led.tick(T0 + 20 * 60_000):  # rule 5: republished
        if isinstance(out, Record):
            events.append(out.event)
    for out in led.on_tombstone(rules[0]["rule_id"], "withdrawn", T0 + 30 * 60_000):
        if isinstance(out, Record):
            events.append(out.event)
    states = {rid: e["state"] for rid, e in led.rules.items()}
    return rules, events, states, dict(hits)


@pytest.fixture(scope="module")
def data(chdb_dir: Path) -> Iterator[tuple[Any, dict[str, str], dict[str, int], list[Any]]]:
    rules, events, states, hits = _path()
    with migrated_database(chdb_dir) as ch:
        insert_via_sink(ch, rules, events)
        yield ch, states, hits, events


def _request(panel: dict[str, Any]) -> Request:
    f_ms, t_ms = T0 - 3600_000, NOW_MS + 3600_000
    return Request(
        f_ms,
        t_ms,
        panel_interval_ms(panel, f_ms, t_ms),
        {
            "city": selection("city", CITIES, None),
            "app": selection("app", ["teams", "zoom"], None),
        },
    )


@pytest.mark.parametrize("title", sorted(PANELS))
def test_every_panel_runs_on_real_rows(data: Any, title: str) -> None:
    ch = data[0]
    res = run(ch, PANELS[title], _request(PANELS[title]))
    assert res.rows, f"{title}: no rows from the enforcement path's data"


def test_states_hits_and_failures_agree_with_the_ledger(data: Any) -> None:
    ch, states, hits, events = data
    by_state = run(ch, PANELS["Rules by state"], _request(PANELS["Rules by state"]))
    # the panel's state is the state of a rule's latest event, the ledger's own
    assert by_state.rows == sorted(Counter(states.values()).items())
    assert dict(by_state.rows)["withdrawn"] == 1
    total = run(ch, PANELS["Rule hits"], _request(PANELS["Rule hits"])).scalar()
    assert total == sum(hits.values())  # deltas summed = the last cumulative counts
    failed = run(ch, PANELS["Failed applications"], _request(PANELS["Failed applications"]))
    assert failed.scalar() == sum(e["feedback"] == "failed" for e in events) == 2
    table = run(ch, PANELS["Rules"], _request(PANELS["Rules"])).dicts()
    assert {r["rule_id"]: r["hits"] for r in table} == {rid: hits.get(rid, 0) for rid in states}
    assert {r["rule_id"]: r["state"] for r in table} == states
