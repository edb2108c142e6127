"""What the tests of ``voipflow demo`` share: a clean environment, names of their own, a run.

Each test runs ``python -m voipflow demo`` in a subprocess with its own data
directory; on the session's broker its topics and groups are unique to it
(:func:`own_names`), so other tests' messages never mix in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.fixtures.paths import REPO

#: The enforcement loop's topics, groups and state topics (``--policy``).
ENFORCEMENT_NAMES = {
    "VOIPFLOW_KAFKA_RULES_TOPIC": "rules",
    "VOIPFLOW_KAFKA_FEEDBACK_TOPIC": "feedback",
    "VOIPFLOW_KAFKA_RULE_EVENTS_TOPIC": "rule-events",
    "VOIPFLOW_EVALUATOR_GROUP_ID": "evaluator",
    "VOIPFLOW_EVALUATOR_STATE_TOPIC": "evaluator-state",
    "VOIPFLOW_LEDGER_GROUP_ID": "ledger",
    "VOIPFLOW_LEDGER_STATE_TOPIC": "ledger-state",
    "VOIPFLOW_ENFORCE_GROUP": "enforce",
}


def base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env["VOIPFLOW_DATA_DIR"] = str(data_dir)
    return env


def own_names(env: dict[str, str]) -> None:
    """Topics, worker app id and sink group no other test uses."""
    tag = uuid.uuid4().hex[:8]
    for var, name in {
        "VOIPFLOW_KAFKA_FLOWS_TOPIC": "flows",
        "VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC": "voip-flows",
        "VOIPFLOW_KAFKA_USAGE_TOPIC": "voip-usage",
        "VOIPFLOW_KAFKA_HEALTH_TOPIC": "health",
        "VOIPFLOW_KAFKA_TRAFFIC_TOPIC": "traffic",
        "VOIPFLOW_WORKER_APP_ID": "worker",
        "VOIPFLOW_SINK_GROUP_ID": "sink",
    }.items():
        env[var] = f"demo-{name}-{tag}"


def run_demo(
    env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voipflow", "demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def own_enforcement_names(env: dict[str, str]) -> None:
    """Rules topics, groups and state topics of the enforcement loop no other test uses."""
    tag = uuid.uuid4().hex[:8]
    for var, name in ENFORCEMENT_NAMES.items():
        env[var] = f"demo-{name}-{tag}"


def db_query(env: dict[str, str], sql: str) -> list[dict[str, Any]]:
    """A query through ``voipflow db query`` (its own process: chdb is per process)."""
    res = subprocess.run(
        [sys.executable, "-m", "voipflow", "db", "query", "--format", "json", sql],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
