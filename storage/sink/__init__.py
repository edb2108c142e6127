"""The ClickHouse sink: Kafka topics -> batched, idempotent, columnar inserts.

Parts:

* :mod:`voipflow.storage.sink.loop` — :class:`Sink`, the consume / insert / commit loop;
* :mod:`voipflow.storage.sink.replay` — exactly once: intents, deduplication tokens,
  replays cut at the same offsets, first copies of re-published windows;
* :mod:`voipflow.storage.sink.targets` — the tables written: checked at start, fitted per insert;
* :mod:`voipflow.storage.sink.stats` — the sink's counters as ``pipeline_stats`` rows;
* :mod:`voipflow.storage.sink.tables` — what each topic's messages become in which
  table (pure functions, no I/O);
* :mod:`voipflow.storage.sink.metrics` — :class:`SinkMetrics` over a given registry;
* :mod:`voipflow.storage.sink.errors` — the exception tree.
"""

from __future__ import annotations

from voipflow.storage.clickhouse import SchemaError
from voipflow.storage.sink.errors import SinkError, SinkStopped
from voipflow.storage.sink.loop import Sink
from voipflow.storage.sink.metrics import SinkMetrics

__all__ = ["SchemaError", "Sink", "SinkError", "SinkMetrics", "SinkStopped"]
