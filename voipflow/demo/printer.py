"""The demo's output: progress lines stamped with the seconds since it started.

Everything the demo shows on standard output goes through one
:class:`Printer`, so its parts need no stream of their own and a test can
give them one to read back.
"""

from __future__ import annotations

import time
from typing import TextIO


class Printer:
    """Writes the demo's lines to ``out``; the clock starts when it is made."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()

    @property
    def elapsed_s(self) -> float:
        """Seconds since the printer was made (the start of the demo)."""
        return time.monotonic() - self.t0

    def say(self, msg: str) -> None:
        """A progress line, ``[  12.3s] msg``."""
        print(f"[{self.elapsed_s:6.1f}s] {msg}", file=self.out, flush=True)

    def line(self, text: str = "") -> None:
        """A line as it is: the report's table and summaries."""
        print(text, file=self.out, flush=True)
