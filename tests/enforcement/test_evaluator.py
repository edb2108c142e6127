"""The evaluator on usage windows: when rules fire, their ids, versions, expiry and state."""

from __future__ import annotations

import random
from typing import Any

from tests.enforcement.helpers import T0, evaluator, policy, usage
from voipflow.enforcement.config import GuardrailConfig
from voipflow.enforcement.evaluator import Evaluator, Event, Output, Publish, Withdraw, rule_id
from voipflow.schemas.rule_events import validate_rule_event
from voipflow.schemas.rules import validate_rule

NOW = T0  # wall clock of the tests: the rules are fresh


def published(out: list[Output]) -> list[dict[str, Any]]:
    return [o.rule for o in out if isinstance(o, Publish)]


def events(out: list[Output]) -> list[dict[str, Any]]:
    return [o.event for o in out if isinstance(o, Event)]


def feed(ev: Evaluator, windows: list[dict[str, Any]], now: int = NOW) -> list[Output]:
    out: list[Output] = []
    for w in windows:
        out += ev.on_usage(w, now)
    return out


def test_fires_after_n_consecutive_windows_only() -> None:
    ev = evaluator([policy(windows=3)])
    hot = [usage("Berlin", "teams", m, call_seconds=500) for m in range(3)]
    assert published(feed(ev, hot[:2])) == []
    out = feed(ev, hot[2:])
    (rule,) = published(out)
    validate_rule(rule)
    assert rule["rule_id"] == rule_id(policy(windows=3), "Berlin", "teams")
    assert (rule["version"], rule["action"], rule["mode"]) == (1, "block", "enforce")
    assert rule["match"]["cities"] == ["Berlin"] and rule["match"]["apps"] == ["teams"]
    assert rule["target"]["prefixes"] == ["10.1.0.0/16", "2001:db8:1::/48"]
    assert rule["created_ms"] == T0 + 3 * 60_000  # end of the third window
    assert rule["expires_ms"] == rule["created_ms"] + 600_000
    assert [w["window_start_ms"] for w in rule["evidence"]["windows"]] == [
        T0,
        T0 + 60_000,
        T0 + 120_000,
    ]
    assert rule["evidence"]["windows"][0]["metrics"]["call_seconds"] == 500
    (proposed,) = events(out)
    validate_rule_event(proposed)
    assert (proposed["event"], proposed["rule_version"]) == ("proposed", 1)


def test_a_gap_or_a_cold_window_breaks_the_run() -> None:
    ev = evaluator([policy(windows=3)])
    out = feed(
        ev,
        [
            usage("Berlin", "teams", 0, call_seconds=500),
            usage("Berlin", "teams", 1, call_seconds=500),
            usage("Berlin", "teams", 2, call_seconds=50),  # below the threshold
            usage("Berlin", "teams", 3, call_seconds=500),
            usage("Berlin", "teams", 5, call_seconds=500),  # minute 4 missing
            usage("Hamburg", "teams", 6, call_seconds=500),  # another city
            usage("Berlin", "zoom", 6, call_seconds=500),  # another app
        ],
    )
    assert published(out) == []


def test_order_and_duplicates_do_not_matter() -> None:
    """Windows of one city come from several partitions, and twice after a crash."""
    windows = [usage("Berlin", "teams", m, call_seconds=500) for m in range(6)]
    reference = published(feed(evaluator([policy(windows=4)]), windows))
    rng = random.Random(3)
    for _ in range(10):
        shuffled = windows + rng.sample(windows, 3)
        rng.shuffle(shuffled)
        got = published(feed(evaluator([policy(windows=4)]), shuffled))
        assert len(got) == 1
        assert got[0]["rule_id"] == reference[0]["rule_id"]
        assert got[0]["version"] == 1


def test_renewal_bumps_the_version_only_when_the_expiry_moves_enough() -> None:
    ev = evaluator([policy(windows=2, ttl="10m")])
    out = feed(ev, [usage("Berlin", "teams", m, call_seconds=500) for m in range(11)])
    rules = published(out)
    # fired at the end of minute 1 (expires +10 min); renewed once the run went
    # on for half the ttl (minute 6): versions 1 and 2, same id, same creation
    assert [r["version"] for r in rules] == [1, 2]
    assert len({r["rule_id"] for r in rules}) == 1
    assert rules[1]["created_ms"] == rules[0]["created_ms"]
    assert rules[1]["expires_ms"] == T0 + 7 * 60_000 + 600_000
    assert [e["detail"].split(":")[0] for e in events(out)] == ["fired", "renewed"]


def test_expiry_and_firing_again() -> None:
    ev = evaluator([policy(windows=2, ttl="5m")])
    first = published(feed(ev, [usage("Berlin", "teams", m, call_seconds=500) for m in (0, 1)]))
    assert ev.expire(first[0]["expires_ms"] - 1) == []
    (gone,) = ev.expire(first[0]["expires_ms"])
    assert isinstance(gone, Withdraw) and (gone.rule_id, gone.reason) == (
        first[0]["rule_id"],
        "expired",
    )
    assert ev.active_rules() == {}
    later = [usage("Berlin", "teams", m, call_seconds=500) for m in (20, 21)]
    (again,) = published(feed(ev, later, now=T0 + 20 * 60_000))
    assert (again["rule_id"], again["version"]) == (first[0]["rule_id"], 2)


def test_old_input_fires_nothing() -> None:
    ev = evaluator([policy(windows=2, ttl="5m")])
    windows = [usage("Berlin", "teams", m, call_seconds=500) for m in (0, 1)]
    assert feed(ev, windows, now=T0 + 3600_000) == []


def test_removed_or_changed_policy_withdraws_its_rules() -> None:
    pol = policy("pol", windows=1)
    ev = evaluator([pol])
    (rule,) = published(feed(ev, [usage("Berlin", "teams", 0, call_seconds=500)]))
    assert ev.set_policies([pol]) == []  # the same policy: nothing changes
    (w,) = ev.set_policies([policy("pol", windows=1, mode="shadow")])  # another rule id
    assert isinstance(w, Withdraw) and (w.rule_id, w.reason) == (rule["rule_id"], "withdrawn")
    assert ev.active_rules() == {}


def test_state_round_trip_neither_forgets_windows_nor_fires_twice() -> None:
    pol = policy(windows=3)
    ev = evaluator([pol])
    windows = [usage("Berlin", "teams", m, call_seconds=500) for m in range(5)]
    feed(ev, windows[:2])
    state: dict[str, Any] = {}
    state.update(ev.changes())
    restarted = evaluator([pol])
    restarted.restore((k, v) for k, v in state.items() if v is not None)
    (rule,) = published(feed(restarted, windows[2:3]))  # remembers minutes 0 and 1
    state.update(restarted.changes())
    again = evaluator([pol])
    again.restore((k, v) for k, v in state.items() if v is not None)
    assert published(feed(again, windows[:3])) == []  # a replay fires nothing
    assert again.active_rules() == {rule["rule_id"]: rule}


def test_refusals_are_events_once_per_run() -> None:
    guard = GuardrailConfig(max_rules_per_city=1)
    ev = evaluator([policy("a", windows=1), policy("b", windows=1, apps="[zoom]")], guard)
    out = feed(
        ev,
        [
            usage("Berlin", "teams", 0, call_seconds=500),
            usage("Berlin", "zoom", 0, call_seconds=500),
            usage("Berlin", "zoom", 1, call_seconds=500),
        ],
    )
    assert [r["policy"] for r in published(out)] == ["a"]
    refused = [e for e in events(out) if e["event"] == "refused"]
    assert len(refused) == 1  # the second window of the same run is not recorded again
    validate_rule_event(refused[0])
    assert refused[0]["detail"].startswith("city_cap: 1 rules in force in Berlin")
    assert (refused[0]["rule_version"], refused[0]["policy"]) == (0, "b")


def test_caps_on_active_rules_and_rate() -> None:
    pols = [policy("p", windows=1, cities="[]")]
    ev = evaluator(pols, GuardrailConfig(max_active_rules=2), city_prefixes=None)
    out = feed(
        ev, [usage(c, "teams", 0, call_seconds=500) for c in ("Berlin", "Hamburg", "Munich")]
    )
    assert len(published(out)) == 2
    assert [e["detail"].split(":")[0] for e in events(out) if e["event"] == "refused"] == [
        "max_active"
    ]
    ev = evaluator(pols, GuardrailConfig(max_new_rules_per_minute=1))
    out = feed(ev, [usage(c, "teams", 0, call_seconds=500) for c in ("Berlin", "Hamburg")])
    assert [e["detail"].split(":")[0] for e in events(out) if e["event"] == "refused"] == ["rate"]
    # a minute later (event time) the rate allows a new rule again
    out = feed(ev, [usage("Munich", "teams", 1, call_seconds=500)])
    assert len(published(out)) == 1


def test_monitor_needs_no_prefixes_but_block_does() -> None:
    ev = evaluator([policy("m", windows=1, action="monitor"), policy("b", windows=1)])
    out = feed(ev, [usage("Atlantis", "teams", 0, call_seconds=500)])
    assert [r["policy"] for r in published(out)] == ["m"]
    (refused,) = [e for e in events(out) if e["event"] == "refused"]
    assert refused["detail"].startswith("no_prefixes")


def test_throttle_carries_its_rate_and_provider_ranges() -> None:
    pol = policy("t", apps="[zoom]", windows=1, action="throttle", rate=256,
                 target="provider_ranges")  # fmt: skip
    (rule,) = published(feed(evaluator([pol]), [usage("Berlin", "zoom", 0, call_seconds=500)]))
    validate_rule(rule)
    assert rule["rate_kbps"] == 256
    assert len(rule["target"]["prefixes"]) > 10  # Zoom's provider file
    assert rule["target"]["kind"] == "provider_ranges"
