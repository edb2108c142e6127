"""``voipflow rules list|show|simulate`` on chdb, against rows with known answers.

Usage windows go in through ``voip_usage_in`` (as the sink writes them, so
the views fill ``voip_usage_1m``); rules and events are the rows the
evaluator and the ledger produce, written through the sink's table mappings,
not hand-made.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.dashboards.panels import migrated_database
from tests.enforcement.helpers import (
    evaluator,
    insert_via_sink,
    policy,
    providers,
    rule_feedback,
)
from voipflow.enforcement.config import GuardrailConfig
from voipflow.enforcement.evaluator import Event, Publish
from voipflow.enforcement.history import list_rules, show_rule, simulate
from voipflow.enforcement.ledger import Ledger, Record
from voipflow.enforcement.targets import PeerSet, TargetResolver

NOW_S = int(time.time()) // 60 * 60
T = NOW_S - 120 * 60  # the first minute of the history, two hours ago
HOT = range(10, 31)  # Berlin teams: call seconds above the threshold in these minutes


def _rows() -> list[dict[str, Any]]:
    rows = []
    for minute in range(120):
        for city in ("Berlin", "Hamburg", "Paris"):
            hot = (city == "Berlin" and minute in HOT) or (city == "Paris" and minute < 5)
            rows.append(
                {
                    "window_start": T + minute * 60,
                    "city": city,
                    "app": "teams",
                    "call_seconds": 500.0 if hot else 20.0,
                    "bytes": 1000 * (minute + 1),
                    # five subscribers per window, new ones each minute
                    "hashes": [minute * 100 + k for k in range(5)],
                }
            )
    return rows


def _insert_usage(ch: Any, rows: list[dict[str, Any]]) -> None:
    n = len(rows)
    ch.insert(
        "voip_usage_in",
        {
            "window_start": np.array([r["window_start"] for r in rows], dtype="datetime64[s]"),
            "window_s": np.full(n, 60, dtype=np.uint32),
            "city": pa.array([r["city"] for r in rows]),
            "region": pa.array([r["city"] for r in rows]),
            "country": pa.array(["DE"] * n),
            "app": pa.array([r["app"] for r in rows]),
            "flows": np.full(n, 10, dtype=np.uint64),
            "packets": np.full(n, 100, dtype=np.uint64),
            "bytes": np.array([r["bytes"] for r in rows], dtype=np.uint64),
            "subscribers": np.array([len(r["hashes"]) for r in rows], dtype=np.uint64),
            "subscriber_hashes": pa.array([r["hashes"] for r in rows], pa.list_(pa.uint64())),
            "call_seconds": np.array([r["call_seconds"] for r in rows]),
            "voip_share": np.full(n, 0.3),
            "produced": np.array([r["window_start"] * 1000 for r in rows], dtype="datetime64[ms]"),
        },
    )


@pytest.fixture(scope="module")
def ch(chdb_dir: Path) -> Iterator[Any]:
    with migrated_database(chdb_dir) as ch:
        _insert_usage(ch, _rows())
        yield ch


def _resolver() -> TargetResolver:
    return TargetResolver(providers(), {"Berlin": ["10.1.0.0/16"]}, PeerSet(60_000, 10))


def test_simulate_fires_renews_and_counts_subscribers(ch: Any) -> None:
    pol = policy("sim", windows=3, threshold=100, ttl="10m")
    sim = simulate(ch, [pol], GuardrailConfig(), _resolver(), T * 1000, NOW_S * 1000)
    assert sim.windows == 360
    # fired at the end of minute 12 (third hot window); renewed each time the run
    # moved the expiry by half the ttl: at the ends of minutes 17, 22 and 27
    assert [(f["city"], f["version"], (f["at_ms"] // 1000 - T) // 60) for f in sim.firings] == [
        ("Berlin", 1, 13),
        ("Berlin", 2, 18),
        ("Berlin", 3, 23),
        ("Berlin", 4, 28),
    ]
    assert sim.rules == 1
    # in force from the end of minute 12 until 10 minutes after the end of minute 27:
    # windows 13..37, five new subscribers each
    (rid,) = sim.subscribers
    assert sim.subscribers[rid] == 25 * 5 == sim.subscribers_total
    # Paris was hot, but is not in the prefix table: a block there is refused, once
    assert [(r["city"], r["guardrail"]) for r in sim.refusals] == [("Paris", "no_prefixes")]
    assert sim.refusals_by_guardrail() == {"no_prefixes": 1}


def test_simulate_reports_caps(ch: Any) -> None:
    pols = [policy("cap", windows=1, threshold=100, ttl="1h", cities="[Berlin, Paris]")]
    res = _resolver()
    res.city_prefixes["Paris"] = ["10.9.0.0/16"]
    sim = simulate(ch, pols, GuardrailConfig(max_active_rules=1), res, T * 1000, NOW_S * 1000)
    assert [f["city"] for f in sim.firings] == ["Paris"]  # Paris is hot first (minute 0)
    assert {(r["city"], r["guardrail"]) for r in sim.refusals} == {("Berlin", "max_active")}


def test_simulate_observed_peers_from_flows(ch: Any) -> None:
    """Peers come from flows_voip as they were seen up to each window."""
    peers = ["192.0.2.10", "192.0.2.20", "127.0.0.1"]  # the last is never blockable
    seen = [T + 5 * 60, T + 12 * 60, T + 12 * 60]
    ch.insert(
        "flows_voip",
        {
            "time_received": np.array([s * 1000 for s in seen], dtype="datetime64[ms]"),
            "flow_start": np.array([s * 1000 for s in seen], dtype="datetime64[ms]"),
            "flow_end": np.array([s * 1000 + 500 for s in seen], dtype="datetime64[ms]"),
            "peer_addr": pa.array([f"::ffff:{p}" for p in peers]),
            "subscriber_addr": pa.array(["::ffff:10.1.0.1"] * 3),
            "city": pa.array(["Berlin"] * 3),
            "app": pa.array(["teams"] * 3),
        },
    )
    pol = policy(
        "peer", windows=3, threshold=100, ttl="10m", target="observed_peers", cities="[Berlin]"
    )
    res = TargetResolver(providers(), {}, PeerSet(30 * 60_000, 10))
    sim = simulate(ch, [pol], GuardrailConfig(), res, T * 1000, NOW_S * 1000)
    first = sim.firings[0]
    assert (first["city"], first["version"], first["prefixes"]) == ("Berlin", 1, 2)
    assert sim.refusals == []


def _ledger_rows(ch: Any) -> dict[str, Any]:
    """A Berlin block applied at minute 60 for 20 minutes, through evaluator and ledger."""
    ev = evaluator([policy("eff", windows=1, threshold=100, ttl="20m")])
    window = {
        "schema": "voip-usage.v1", "window_start_ms": (T + 59 * 60) * 1000, "window_s": 60,
        "city": "Berlin", "region": "Berlin", "country": "DE", "app": "teams", "flows": 1,
        "packets": 1, "bytes": 1, "subscribers": 1, "subscriber_hashes": [1],
        "call_seconds": 500.0, "voip_share": 0.3, "produced_ms": 0,
    }  # fmt: skip
    outs = ev.on_usage(window, (T + 60 * 60) * 1000 - 2000)
    (rule,) = [o.rule for o in outs if isinstance(o, Publish)]
    events = [o.event for o in outs if isinstance(o, Event)]
    led = Ledger(feedback_timeout_ms=30_000, max_republish=1)
    applied = (T + 60 * 60) * 1000
    for out in [
        *led.on_rule(rule, applied - 1000),
        *led.on_feedback(rule_feedback(rule, "applied", "ep-1", applied), applied),
        *led.on_feedback(rule_feedback(rule, "hits", "ep-1", applied + 60_000, hit_packets=70), 0),
        *led.on_feedback(
            rule_feedback(rule, "hits", "ep-1", applied + 120_000, hit_packets=100), 0
        ),
        *led.on_feedback(
            rule_feedback(rule, "failed", "ep-2", applied + 5_000, error="nft: no"), 0
        ),
        *led.tick(rule["expires_ms"]),
    ]:
        if isinstance(out, Record):
            events.append(out.event)
    insert_via_sink(ch, [rule], events)
    return rule


def test_list_and_show_with_effectiveness(ch: Any) -> None:
    rule = _ledger_rows(ch)
    assert list_rules(ch) == []  # expired: not in force
    (row,) = list_rules(ch, all_rules=True)
    assert (row["rule_id"], row["version"], row["state"], row["action"], row["mode"]) == (
        rule["rule_id"],
        1,
        "expired",
        "block",
        "enforce",
    )
    assert (row["city"], row["app"], row["policy"], row["target"]) == (
        "Berlin",
        "teams",
        "eff",
        "subscriber_prefixes",
    )
    info = show_rule(ch, rule["rule_id"])
    assert info is not None and info["rule"] == rule
    assert [e["event"] for e in info["events"]] == [
        "proposed",
        "published",
        "feedback",  # applied at ep-1
        "escalated",  # ep-2 failed ...
        "feedback",  # ... and said why
        "feedback",  # hits
        "feedback",
        "expired",
    ]
    points = {p["enforcement_point"]: p for p in info["enforcement_points"]}
    assert (points["ep-1"]["hits"], points["ep-2"]["failures"]) == (100, 1)
    eff = info["effectiveness"]
    # applied at minute 60 until its expiry at minute 80: windows 60..79 against 40..59
    assert eff["call_seconds_before"] == pytest.approx(20.0 * 20)
    assert eff["call_seconds_after"] == pytest.approx(20.0 * 20)
    assert eff["bytes_before"] == sum(1000 * (m + 1) for m in range(40, 60))
    assert eff["bytes_after"] == sum(1000 * (m + 1) for m in range(60, 80))
    assert (eff["subscribers_before"], eff["subscribers_after"]) == (100, 100)
    assert eff["leakage"] == pytest.approx(1.0)
    assert show_rule(ch, "no-such-rule") is None
