"""Structured logs with a bounded rate.

Every process calls :func:`setup_logging` once. Library code (collectors,
streams) only uses ``logging.getLogger(__name__)`` and passes structured
fields with ``extra={...}``; the rate limit and the format are decided here,
so a flood of bad packets never floods the log.

:func:`tail` is the one way to quote the end of a log file in an error
(children, the local broker, tests).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RateLimitFilter(logging.Filter):
    """Pass at most ``rate_per_s`` records per second per (logger, template).

    Suppressed records are counted; the next record of that template that
    passes carries ``suppressed=N``.
    """

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        super().__init__()
        self.rate = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s * 2)
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL or self.rate <= 0:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10_000:  # bound memory against template explosions
                self._buckets.clear()
            bucket = self._buckets[key] = [self.burst, now, 0.0]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            bucket[2] += 1
            return False
        bucket[0] = tokens - 1.0
        if bucket[2]:
            record.suppressed = int(bucket[2])
            bucket[2] = 0
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extra:
            line += "  " + extra
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO", fmt: str = "text", rate_per_s: float = 5.0) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RateLimitFilter(rate_per_s))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries are chatty at INFO; their warnings still show.
    for noisy in ("kafka", "aiokafka", "faust", "mode", "chdb", "clickhouse_driver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file (from its last 64 KiB), or why there are none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"
