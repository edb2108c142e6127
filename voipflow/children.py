"""voipflow commands run as child processes of another voipflow process.

:class:`ChildProcess` is a component (``start()``/``stop()``, see
:mod:`voipflow.process`) that runs ``python -m voipflow <command>`` with the
parent's settings plus overrides in its environment and its output in a log
file. ``start()`` returns once the child's Prometheus endpoint answers (the
collector serves it once its sockets are bound and Kafka is up; the worker
and the sink serve it early in their start), found through the file the
child writes in the data directory (:mod:`voipflow.endpoints`), and fails
with the log's tail if the child exits first. ``stop()`` sends SIGTERM, waits, then SIGKILLs.

Children get their own process group, so a Ctrl-C in the terminal reaches
only the parent, which then stops them in order; and they are asked to die
with the parent (``PR_SET_PDEATHSIG``), so a parent killed outright leaves no
orphans behind.

:func:`scrape` reads a Prometheus text endpoint into ``{sample name: sum}``.

Errors::

    ChildError          a child could not start, or exited when it should not have
                        (``str()`` names it; ``log_tail`` holds the end of its log)
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from voipflow.endpoints import endpoint_url
from voipflow.logs import tail

log = logging.getLogger(__name__)

#: Root of the source tree the running voipflow was imported from; children
#: import the same code whatever their working directory or installed copy.
SOURCE_ROOT = Path(__file__).resolve().parents[1]

_PR_SET_PDEATHSIG = 1


class ChildError(Exception):
    """A child process failed to start or exited unexpectedly."""

    def __init__(self, message: str, log_file: Path | None = None, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_file = log_file
        self.log_tail = log_tail


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def scrape(url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """Samples of a Prometheus text endpoint, summed over labels: ``{name: value}``.

    Also ``name{label=value}`` keys for every labelled sample, so a caller can
    pick one label value. Raises ``OSError`` when the endpoint does not answer.
    """
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise OSError(f"{url}: {exc}") from exc
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + float(s.value)
            for k, v in s.labels.items():
                key = f"{s.name}{{{k}={v}}}"
                out[key] = out.get(key, 0.0) + float(s.value)
    return out


def peak_rss_bytes(pid: int) -> int | None:
    """Peak resident set size of a live process (``VmHWM``), None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class ChildProcess:
    """``python -m voipflow <args>`` as a component, ready when its metrics answer.

    The child is started with ``VOIPFLOW_METRICS_LISTEN`` on port 0: it picks a
    free port and writes its URL to ``<data_dir>/metrics/<name>-<pid>.json``
    (``name`` is the command: collect, worker, sink)
    (:mod:`voipflow.endpoints`), which is where this finds it.
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: Mapping[str, str],
        log_file: Path,
        data_dir: Path,
        start_timeout_s: float = 90.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_file = log_file
        self.data_dir = data_dir
        #: The child's /metrics URL, known once it is ready.
        self.metrics_url = ""
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        #: Peak RSS seen just before stopping (bytes), for the closing summary.
        self.peak_rss: int | None = None
        self.started_after_s: float | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH", "")) if p
        )
        started = time.monotonic()
        with open(self.log_file, "ab") as out:  # the child keeps its own descriptor
            out.write(f"--- voipflow {' '.join(self.args)} ({time.ctime()})\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "voipflow", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
                preexec_fn=_die_with_parent,
            )
        deadline = started + self.start_timeout_s
        while True:
            self.check()
            url = endpoint_url(self.data_dir, self.name, self._proc.pid) if self._proc else None
            try:
                if url:
                    scrape(url, timeout_s=1.0)
                    self.metrics_url = url
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ChildError(
                    f"{self.name} did not become ready within {self.start_timeout_s:.0f} s",
                    self.log_file,
                    tail(self.log_file),
                )
            time.sleep(0.2)
        self.started_after_s = time.monotonic() - started
        log.debug("%s ready", self.name, extra={"pid": self.pid})

    def check(self) -> None:
        """Raise :class:`ChildError` if the child has exited (and was not told to)."""
        if self._proc is None or self._stopping:
            return
        rc = self._proc.poll()
        if rc is not None:
            raise ChildError(
                f"{self.name} exited with status {rc}", self.log_file, tail(self.log_file)
            )

    def metrics(self) -> dict[str, float]:
        """The child's metrics now; empty if it does not answer (or is not ready)."""
        if not self.metrics_url:
            return {}
        try:
            return scrape(self.metrics_url)
        except OSError:
            return {}

    def kill(self) -> None:
        """SIGKILL the child, as a crash would end it, and reap it (an expected death)."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        proc.kill()
        proc.wait(10)
        self._proc = None

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        if proc.poll() is None:
            self.peak_rss = peak_rss_bytes(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s did not stop within %.0f s, killing it", self.name, self.stop_timeout_s
                )
                proc.kill()
                proc.wait(10)
        self._proc = None
