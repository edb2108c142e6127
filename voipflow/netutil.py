"""The one free-port helper of the project (processes, tests and benchmarks use it).

A port the kernel picked for a socket bound to port 0 a moment ago; it is
free when returned, not reserved, so a caller binds it soon. Prefer giving
port 0 to the process itself when it can report the port it got
(:mod:`voipflow.endpoints`); this is for peers that must be told a port in
advance (a broker's listeners, an exporter's target, a server's config).
"""

from __future__ import annotations

import select
import socket
from typing import Literal

_KINDS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


def free_port(kind: Literal["tcp", "udp"] = "tcp", host: str = "127.0.0.1") -> int:
    """A ``kind`` port on ``host`` that was free a moment ago (the kernel picks it)."""
    if kind not in _KINDS:
        raise ValueError(f"free_port: kind must be tcp or udp, not {kind!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, _KINDS[kind]) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def readable(sock: socket.socket, timeout_s: float) -> bool:
    """Whether ``sock`` has data within ``timeout_s``.

    ``poll``, not ``select``: ``select`` refuses descriptors numbered 1024 and
    above, which a long-lived process holding many connections reaches.
    """
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(int(timeout_s * 1000)))
