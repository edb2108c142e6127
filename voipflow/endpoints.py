"""Prometheus endpoints of voipflow processes, and how to find where they listen.

``VOIPFLOW_METRICS_LISTEN`` is one ``host:port`` for the processes of a host:
the collector serves on ``port``, the worker on ``port + 1``, the sink on
``port + 2``, an enforcement point on ``port + 4``. Port 0 means "any free
port" for every process (no offset is added to 0). Whatever port a process
bound, it logs it and writes ``<data_dir>/metrics/<component>-<pid>.json``
(``{"component", "pid", "url"}``), removed when the process exits; files
left by processes that died are removed by the next process that writes
one. A supervisor that started a process (the demo) reads its endpoint with
:func:`endpoint_url`.

Errors: a malformed address or one that cannot be bound raises
:class:`voipflow.settings.SettingsError` naming ``VOIPFLOW_METRICS_LISTEN``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voipflow.settings import Settings, SettingsError

log = logging.getLogger(__name__)

#: Port offset of each process from the configured port (unless that is 0).
OFFSETS = {"collect": 0, "worker": 1, "sink": 2, "evaluator": 3, "ledger": 4, "enforce": 5}
#: Folder of the data directory that holds the endpoint files.
ENDPOINTS_DIR = "metrics"


@dataclass(slots=True)
class Endpoint:
    """A running /metrics endpoint; :meth:`close` stops it and removes its file."""

    component: str
    url: str
    server: Any
    file: Path | None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        _remove(self.file)


def parse_listen(listen: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` (``[v6]:port``) setting; None when empty."""
    listen = listen.strip()
    if not listen:
        return None
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise SettingsError(f"VOIPFLOW_METRICS_LISTEN={listen!r}: expected host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def endpoint_file(data_dir: Path, component: str, pid: int) -> Path:
    return Path(data_dir) / ENDPOINTS_DIR / f"{component}-{pid}.json"


def endpoint_url(data_dir: Path, component: str, pid: int) -> str | None:
    """The metrics URL process ``pid`` (a ``component``) wrote, None until it did."""
    try:
        doc = json.loads(endpoint_file(data_dir, component, pid).read_text())
        return str(doc["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def serve_metrics(settings: Settings, component: str, registry: Any = None) -> Endpoint | None:
    """Start the endpoint of ``component`` as configured; None when metrics are off."""
    from prometheus_client import REGISTRY, start_http_server

    addr = parse_listen(settings.metrics.listen)
    if addr is None:
        return None
    host, port = addr
    if port:
        port += OFFSETS[component]
    try:
        server, _thread = start_http_server(port, host, registry=registry or REGISTRY)
    except OSError as exc:
        raise SettingsError(
            f"VOIPFLOW_METRICS_LISTEN={settings.metrics.listen!r}: {component} cannot listen "
            f"on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    bound = int(server.server_address[1])
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://[{shown}]:{bound}/metrics" if ":" in shown else f"http://{shown}:{bound}/metrics"
    file = _write(Path(settings.data_dir), component, url)
    log.info("metrics endpoint listening", extra={"component": component, "url": url})
    return Endpoint(component, url, server, file)


def _write(data_dir: Path, component: str, url: str) -> Path | None:
    pid = os.getpid()
    path = endpoint_file(data_dir, component, pid)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path.parent)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"component": component, "pid": pid, "url": url}) + "\n")
        tmp.replace(path)  # readers never see half a file
    except OSError as exc:
        log.warning(
            "metrics endpoint file not written", extra={"path": str(path), "error": str(exc)}
        )
        return None
    atexit.register(_remove, path)
    return path


def _remove_stale(folder: Path) -> None:
    for path in folder.glob("*-*.json"):
        try:
            pid = int(path.stem.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            _remove(path)
        except (ValueError, PermissionError):
            continue


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
