"""Run ``voipflow collect`` as a subprocess in tests, and real exporters' output.

* :class:`CollectProcess` starts the collector on free ports with a data
  directory of its own, waits until its metrics endpoint answers, reads its
  Prometheus metrics and stops it with a signal.
* :func:`softflowd_export` runs softflowd over a capture and returns the
  export datagrams it sent (captured on a loopback socket), so the same
  bytes can be replayed to the collector and to nfcapd.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.paths import REPO
from voipflow.netutil import free_port, readable


class CollectProcess:
    """``python -m voipflow collect`` with its own ports and data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        output: str = "kafka",
        bootstrap: str = "",
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.output = output
        self.port = port or free_port("udp")
        self.metrics_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
        self.env.update(
            VOIPFLOW_COLLECTOR_LISTEN=f"127.0.0.1:{self.port}",
            VOIPFLOW_METRICS_LISTEN=f"127.0.0.1:{self.metrics_port}",
            VOIPFLOW_DATA_DIR=str(data_dir),
            VOIPFLOW_COLLECTOR_BATCH_MAX_DELAY_MS="200",
            VOIPFLOW_LOG_LEVEL="INFO",
        )
        if bootstrap:
            self.env["VOIPFLOW_KAFKA_BOOTSTRAP"] = bootstrap
        self.env.update(env or {})
        self.log = data_dir / "collect.log"
        self.stdout = data_dir / "collect.stdout"
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def start(self, *, wait: bool = True) -> CollectProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.stdout.open("wb") as out, self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voipflow", "collect", "--output", self.output],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=err,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collect exited {self.proc.returncode}: {self.log_text()}")
            try:
                self.metrics_text()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"collect did not get ready: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def wait_metric(
        self, name: str, at_least: float, timeout_s: float = 30.0, **labels: str
    ) -> float:
        deadline = time.monotonic() + timeout_s
        value = self.metric(name, **labels)
        while value < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
            value = self.metric(name, **labels)
        return value

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.proc is None:
            return self.returncode or 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        return self.returncode

    def __enter__(self) -> CollectProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def softflowd_export(
    capture: Path, version: int, *, extra: list[str] | None = None, timeout_s: float = 120
) -> list[bytes]:
    """The export datagrams softflowd sends for ``capture`` (``-r``), in order."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # "-c none": softflowd 1.1.0 given a long control socket path blocks in
    # accept() instead of reading the capture; none is needed here.
    cmd = ["softflowd", "-r", str(capture), "-n", f"127.0.0.1:{port}", "-d", "-c", "none"]
    cmd += ["-v", str(version), *(extra or [])]
    got: list[bytes] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            done = proc.poll() is not None
            if readable(sock, 0.3 if done else 0.05):
                got.append(sock.recv(65535))
            elif done:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        sock.close()
    return got
