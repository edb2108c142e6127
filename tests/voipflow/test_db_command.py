"""``voipflow db`` as an operator runs it: a subprocess on its own chdb directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO


def _voipflow(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env["VOIPFLOW_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "voipflow", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_migrate_status_query(tmp_path: Path) -> None:
    first = _voipflow(tmp_path, "db", "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied 001_flows_voip" in first.stdout
    again = _voipflow(tmp_path, "db", "migrate")
    assert again.returncode == 0 and "up to date" in again.stdout
    status = _voipflow(tmp_path, "db", "status")
    assert status.returncode == 0
    assert all(" applied " in line for line in status.stdout.splitlines()), status.stdout
    q = _voipflow(
        tmp_path,
        "db",
        "query",
        "--format",
        "json",
        "SELECT name FROM system.tables WHERE database = 'voipflow' AND name LIKE 'voip_usage_1%'"
        " ORDER BY name",
    )
    assert q.returncode == 0, q.stderr
    names = [json.loads(line)["name"] for line in q.stdout.splitlines()]
    assert names == [
        "voip_usage_1d",
        "voip_usage_1d_mv",
        "voip_usage_1h",
        "voip_usage_1h_mv",
        "voip_usage_1m",
    ]
    bad = _voipflow(tmp_path, "db", "query", "SELECT * FROM no_such_table")
    assert bad.returncode == 1
    assert "no_such_table" in bad.stderr and "Traceback" not in bad.stderr


def test_print_cluster_ddl_runs_nothing(tmp_path: Path) -> None:
    out = _voipflow(tmp_path, "db", "migrate", "--cluster", "prod", "--print")
    assert out.returncode == 0, out.stderr
    assert "ON CLUSTER `prod`" in out.stdout
    assert "ENGINE = Distributed(`prod`, `voipflow`, flows_voip_local" in out.stdout
    assert not (tmp_path / "clickhouse").exists()


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    from voipflow.netutil import free_port

    env_url = f"clickhouse://127.0.0.1:{free_port()}/default"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(VOIPFLOW_DATA_DIR=str(tmp_path), VOIPFLOW_CLICKHOUSE_URL=env_url)
    out = subprocess.run(
        [sys.executable, "-m", "voipflow", "db", "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3
    assert "unavailable" in out.stderr and "Traceback" not in out.stderr
