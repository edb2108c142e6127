"""``voipflow rules`` as an operator runs it: a subprocess on its own chdb directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO

POLICY = """\
policies:
  - name: berlin-hot
    match: {apps: [teams], cities: [Berlin]}
    condition: {metric: call_seconds, threshold: 100, for: 3}
    action: block
    target: subscriber_prefixes
    ttl: 10m
"""
# 60 windows of Berlin teams in the last hour: hot in minutes 20..29
USAGE = """
INSERT INTO voip_usage_in
SELECT toStartOfMinute(now()) - INTERVAL 60 MINUTE + INTERVAL number MINUTE, 60, 'Berlin',
       'Berlin', 'DE', 'teams', 10, 100, 1000, 3, [number * 10, number * 10 + 1, number * 10 + 2],
       if(number BETWEEN 20 AND 29, 500, 10), 0.2, now64(3)
FROM numbers(60)
"""


def _voipflow(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env["VOIPFLOW_DATA_DIR"] = str(data_dir)
    env["VOIPFLOW_WORKER_PREFIX_TABLE"] = str(REPO / "data" / "cities" / "demo-cities.csv")
    return subprocess.run(
        [sys.executable, "-m", "voipflow", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_simulate_list_show(tmp_path: Path) -> None:
    assert _voipflow(tmp_path, "db", "migrate").returncode == 0
    ins = _voipflow(tmp_path, "db", "query", USAGE)
    assert ins.returncode == 0, ins.stderr
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    sim = _voipflow(tmp_path, "rules", "simulate", "--policy", str(policy), "--since", "2h",
                    "--format", "json")  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    out = json.loads(sim.stdout)
    # fires at the third hot window (minute 22), renewed at minute 27 (expiry +5 min)
    assert (out["windows"], out["rules"], out["rule_versions"]) == (60, 1, 2)
    # in force from the end of minute 22 to 10 minutes after the end of minute 27:
    # windows 23..37, three new subscribers each
    assert out["subscribers_touched"] == 15 * 3
    text = _voipflow(tmp_path, "rules", "simulate", "--policy", str(policy), "--since", "2h")
    assert text.returncode == 0 and "1 rules (2 versions), 45 subscribers touched" in text.stdout
    empty = _voipflow(tmp_path, "rules", "list")
    assert empty.returncode == 0 and "no rules in force" in empty.stdout
    missing = _voipflow(tmp_path, "rules", "show", "nope")
    assert missing.returncode == 1 and "no rule 'nope'" in missing.stderr
    bad = _voipflow(tmp_path, "rules", "simulate", "--policy", str(tmp_path / "none.yaml"))
    assert bad.returncode == 1 and "none.yaml:1: cannot be read" in bad.stderr
