"""``voipflow db query`` and ``voipflow report`` while ``voipflow sink`` owns the chdb
directory, and after.

Real processes on one data directory, as a user runs them: the sink with
``VOIPFLOW_CLICKHOUSE_HTTP_LISTEN`` serves the data and ``db query`` goes
through it; once the sink stopped, ``db query`` opens chdb itself; a sink
that does not serve makes ``db query`` say which process holds the
directory and which setting to set, not chdb's lock error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO
from tests.storage.sinkdata import flow_batch, produce, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(VOIPFLOW_DATA_DIR=str(data_dir), VOIPFLOW_METRICS_LISTEN="", **extra)
    return env


def _voipflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voipflow", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@contextmanager
def _sink(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voipflow", "sink"], cwd=REPO, env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _count(env: dict[str, str]) -> str:
    res = _voipflow(env, "db", "query", "--format", "tsv", "SELECT count() FROM flows_voip")
    return res.stdout.splitlines()[-1] if res.returncode == 0 else f"error: {res.stderr}"


def test_db_query_goes_through_the_running_sink_then_opens_chdb(
    kafka_bootstrap: str, kafka_topic_factory, tmp_path: Path
) -> None:
    topic = kafka_topic_factory(1, prefix="voip-flows")
    env = _env(
        tmp_path,
        VOIPFLOW_KAFKA_BOOTSTRAP=kafka_bootstrap,
        VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC=topic,
        VOIPFLOW_SINK_TOPICS=topic,
        VOIPFLOW_SINK_GROUP_ID="sink-" + os.urandom(4).hex(),
        VOIPFLOW_SINK_BATCH_DELAY_S="0.3",
        VOIPFLOW_CLICKHOUSE_HTTP_USER="analyst",
        VOIPFLOW_CLICKHOUSE_HTTP_PASSWORD="pw",
    )
    assert _voipflow(env, "db", "migrate").returncode == 0
    produce(kafka_bootstrap, topic, [flow_batch(300, base=k * 300) for k in range(5)])
    endpoint = tmp_path / "clickhouse" / "http.json"
    with _sink(
        {**env, "VOIPFLOW_CLICKHOUSE_HTTP_LISTEN": "127.0.0.1:0"}, tmp_path / "sink.log"
    ) as p:
        wait_until(endpoint.exists, 60, "the sink's endpoint file")
        assert json.loads(endpoint.read_text())["pid"] == p.pid
        wait_until(lambda: _count(env) == "1500", 90, "db query to see the rows")
        # The sink's user and password are this machine's settings too: a wrong one is refused.
        wrong = _voipflow(
            {**env, "VOIPFLOW_CLICKHOUSE_HTTP_PASSWORD": "nope"}, "db", "query", "SELECT 1"
        )
        assert wrong.returncode == 2 and "Code: 516" in wrong.stderr
        write = _voipflow(env, "db", "query", "DROP TABLE flows_voip")
        assert write.returncode == 1 and "READONLY" in write.stderr
        # The report reads through the same endpoint (chdb's lock would refuse it).
        page = tmp_path / "report.html"
        rep = _voipflow(env, "report", "--since", "7d", "--out", str(page))
        assert rep.returncode == 0, rep.stderr
        assert "<html" in page.read_text(encoding="utf-8")
        assert p.poll() is None
    assert not endpoint.exists()
    assert _count(env) == "1500"  # chdb, opened by db query itself now


def test_a_sink_that_does_not_serve_is_named_with_the_setting(
    kafka_bootstrap: str, kafka_topic_factory, tmp_path: Path
) -> None:
    topic = kafka_topic_factory(1, prefix="voip-flows")
    env = _env(
        tmp_path,
        VOIPFLOW_KAFKA_BOOTSTRAP=kafka_bootstrap,
        VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC=topic,
        VOIPFLOW_SINK_TOPICS=topic,
        VOIPFLOW_SINK_GROUP_ID="sink-" + os.urandom(4).hex(),
    )
    assert _voipflow(env, "db", "migrate").returncode == 0
    with _sink(env, tmp_path / "sink.log") as p:
        status = tmp_path / "clickhouse" / "status"
        wait_until(lambda: status.exists() and f"PID: {p.pid}" in status.read_text(), 60, "lock")
        res = _voipflow(env, "db", "query", "SELECT 1")
    assert res.returncode == 2, res.stderr
    assert f"used by process {p.pid}" in res.stderr
    assert "VOIPFLOW_CLICKHOUSE_HTTP_LISTEN" in res.stderr
    assert "Cannot lock" not in res.stderr
