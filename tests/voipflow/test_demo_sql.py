"""The demo's sink serves SQL on chdb: where, and when the user's settings win."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voipflow.demo import DemoOptions
from voipflow.demo.pipeline import child_env
from voipflow.demo.plan import DemoPlan
from voipflow.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("VOIPFLOW_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("VOIPFLOW_DATA_DIR", str(tmp_path / "var"))


def _sink_listen() -> str | None:
    plan = DemoPlan.from_settings(load_settings())
    env = child_env(plan, DemoOptions(window_s=5), "127.0.0.1:9092", "127.0.0.1:2055")
    return env.get("VOIPFLOW_CLICKHOUSE_HTTP_LISTEN")


def test_on_chdb_the_sink_serves_on_a_free_loopback_port() -> None:
    assert _sink_listen() == "127.0.0.1:0"


def test_the_users_listen_address_or_off_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOIPFLOW_CLICKHOUSE_HTTP_LISTEN", "127.0.0.1:8123")
    assert _sink_listen() == "127.0.0.1:8123"  # inherited from the user's environment
    monkeypatch.setenv("VOIPFLOW_CLICKHOUSE_HTTP_LISTEN", "")
    assert _sink_listen() == ""


def test_a_clickhouse_server_serves_its_own_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOIPFLOW_CLICKHOUSE_URL", "clickhouse://u:p@127.0.0.1:9000/voipflow")
    assert _sink_listen() is None


@pytest.mark.kafka
@pytest.mark.slow
def test_db_query_answers_while_the_demo_runs(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The demo prints where its sink serves SQL; ``voipflow db query`` goes there meanwhile."""
    import subprocess
    import sys

    from tests.fixtures.paths import REPO
    from tests.voipflow.demo_support import base_env, own_names

    env = base_env(tmp_path / "var")
    env["VOIPFLOW_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    own_names(env)
    demo = subprocess.Popen(
        [sys.executable, "-m", "voipflow", "demo", "--duration", "15", "--window-s", "5"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    answered = None
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "SQL while it runs:" in line and answered is None:
                assert "http://127.0.0.1:" in line
                query = ["db", "query", "--format", "tsv", "SELECT count() >= 0 FROM flows_voip"]
                answered = subprocess.run(
                    [sys.executable, "-m", "voipflow", *query],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
        status = demo.wait(240)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)
        if demo.stdout is not None:
            demo.stdout.close()
    out = "".join(lines)
    assert status == 0, out
    assert answered is not None, out
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines()[-1] == "1"
    # The sink, stopped, took its endpoint file with it; the report read chdb itself.
    assert not (tmp_path / "var" / "clickhouse" / "http.json").exists()
