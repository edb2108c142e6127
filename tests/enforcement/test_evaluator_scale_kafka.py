"""Several evaluator processes in one consumer group on the real broker.

Two ``voipflow policy run`` processes share a group; voip-usage.v1 has four
partitions and is keyed by window, as the worker writes it, and the twelve
demo cities spread over the four scopes partitions. Together the two publish
exactly the rules one pure evaluator publishes on the same windows (same ids,
versions, evidence), none twice -- also when one of them is SIGKILLed mid-stream
and the other takes its cities over. With a cap of K rules in force, exactly
K are published between them and the others are refused with the reason.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.enforcement.evaluator_kafka_support import (
    CITIES_CSV,
    Running,
    evaluator_env,
    owns_scopes,
    peer_of,
    produce,
    produce_peers,
    published,
    reference,
    same_rule,
    topic_size,
    usage_window,
)
from tests.enforcement.helpers import read_all
from voipflow.enforcement.partitioning import scope_partition
from voipflow.enforcement.targets import load_city_prefixes
from voipflow.schemas.rule_events import decode_rule_event

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

CITIES = sorted(load_city_prefixes(CITIES_CSV))
APPS = ["teams", "zoom"]
MINUTES = 14
POLICY = """\
policies:
  - name: hot-calls
    match: {apps: [teams, zoom]}
    condition: {metric: call_seconds, threshold: 100, for: 3}
    action: block
    target: subscriber_prefixes
    ttl: 20m
    mode: shadow
"""


def _hot(city: int, app: int, minute: int) -> bool:
    """Runs that fire and renew, runs that fire late, runs too short to fire, cold scopes."""
    pattern = (city * 2 + app) % 4
    if pattern == 0:
        return True  # fires at minute 2, renewed at minute 12 (half the ttl later)
    if pattern == 1:
        return 4 <= minute <= 8
    if pattern == 2:
        return minute % 3 != 0  # runs of two: never fires
    return False


def _windows(t0: int) -> list[list[dict[str, Any]]]:
    """The windows, minute by minute."""
    return [
        [
            usage_window(t0, minute, city, app, _hot(ci, ai, minute))
            for ci, city in enumerate(CITIES)
            for ai, app in enumerate(APPS)
        ]
        for minute in range(MINUTES)
    ]


@pytest.fixture
def setup(kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path) -> dict[str, Any]:
    assert len({scope_partition(c, 4) for c in CITIES}) == 4, "cities on every partition"
    s = evaluator_env(kafka_bootstrap, kafka_topic_factory, tmp_path, POLICY)
    # windows from five minutes ago on: the rules stay in force while the test runs
    s["t0"] = (int(time.time()) - 5 * 60) // 60 * 60_000
    return s


def _two(
    s: dict[str, Any], a_extra: dict[str, str] | None = None, **extra: str
) -> tuple[Running, Running]:
    """Two evaluators in the group, each owning cities, before any window is produced.

    Their idle exit (``extra``) must outlast the second one's start and the
    rebalance, or the first one stops before a window comes.
    """
    a = Running(s["env"], **extra, **(a_extra or {}))
    a.wait_for(lambda: owns_scopes(a))
    b = Running(s["env"], **extra)
    b.wait_for(lambda: owns_scopes(b))
    a.wait_for(lambda: owns_scopes(a) and a.owned_scopes() != ["[0, 1, 2, 3]"])
    return a, b


def _feed(s: dict[str, Any], batch: list[dict[str, Any]], done: int) -> int:
    """Produce one minute's windows and wait until the group has re-keyed them.

    So every city's windows reach its scopes partition in minute order, as
    they do when the worker closes one minute after another, and the rules'
    evidence can be compared with one evaluator's on the same order.
    """
    produce(s["bootstrap"], s["topics"]["usage"], batch)
    done += len(batch)
    scopes = f"{s['env']['VOIPFLOW_EVALUATOR_GROUP_ID']}-scopes"
    deadline = time.monotonic() + 120
    while topic_size(s["bootstrap"], scopes) < done:
        assert time.monotonic() < deadline, "the windows were not re-keyed in 120 s"
        time.sleep(0.2)
    return done


def _check_rules(s: dict[str, Any], windows: list[dict[str, Any]]) -> None:
    got = published(s["bootstrap"], s["topics"]["rules"])
    versions = Counter(f"{r['rule_id']}@{r['version']}" for r in got)
    twice = [v for v, n in versions.items() if n > 1]
    assert not twice, f"published twice: {twice}"
    want = reference(POLICY, windows)
    missing = sorted(set(want) - set(versions))
    extra = sorted(set(versions) - set(want))
    assert not missing and not extra, (missing, extra)
    for rule in got:
        ref = want[f"{rule['rule_id']}@{rule['version']}"]
        assert same_rule(rule, ref), [
            (k, rule.get(k), ref.get(k)) for k in ref if rule.get(k) != ref[k]
        ]
    assert max(r["version"] for r in got) >= 2, "renewals were part of the run"


def test_two_evaluators_publish_what_one_publishes(setup: dict[str, Any]) -> None:
    s = setup
    minutes = _windows(s["t0"])
    a, b = _two(s, VOIPFLOW_EVALUATOR_EXIT_WHEN_IDLE_S="20")
    try:
        done = 0
        for batch in minutes:
            done = _feed(s, batch, done)
        outs = [a.finish(0), b.finish(0)]
    finally:
        a.kill()
        b.kill()
    for out in outs:  # both evaluated windows of their own cities
        (stop,) = [ln for ln in out.splitlines() if "no usage windows for a while" in ln]
        assert "windows=0 " not in stop + " ", stop
    _check_rules(s, [w for batch in minutes for w in batch])


def test_sigkill_one_of_two_the_other_takes_its_cities_over(setup: dict[str, Any]) -> None:
    s = setup
    minutes = _windows(s["t0"])
    # idle long enough for the group to notice the dead member (its session timeout)
    a, b = _two(s, VOIPFLOW_EVALUATOR_EXIT_WHEN_IDLE_S="30")
    try:
        done = 0
        for minute, batch in enumerate(minutes):
            # after the kill, the dead one's usage partitions wait for the takeover
            done = _feed(s, batch, done)
            if minute == 4:
                deadline = time.monotonic() + 120
                while not published(s["bootstrap"], s["topics"]["rules"]):
                    assert time.monotonic() < deadline, "no rule published in 120 s"
                    time.sleep(0.5)
                assert owns_scopes(a), "the victim owns cities when it is killed"
                a.kill()
        b.wait_for(lambda: b.owned_scopes() == ["[0, 1, 2, 3]"], timeout_s=180)
        b.finish(0)
    finally:
        a.kill()
        b.kill()
    _check_rules(s, [w for batch in minutes for w in batch])


CAP = 3


def test_the_cap_on_rules_in_force_holds_over_two_evaluators(setup: dict[str, Any]) -> None:
    s = setup
    hot = [
        [usage_window(s["t0"], m, city, "teams", True) for city in CITIES] for m in range(4)
    ]  # every city fires once (for: 3): twelve candidate rules
    a, b = _two(
        s, VOIPFLOW_GUARDRAILS_MAX_ACTIVE_RULES=str(CAP), VOIPFLOW_EVALUATOR_EXIT_WHEN_IDLE_S="20"
    )
    try:
        for batch in hot:
            produce(s["bootstrap"], s["topics"]["usage"], batch)
            time.sleep(0.3)
        a.finish(0)
        b.finish(0)
    finally:
        a.kill()
        b.kill()
    rules = published(s["bootstrap"], s["topics"]["rules"])
    assert len(rules) == CAP == len({r["rule_id"] for r in rules})
    events = [decode_rule_event(v) for _, v in read_all(s["bootstrap"], s["topics"]["events"])]
    refused = [e for e in events if e["event"] == "refused"]
    assert all(
        e["detail"].startswith(f"max_active: {CAP} rules in force") and "MAX_ACTIVE_RULES" in
        e["detail"] for e in refused
    ), [e["detail"] for e in refused]  # fmt: skip
    # every other city's rule was refused, each once for its run
    assert sorted(e["rule_id"] for e in refused) == sorted({e["rule_id"] for e in refused})
    fired = {r["rule_id"] for r in rules} | {e["rule_id"] for e in refused}
    assert len(fired) == len(CITIES)
    assert {r["rule_id"] for r in rules}.isdisjoint(e["rule_id"] for e in refused)


def test_a_kill_between_state_and_proposals_loses_and_repeats_nothing(
    setup: dict[str, Any],
) -> None:
    """One of two dies right after it wrote the state of a batch that fired or
    admitted rules, before it sent them on: the other takes over its cities
    (and the admission, if it had it) and neither loses nor repeats a rule."""
    s = setup
    minutes = _windows(s["t0"])
    a, b = _two(
        s,
        {"VOIPFLOW_EVALUATOR_FAULT_KILL_AFTER_BATCHES": "1"},
        VOIPFLOW_EVALUATOR_EXIT_WHEN_IDLE_S="30",
    )
    try:
        done = 0
        for batch in minutes:
            done = _feed(s, batch, done)
        assert a.finish(-9) and "fault injection: SIGKILL after writing state" in a.output
        b.wait_for(lambda: b.owned_scopes() == ["[0, 1, 2, 3]"], timeout_s=180)
        b.finish(0)
    finally:
        a.kill()
        b.kill()
    _check_rules(s, [w for batch in minutes for w in batch])


def test_a_state_topic_not_partitioned_like_the_scopes_fails_the_start(
    kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path
) -> None:
    """A state topic from before (one partition) beside a scopes topic of four:
    a city's state would not lie on its windows' partition, so the start stops
    and names both settings."""
    s = evaluator_env(kafka_bootstrap, kafka_topic_factory, tmp_path, POLICY, state_partitions=1)
    run = Running(s["env"], VOIPFLOW_KAFKA_PARTITIONS="4")
    try:
        out = run.finish(2)
    finally:
        run.kill()
    assert f"the state topic {s['topics']['state']} (VOIPFLOW_EVALUATOR_STATE_TOPIC) has 1" in out
    assert "VOIPFLOW_EVALUATOR_SCOPES_TOPIC) 4" in out


PEERS_POLICY = """\
policies:
  - name: block-peers
    match: {apps: [teams]}
    condition: {metric: call_seconds, threshold: 100, for: 2}
    action: block
    target: observed_peers
    ttl: 20m
"""


def test_every_city_gets_its_peers_whichever_evaluator_owns_it(
    kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path
) -> None:
    """All peers lie on voip-flows partition 0, which the group would give one
    evaluator only; each city's block still targets its own peer."""
    s = evaluator_env(kafka_bootstrap, kafka_topic_factory, tmp_path, PEERS_POLICY)
    s["t0"] = (int(time.time()) - 5 * 60) // 60 * 60_000
    flows = kafka_topic_factory(partitions=4, prefix="ev-flows")
    produce_peers(kafka_bootstrap, flows, CITIES, "teams", int(time.time() * 1000))
    a, b = _two(s, VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC=flows, VOIPFLOW_EVALUATOR_EXIT_WHEN_IDLE_S="20")
    try:
        done = 0
        for m in range(3):
            batch = [usage_window(s["t0"], m, city, "teams", True) for city in CITIES]
            done = _feed(s, batch, done)
        a.finish(0)
        b.finish(0)
    finally:
        a.kill()
        b.kill()
    events = [decode_rule_event(v) for _, v in read_all(s["bootstrap"], s["topics"]["events"])]
    refused = [e["detail"] for e in events if e["event"] == "refused"]
    assert refused == []
    rules = {r["match"]["cities"][0]: r for r in published(s["bootstrap"], s["topics"]["rules"])}
    assert sorted(rules) == CITIES
    for i, city in enumerate(CITIES):
        assert rules[city]["target"]["prefixes"] == [peer_of(i)], city
