"""``voipflow demo --policy``: the enforcement loop on the demo's traffic, end to end.

One run on the session's broker with the shipped example
``examples/policies/demo.yaml`` and the demo's own load (1,000 flows/s, 20 s
windows) for 60 s: real collector, worker, sink, chdb, evaluator, ledger and
an enforcement point with the log backend. The example's thresholds are
meant to fire on this load (its comments say why), so the run must end with
rules that the evaluator fired, the point applied (its action log names
them), the ledger recorded, and ClickHouse holds -- and the printed block
must show the same rules in the state ClickHouse gives them.

The bad flags fail before anything starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO
from tests.voipflow.demo_support import (
    base_env,
    db_query,
    own_enforcement_names,
    own_names,
    run_demo,
)

EXAMPLE = REPO / "examples" / "policies" / "demo.yaml"


def rules_block(stdout: str) -> dict[str, list[str]]:
    """Rule id -> its printed cells, from the block under the city table."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Rules of this run"))
    assert lines[start + 1].split()[:6] == ["rule", "city", "app", "action", "mode", "state"]
    out = {}
    for line in lines[start + 3 :]:
        if not line.strip() or line.startswith("what the log backend"):
            break
        cells = line.split()
        out[cells[0]] = cells
    return out


@pytest.mark.kafka
@pytest.mark.slow
def test_demo_with_a_policy_fires_applies_and_records_rules(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = base_env(tmp_path / "var")
    env["VOIPFLOW_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    own_names(env)
    own_enforcement_names(env)
    report = tmp_path / "report.json"
    res = run_demo(
        env,
        "--duration",
        "60",
        "--window-s",
        "20",
        "--rate",
        "1000",
        "--policy",
        str(EXAMPLE),
        "--json",
        str(report),
        timeout=900,
    )
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    try:
        check_policy_run(res.stdout, report, env, tmp_path)
    except AssertionError as exc:  # with what the demo printed, to tell why
        raise AssertionError(f"{exc}\n--- the demo's output:\n{res.stdout[-6000:]}") from None


def check_policy_run(stdout: str, report: Path, env: dict[str, str], tmp_path: Path) -> None:
    doc = json.loads(report.read_text())

    # The evaluator fired rules, and every one it proposed got the point's
    # feedback on rule-events.v1 before the demo stopped waiting.
    on_kafka = doc["figures"]["rules_on_kafka"]
    assert on_kafka["proposed"] >= 1 and on_kafka["waiting"] == [], on_kafka
    assert on_kafka["answered"] == on_kafka["proposed"]

    # The report's rules (from ClickHouse) are all applied, by the demo's point,
    # and the printed block shows the same rules in the same state.
    rules = {r["rule_id"]: r for r in doc["figures"]["rules"]}
    assert len(rules) == on_kafka["proposed"]
    assert {r["state"] for r in rules.values()} == {"applied"}, rules
    for r in rules.values():
        assert r["point"] == "demo" and r["applied_ms"] >= r["proposed_ms"] > 0, r
    assert {r["policy"] for r in rules.values()} <= {"demo-whatsapp-shadow", "demo-zoom-throttle"}
    printed = rules_block(stdout)
    assert sorted(printed) == sorted(rules)
    for rid, cells in printed.items():
        r = rules[rid]
        assert cells[1:6] == [r["city"], r["app"], r["action"], r["mode"], "applied"], cells

    # ClickHouse: a row per rule version in `rules`, and the ledger's events in
    # `rule_events`, from proposal to the applied feedback.
    versions = db_query(
        env, "SELECT rule_id, max(version) AS v, any(mode) AS mode FROM rules GROUP BY rule_id"
    )
    assert {row["rule_id"] for row in versions} == set(rules)
    events = db_query(
        env,
        "SELECT rule_id, groupUniqArray(event) AS events, "
        "countIf(feedback = 'applied' AND enforcement_point = 'demo') AS applied "
        "FROM rule_events GROUP BY rule_id",
    )
    by_rule = {row["rule_id"]: row for row in events}
    assert set(by_rule) == set(rules)
    for rid in rules:
        assert {"proposed", "published", "feedback"} <= set(by_rule[rid]["events"]), by_rule[rid]
        assert int(by_rule[rid]["applied"]) >= 1

    # The log backend applied them: its action log names every rule.
    actions = (tmp_path / "var" / "demo" / "enforce-actions.log").read_text()
    assert all(rid in actions for rid in rules)
    assert f"what the log backend would do: {(tmp_path / 'var').resolve()}" in stdout

    # The pipeline's own figures are those of a demo without a policy.
    assert doc["missing_cities"] == []
    assert doc["figures"]["counts"]["sent"] == doc["figures"]["counts"]["published"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--policy", "no-such-policy.yaml"], "--policy: no-such-policy.yaml:1: cannot be read"),
        (["--enforce-backend", "nftables"], "--enforce-backend: only with --policy"),
    ],
)
def test_bad_policy_flags_fail_before_anything_starts(
    args: list[str], says: str, tmp_path: Path
) -> None:
    env = base_env(tmp_path / "var")
    res = run_demo(env, *args, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"voipflow demo: {says}"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "var" / "demo").exists()
