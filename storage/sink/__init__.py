"""The ClickHouse sink: Kafka topics -> batched, idempotent, columnar inserts.

Parts:

* :mod:`storage.sink.loop` — :class:`Sink`, the consume / insert / commit loop;
* :mod:`storage.sink.replay` — exactly once: intents, deduplication tokens,
  replays cut at the same offsets, first copies of re-published windows;
* :mod:`storage.sink.targets` — the tables written: checked at start, fitted per insert;
* :mod:`storage.sink.stats` — the sink's counters as ``pipeline_stats`` rows;
* :mod:`storage.sink.tables` — what each topic's messages become in which
  table (pure functions, no I/O);
* :mod:`storage.sink.metrics` — :class:`SinkMetrics` over a given registry;
* :mod:`storage.sink.errors` — the exception tree.
"""

from __future__ import annotations

from storage.clickhouse import SchemaError
from storage.sink.errors import SinkError, SinkStopped
from storage.sink.loop import Sink
from storage.sink.metrics import SinkMetrics

__all__ = ["SchemaError", "Sink", "SinkError", "SinkMetrics", "SinkStopped"]
