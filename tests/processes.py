"""Starting and stopping ``voipflow`` subcommands as real child processes.

Whole-pipeline tests run the collector, worker and sink the way an operator
does, each its own process with its own log file; this is the one place that
knows how.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.fixtures.paths import REPO


def voipflow(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m voipflow ARGS`` with ``env``, its output appended to ``log``."""
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "voipflow", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
