"""Metrics endpoints: port 0 picks a free port in every process, which says where.

The collector, the worker and the sink run as ``python -m voipflow``
subprocesses with ``VOIPFLOW_METRICS_LISTEN=127.0.0.1:0`` on the session's
broker. Each must serve its own metrics on a port of its choosing (not the
configured port plus its offset: 0 + 2 used to put the sink on port 2), log
the URL, write it to ``<data_dir>/metrics/<command>-<pid>.json`` and remove
that file when it stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO
from voipflow.endpoints import endpoint_file, endpoint_url, parse_listen
from voipflow.netutil import free_port
from voipflow.settings import SettingsError

#: A metric family each process registers at start.
FAMILY = {
    "collect": "voipflow_collector_",
    "worker": "voipflow_worker_batches_total",
    "sink": "voipflow_sink_lag",
}


@pytest.mark.kafka
@pytest.mark.slow
def test_port_0_gives_every_process_a_free_port_it_tells(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        VOIPFLOW_DATA_DIR=str(data_dir),
        VOIPFLOW_KAFKA_BOOTSTRAP=kafka_bootstrap,
        VOIPFLOW_METRICS_LISTEN="127.0.0.1:0",
        VOIPFLOW_COLLECTOR_LISTEN=f"127.0.0.1:{free_port('udp')}",
        VOIPFLOW_KAFKA_FLOWS_TOPIC=f"flows-{tag}",
        VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC=f"voip-flows-{tag}",
        VOIPFLOW_KAFKA_USAGE_TOPIC=f"usage-{tag}",
        VOIPFLOW_KAFKA_HEALTH_TOPIC=f"health-{tag}",
        VOIPFLOW_KAFKA_TRAFFIC_TOPIC=f"traffic-{tag}",
        VOIPFLOW_WORKER_APP_ID=f"vf-endpoints-{tag}",
        VOIPFLOW_SINK_GROUP_ID=f"sink-{tag}",
    )
    commands = {"collect": ["--output", "null"], "worker": [], "sink": ["--migrate"]}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    try:
        for name, extra in commands.items():
            with logs[name].open("wb") as out:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "voipflow", name, *extra],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while len(urls) < len(procs):
            for name, p in procs.items():
                assert p.poll() is None, f"{name} exited: {logs[name].read_text()[-2000:]}"
                url = endpoint_url(data_dir, name, p.pid)
                if url:
                    urls[name] = url
            assert time.monotonic() < deadline, f"endpoint files: {sorted(urls)}"
            time.sleep(0.2)
        ports = {name: parse_listen(url.split("/")[2]) for name, url in urls.items()}
        assert len({p for _, p in ports.values() if p}) == 3, urls
        for name, url in urls.items():
            host, port = ports[name] or ("", 0)
            assert host == "127.0.0.1" and port > 1024, url  # chosen, not 0 + offset
            with urllib.request.urlopen(url, timeout=10) as resp:
                text = resp.read().decode()
            assert f"# HELP {FAMILY[name]}" in text, (name, text[:500])
            assert url in logs[name].read_text(), f"{name} did not log {url}"
        # Stopped once running (the worker and the sink in their groups), each
        # process removes its file.
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            groups = {env["VOIPFLOW_WORKER_APP_ID"], env["VOIPFLOW_SINK_GROUP_ID"]}
            while not groups <= {g["group_id"] for g in admin.list_groups()}:
                assert time.monotonic() < deadline, "the worker and the sink did not join"
                time.sleep(0.5)
        finally:
            admin.close()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    for name, p in procs.items():
        assert p.returncode == 0, (name, p.returncode, logs[name].read_text()[-2000:])
        assert not endpoint_file(data_dir, name, p.pid).exists(), f"{name} left its file"


def test_listen_setting_is_checked() -> None:
    assert parse_listen("") is None
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen(":9464") == ("127.0.0.1", 9464)
    for bad in ("9464", "host:", "host:port", "h:70000"):
        with pytest.raises(SettingsError, match="VOIPFLOW_METRICS_LISTEN"):
            parse_listen(bad)
