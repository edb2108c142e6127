"""The evaluator process on the real broker: SIGKILLed mid-stream, it forgets nothing
and publishes no rule twice.

``voipflow policy run`` runs as a subprocess against the session's Kafka
broker. Usage windows of five cities and two apps are produced in phases with
restarts in between: a clean exit, a SIGKILL by fault injection right after
the state of a batch was written and before its rules were published, and a
SIGKILL from outside while windows arrive. The rules topic must then hold
every rule the pure evaluator gives on the same windows in one uninterrupted
run, each (rule id, version) exactly once.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.enforcement.evaluator_kafka_support import (
    APPS,
    evaluator_env,
    finish,
    produce,
    reference,
    start,
    usage_window,
)
from tests.enforcement.helpers import read_all
from voipflow.enforcement.kafka_io import read_table
from voipflow.schemas.rule_events import decode_rule_event
from voipflow.schemas.rules import decode_rule

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

CITIES = ["Berlin", "Hamburg", "Munich", "Paris", "Vienna"]
MINUTES = 12

POLICY = """\
policies:
  - name: hot-calls
    match: {apps: [teams, zoom]}
    condition: {metric: call_seconds, threshold: 100, for: 3}
    action: block
    target: subscriber_prefixes
    ttl: 1d
    mode: shadow
  - name: many-subscribers
    match: {apps: [zoom], cities: [Berlin, Hamburg]}
    condition: {metric: subscribers, threshold: 5, for: 2}
    action: alert
    target: observed_peers
    ttl: 1d
"""


def _hot(city: int, app: int, minute: int) -> bool:
    """Which windows are hot: runs that straddle the phases, gaps, cold scopes."""
    pattern = (city * 2 + app) % 5
    if pattern == 0:
        return True
    if pattern == 1:
        return minute in (3, 4, 5, 6)  # a run across the first restart
    if pattern == 2:
        return minute % 3 != 0  # runs of two: never fires
    if pattern == 3:
        return 6 <= minute <= 9  # a run across the later restarts
    return False


def _windows(t0: int) -> list[dict[str, Any]]:
    return [
        usage_window(t0, minute, city, app, _hot(ci, ai, minute))
        for minute in range(MINUTES)
        for ci, city in enumerate(CITIES)
        for ai, app in enumerate(APPS)
    ]


@pytest.fixture
def setup(kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path) -> dict[str, Any]:
    return evaluator_env(kafka_bootstrap, kafka_topic_factory, tmp_path, POLICY)


def _reference(windows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return reference(POLICY, windows)


def _produce(bootstrap: str, topic: str, windows: list[dict[str, Any]]) -> None:
    produce(bootstrap, topic, windows)


def _start(env: dict[str, str], **extra: str) -> Any:
    return start(env, **extra)


def _finish(proc: Any, want: int) -> str:
    return finish(proc, want)


def _check(s: dict[str, Any], windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages = read_all(s["bootstrap"], s["topics"]["rules"])
    versions = [
        f"{decode_rule(v)['rule_id']}@{decode_rule(v)['version']}" for _, v in messages if v
    ]
    assert len(versions) == len(set(versions)), "a rule version was published twice"
    want = _reference(windows)
    events = [decode_rule_event(v) for _, v in read_all(s["bootstrap"], s["topics"]["events"])]
    refused = [e["detail"] for e in events if e["event"] == "refused"]
    names = {k: (r["match"]["cities"], r["match"]["apps"]) for k, r in want.items()}
    missing = [names[k] for k in want if k not in versions]
    extra = [k for k in versions if k not in want]
    assert sorted(versions) == sorted(want), (missing, extra, refused)
    # hot-calls fires for pattern 0, 1 and 3 scopes; many-subscribers for Berlin/Hamburg zoom
    assert sum(v.startswith("hot-calls-") for v in versions) == 6
    # the compacted view is the set in force: one latest version per rule
    table = read_table(s["bootstrap"], s["topics"]["rules"])
    in_force = {k: decode_rule(v) for k, v in table.items() if v is not None}
    assert set(in_force) == {w.split("@")[0] for w in want}
    for rule in in_force.values():
        assert rule["evidence"]["windows"], "a rule carries the windows it fired on"
    return events


def test_restart_and_fault_kill_forget_nothing_and_publish_nothing_twice(
    setup: dict[str, Any],
) -> None:
    s = setup
    windows = _windows(s["t0"])
    per_minute = len(CITIES) * len(APPS)
    phase = [windows[: 5 * per_minute], windows[5 * per_minute : 8 * per_minute]]
    rest = windows[8 * per_minute :]

    _produce(s["bootstrap"], s["topics"]["usage"], phase[0])
    _finish(_start(s["env"]), 0)  # clean exit when idle: offsets committed
    _produce(s["bootstrap"], s["topics"]["usage"], phase[1])
    out = _finish(_start(s["env"], VOIPFLOW_EVALUATOR_FAULT_KILL_AFTER_BATCHES="1"), -9)
    assert "fault injection" in out
    _produce(s["bootstrap"], s["topics"]["usage"], rest)
    out = _finish(_start(s["env"]), 0)
    assert "repaired" in out or "restored" in out
    events = _check(s, windows)
    proposed = [e for e in events if e["event"] == "proposed"]
    assert {f"{e['rule_id']}@{e['rule_version']}" for e in proposed} == set(_reference(windows))


def test_sigkill_mid_stream(setup: dict[str, Any]) -> None:
    s = setup
    windows = _windows(s["t0"])
    per_minute = len(CITIES) * len(APPS)
    proc = _start(s["env"])
    try:
        killed_at = None
        for minute in range(MINUTES):
            _produce(
                s["bootstrap"],
                s["topics"]["usage"],
                windows[minute * per_minute : (minute + 1) * per_minute],
            )
            if minute == 5:
                # wait for the first rules, then kill while windows still arrive
                deadline = time.monotonic() + 120
                while not any(v for _, v in read_all(s["bootstrap"], s["topics"]["rules"])):
                    assert time.monotonic() < deadline, "no rule published in 120 s"
                    assert proc.poll() is None, proc.communicate()[0][-3000:]
                    time.sleep(0.5)
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=30)
                killed_at = minute
                proc = _start(s["env"])
            time.sleep(0.3)
        assert killed_at is not None, "the evaluator published no rule before the kill"
        _finish(proc, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    _check(s, windows)
