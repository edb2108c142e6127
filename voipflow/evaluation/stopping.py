"""Stopping the pipeline processes a test or benchmark started itself.

Tests and benchmarks run ``voipflow worker`` and friends as plain
subprocesses; each must end with them gone, also when the run failed, or
the next run finds their consumer group members and ports still there.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable
from typing import Any

#: Seconds a process gets after SIGTERM to commit and leave its group.
GRACE_S = 30.0


def stop_processes(procs: Iterable[subprocess.Popen[Any]], grace_s: float = GRACE_S) -> None:
    """SIGTERM every process still running, then wait for each; kill what outlives ``grace_s``.

    All are signalled before any is waited for, so they shut down side by
    side (a Faust worker's clean stop takes seconds) rather than one after
    the other.
    """
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
