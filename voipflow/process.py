"""Process wiring: start components in order, stop them in reverse.

A component is anything with ``start()`` and ``stop()`` and a ``name``; its
constructor does no I/O, so a process can build all of them (validating their
configuration) before starting any. If a later ``start()`` fails, the ones
already started are stopped, in reverse, before the error propagates.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


@contextmanager
def running(components: Iterable[Component]) -> Iterator[list[Component]]:
    """Start ``components`` in order; on exit (or a failed start) stop in reverse."""
    started: list[Component] = []
    try:
        for comp in components:
            log.debug("starting %s", comp.name)
            comp.start()
            started.append(comp)
        yield started
    finally:
        for comp in reversed(started):
            try:
                comp.stop()
            except Exception:
                log.exception("stopping %s failed", comp.name)


def wait_for_signal(stop: threading.Event | None = None) -> int:
    """Block until SIGINT/SIGTERM (or ``stop`` is set); return the signal number."""
    stop = stop or threading.Event()
    got = [0]

    def handler(signum: int, _frame: object) -> None:
        got[0] = signum
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return got[0]
