"""``voipflow enforce`` as a child process the tests can SIGKILL and start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.fixtures.paths import REPO


class PointProcess:
    def __init__(
        self, backend: str, bootstrap: str, rules: str, feedback: str, tmp: Path, **extra: str
    ) -> None:
        self.backend = backend
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
        self.env.update(
            {
                "VOIPFLOW_KAFKA_BOOTSTRAP": bootstrap,
                "VOIPFLOW_KAFKA_RULES_TOPIC": rules,
                "VOIPFLOW_KAFKA_FEEDBACK_TOPIC": feedback,
                "VOIPFLOW_KAFKA_PARTITIONS": "1",
                "VOIPFLOW_ENFORCE_RECONCILE_S": "1",
                "VOIPFLOW_ENFORCE_HITS_S": "1",
                "VOIPFLOW_METRICS_LISTEN": "",
                "VOIPFLOW_DATA_DIR": str(tmp / "var"),
                "VOIPFLOW_LOG_FORMAT": "json",
                **extra,
            }
        )
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.tmp / f"enforce-{self.runs}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voipflow", "enforce", "--backend", self.backend,
             "--point-id", f"{self.backend}-test"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
