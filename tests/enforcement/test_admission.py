"""Evaluators that own some cities each, and the one admission that applies the global caps.

The pure parts of running several evaluators in one group: windows routed to
the evaluator of their city's partition, proposals through the admission,
refusals back to the city's evaluator -- together they publish what one
evaluator publishes, and the caps hold over all of them.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from tests.enforcement.helpers import T0, evaluator, policy, usage
from voipflow.enforcement.admission import Admission, Declined
from voipflow.enforcement.config import GuardrailConfig
from voipflow.enforcement.evaluator import Evaluator, Event, Publish, Withdraw
from voipflow.enforcement.guardrails import Guardrails
from voipflow.enforcement.partitioning import scope_partition
from voipflow.enforcement.policy import Policy

CITIES = {f"City{i:02d}": [f"10.{i}.0.0/16"] for i in range(1, 25)}


class Group:
    """``n`` evaluators by city partition and one admission, run in step."""

    def __init__(self, policies: list[Policy], guard: GuardrailConfig, n: int) -> None:
        self.n = n
        self.evaluators: list[Evaluator] = []
        for _ in range(n):
            ev = evaluator(policies, guard, city_prefixes=CITIES)
            ev.global_caps = False
            self.evaluators.append(ev)
        self.admission = Admission(list(policies), Guardrails(guard))
        self.published: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.declined = 0

    def window(self, w: dict[str, Any], now: int) -> None:
        ev = self.evaluators[scope_partition(w["city"], self.n)]
        for out in ev.on_usage(w, now):
            if isinstance(out, Publish):
                self._propose(out, now)
            elif isinstance(out, Event) and out.event["event"] == "refused":
                self.events.append(out.event)

    def _propose(self, out: Publish, now: int) -> None:
        _, outputs = self.admission.on_proposal(out.rule, out.run_start, now)
        for o in outputs:
            if isinstance(o, Publish):
                self.published.append(o.rule)
            elif isinstance(o, Event):
                self.events.append(o.event)
            elif isinstance(o, Declined):
                self.declined += 1
                owner = self.evaluators[scope_partition(o.city, self.n)]
                owner.declined(o.rule_id, o.version, o.code, o.run_start)

    def expire(self, now: int) -> list[Withdraw]:
        for ev in self.evaluators:
            ev.expire(now)
        return [o for o in self.admission.expire(now) if isinstance(o, Withdraw)]


def _hot_windows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for city in CITIES:
        hot = {m for m in range(12) if rng.random() < 0.7}
        for m in range(12):
            out.append(usage(city, "teams", m, call_seconds=500 if m in hot else 10))
    rng.shuffle(out)  # a city's windows come from several partitions, in any order
    return out


def test_scope_partition_is_a_stable_hash_of_the_city() -> None:
    # the same in every process and Python version: CRC-32 of the UTF-8 name
    assert scope_partition("Berlin", 4) == zlib.crc32(b"Berlin") % 4
    assert scope_partition("Zürich", 7) == zlib.crc32("Zürich".encode()) % 7
    assert scope_partition("Berlin", 1) == 0
    assert len({scope_partition(c, 4) for c in CITIES}) == 4  # cities spread over partitions


def test_partitioned_evaluators_publish_what_one_evaluator_publishes() -> None:
    pols = [policy("calls", windows=3, ttl="30m"), policy("m", windows=2, action="monitor")]
    for seed in range(5):
        windows = _hot_windows(seed)
        guard = GuardrailConfig(max_new_rules_per_minute=1000)  # no cap binds here
        one = evaluator(pols, guard, city_prefixes=CITIES)
        want = [o.rule for w in windows for o in one.on_usage(w, T0) if isinstance(o, Publish)]
        group = Group(pols, guard, 3)
        for w in windows:
            group.window(w, T0)
        assert want, "the windows fire rules"
        key = lambda r: (r["rule_id"], r["version"])  # noqa: E731
        assert sorted(map(key, group.published)) == sorted(map(key, want))
        by_key = {key(r): r for r in want}
        for rule in group.published:
            assert rule == by_key[key(rule)]  # same evidence, target, times
        assert group.declined == 0
        assert [e for e in group.events if e["event"] == "refused"] == []


def test_global_cap_holds_over_all_evaluators_and_refusals_are_recorded() -> None:
    k = 5
    guard = GuardrailConfig(max_active_rules=k)
    group = Group([policy("calls", windows=1, ttl="10m")], guard, 4)
    for m in range(3):  # every city hot for three windows: one run each
        for city in CITIES:
            group.window(usage(city, "teams", m, call_seconds=500), T0)
    assert len({r["rule_id"] for r in group.published}) == k == len(group.published)
    refused = [e for e in group.events if e["event"] == "refused"]
    # each refused rule recorded once for its run, with the cap as its reason
    assert len(refused) == len(CITIES) - k
    assert len({e["rule_id"] for e in refused}) == len(refused)
    assert all(e["detail"].startswith("max_active: 5 rules in force") for e in refused)
    # the evaluators were told, and proposed again on the run's next windows
    assert group.declined == 3 * (len(CITIES) - k)
    in_force = sum(len(ev.active_rules()) for ev in group.evaluators)
    assert in_force == k == len(group.admission.active_rules())


def test_a_refused_run_is_admitted_once_a_slot_frees_as_with_one_evaluator() -> None:
    guard = GuardrailConfig(max_active_rules=1)
    pol = policy("calls", windows=1, ttl="2m")
    group = Group([pol], guard, 2)
    one = evaluator([pol], guard, city_prefixes=CITIES)
    a, b = "City01", "City04"
    assert scope_partition(a, 2) != scope_partition(b, 2)  # two evaluators involved
    want: list[tuple[str, int]] = []
    for m in range(6):
        now = T0 + m * 60_000
        group.expire(now)
        one.expire(now)
        for city in (a, b):  # a hot for two windows, b all along
            hot = city == b or m < 2
            w = usage(city, "teams", m, call_seconds=500 if hot else 10)
            group.window(w, now)
            want += [(o.rule["rule_id"], o.rule["version"]) for o in one.on_usage(w, now)
                     if isinstance(o, Publish)]  # fmt: skip
    got = [(r["rule_id"], r["version"]) for r in group.published]
    assert got == want
    # b's run was refused while a's rule was in force, and admitted once it expired
    cities = [r["match"]["cities"][0] for r in group.published]
    assert list(dict.fromkeys(cities)) == [a, b]
    first_b = group.published[cities.index(b)]
    assert first_b["version"] == 1 and first_b["created_ms"] > T0 + 4 * 60_000
    assert group.declined >= 1


def test_replayed_proposals_change_nothing() -> None:
    adm = Admission([policy(windows=1)], Guardrails(GuardrailConfig()))
    ev = evaluator([policy(windows=1)])
    (pub,) = [o for o in ev.on_usage(usage("Berlin", "teams", 0, call_seconds=500), T0)
              if isinstance(o, Publish)]  # fmt: skip
    outcome, out = adm.on_proposal(pub.rule, pub.run_start, T0)
    assert outcome == "admitted" and [type(o) for o in out] == [Event, Publish]
    assert adm.on_proposal(pub.rule, pub.run_start, T0) == ("replayed", [])


def test_admission_state_round_trip_and_reconcile_with_the_rules_topic() -> None:
    pols = [policy("calls", windows=1)]
    adm = Admission(pols, Guardrails(GuardrailConfig(max_new_rules_per_minute=2)))
    ev = evaluator(pols)
    rules = []
    for city in ("Berlin", "Hamburg"):
        for o in ev.on_usage(usage(city, "teams", 0, call_seconds=500), T0):
            if isinstance(o, Publish):
                adm.on_proposal(o.rule, o.run_start, T0)
                rules.append(o.rule)
    state = {k: v for k, v in adm.changes().items() if v is not None}
    again = Admission(pols, Guardrails(GuardrailConfig(max_new_rules_per_minute=2)))
    again.restore(state.items())
    assert again.active_rules() == adm.active_rules()
    assert list(again.guardrails.recent_new) == [T0 + 60_000] * 2  # the rate survives
    # the topic lacks Hamburg's rule (killed before publishing) and holds one
    # rule of an evaluator from before the admission existed
    other = dict(rules[0], rule_id="old-rule", match=dict(rules[0]["match"], cities=["Paris"]))
    outs = again.reconcile({rules[0]["rule_id"]: rules[0], "old-rule": other})
    assert [o.rule["rule_id"] for o in outs if isinstance(o, Publish)] == [rules[1]["rule_id"]]
    assert "old-rule" in again.active_rules()  # counted by the caps from now on
