"""The sink's own counters as rows of ``pipeline_stats``.

Every ``stats_interval_s`` the sink writes its counters since start (rows
inserted per table, bad messages per topic and reason, transient errors,
lag per partition) one row each, so the figures survive in ClickHouse beside
the data they describe. Best effort: a table without the columns disables
the writer at start, a permanent error disables it, a transient one skips a
round.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.storage.clickhouse import ClickHouse, ClickHouseError, PermanentError
from voipflow.storage.clickhouse.base import quote_literal

log = logging.getLogger(__name__)

STATS_TABLE = "pipeline_stats"
STATS_COLUMNS = ("ts", "component", "instance", "metric", "labels", "value")

#: One row: metric name, its labels, its value.
StatsRow = tuple[str, dict[str, Any], float]


def stats_rows(
    rows_inserted: Mapping[str, int],
    bad_messages: Mapping[tuple[str, str], int],
    transient_errors: int,
    lags: Mapping[tuple[str, int], int],
) -> list[StatsRow]:
    """The rows of one report, from the sink's counters and its partitions' lag."""
    rows: list[StatsRow] = [
        ("rows_inserted", {"table": t}, float(n)) for t, n in rows_inserted.items()
    ]
    rows += [
        ("bad_messages", {"topic": topic, "reason": reason}, float(n))
        for (topic, reason), n in bad_messages.items()
    ]
    rows.append(("transient_errors", {}, float(transient_errors)))
    rows += [
        ("lag", {"topic": topic, "partition": partition}, float(lag))
        for (topic, partition), lag in lags.items()
    ]
    return rows


class StatsWriter:
    """Writes :func:`stats_rows` to ``pipeline_stats`` every ``interval_s`` (0: never)."""

    def __init__(self, ch: ClickHouse, instance: str, interval_s: float) -> None:
        self.ch = ch
        self.instance = instance
        self.interval_s = interval_s
        self.enabled = False
        self._due = 0.0

    def check_table(self) -> None:
        """Enable the writer when ``pipeline_stats`` has the columns it writes."""
        if not self.interval_s:
            return
        res = self.ch.query(
            "SELECT name FROM system.columns "
            f"WHERE database = currentDatabase() AND table = {quote_literal(STATS_TABLE)}"
        )
        self.enabled = set(STATS_COLUMNS) <= {str(r[0]) for r in res.rows}
        self._due = time.monotonic() + self.interval_s

    def due(self) -> bool:
        return self.enabled and time.monotonic() >= self._due

    def write(self, rows: list[StatsRow]) -> None:
        """Counters since start, one row each, into ``pipeline_stats`` (best effort)."""
        self._due = time.monotonic() + self.interval_s
        n = len(rows)
        now = np.datetime64(int(time.time()), "s")
        try:
            self.ch.insert(
                STATS_TABLE,
                {
                    "ts": np.full(n, now, dtype="datetime64[s]"),
                    "component": pa.array(["sink"] * n),
                    "instance": pa.array([self.instance] * n),
                    "metric": pa.array([r[0] for r in rows]),
                    "labels": pa.array([json.dumps(r[1], sort_keys=True) for r in rows]),
                    "value": np.array([r[2] for r in rows], dtype=np.float64),
                },
            )
        except PermanentError as exc:
            self.enabled = False
            log.warning("pipeline stats disabled", extra={"error": str(exc)[:200]})
        except ClickHouseError as exc:
            log.warning("pipeline stats not written", extra={"error": str(exc)[:200]})
