"""Where decoded flow batches go: Kafka (the default), JSON lines, or nowhere.

Every output takes whole batches (already accumulated to
``batch_max_records`` / ``batch_max_delay_ms``) and health reports:

* :class:`KafkaOutput` splits a batch by exporter, encodes each part as
  ``flows.v1`` messages keyed by the exporter's address text and hands them
  to the :class:`~collectors.publisher.Publisher`; health reports go to the
  health topic as JSON, keyed the same way.
* :class:`JsonlOutput` writes one JSON object per record (the flows.v1
  column names; addresses as text; extra ``ie_*`` columns as hex) to a file
  or stdout, for operators looking at what an exporter sends and for
  differential tests. Health reports are logged.
* :class:`NullOutput` counts and discards: decoding cost alone, for
  benchmarks.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, Any, Protocol

import numpy as np
import pyarrow as pa

from voipflow.collectors.batching import MessageEncoder, exporter_ranges
from voipflow.collectors.metrics import CollectorMetrics
from voipflow.collectors.publisher import Publisher
from voipflow.schemas.flowbatch import FLOW_COLUMNS, SCHEMA_NAME, FlowBatch, addr_to_text

log = logging.getLogger(__name__)


class Output(Protocol):
    name: str

    def start(self) -> None: ...

    def write(self, batch: FlowBatch) -> None: ...

    def health(self, reports: list[dict[str, Any]]) -> None: ...

    def poll(self) -> None: ...

    def stop(self) -> None: ...


class KafkaOutput:
    """Flow batches to ``flows_topic``, health reports to ``health_topic``."""

    name = "kafka-output"

    def __init__(
        self,
        publisher: Publisher,
        flows_topic: str,
        health_topic: str,
        *,
        max_message_bytes: int,
        max_records: int,
        stop_timeout_s: float = 20.0,
        metrics: CollectorMetrics | None = None,
        arrow_compression: str | None = None,
    ) -> None:
        self.publisher = publisher
        self.metrics = metrics
        self._seen: dict[str, int] = {}
        self.flows_topic = flows_topic
        self.health_topic = health_topic
        self.max_message_bytes = max_message_bytes
        self.max_records = max_records
        self._encoder = MessageEncoder(max_message_bytes, max_records, arrow_compression)
        self.stop_timeout_s = stop_timeout_s
        self._headers = [("schema", SCHEMA_NAME.encode())]
        self._health_headers = [("schema", b"exporter-health.v1")]
        self._keys: dict[bytes, bytes] = {}

    def _key(self, addr16: bytes) -> bytes:
        key = self._keys.get(addr16)
        if key is None:
            if len(self._keys) > 65536:
                self._keys.clear()
            key = self._keys[addr16] = addr_to_text(addr16).encode()
        return key

    def start(self) -> None:
        self.publisher.start()

    def write(self, batch: FlowBatch) -> None:
        # Rows grouped by exporter once, converted to Arrow once; each
        # exporter's messages are cut from slices of that.
        grouped, ranges = exporter_ranges(batch)
        rb = grouped.to_arrow()
        for exporter, start, end in ranges:
            key = self._key(exporter)
            part = rb if end - start == rb.num_rows else rb.slice(start, end - start)
            for value, n in self._encoder.encode(part):
                self.publisher.publish(
                    self.flows_topic, key, value, records=n, headers=self._headers
                )

    def health(self, reports: list[dict[str, Any]]) -> None:
        for rep in reports:
            self.publisher.publish(
                self.health_topic,
                rep["exporter"].encode(),
                json.dumps(rep, separators=(",", ":")).encode(),
                headers=self._health_headers,
            )

    def poll(self) -> None:
        self.publisher.pump()
        self._sync_metrics()

    def _sync_metrics(self) -> None:
        """Move the publisher's totals into Prometheus as increments."""
        m = self.metrics
        if m is None:
            return
        c = self.publisher.counters
        now = {
            "records": c.delivered_records,
            "dropped_records": c.dropped_records,
            "dropped_messages": c.dropped_messages,
        }
        for name, n in list(c.errors.items()):
            now["error:" + name] = n
        seen = self._seen
        m.kafka_records.inc(now["records"] - seen.get("records", 0))
        m.buffer_dropped_records.inc(now["dropped_records"] - seen.get("dropped_records", 0))
        m.buffer_dropped_messages.inc(now["dropped_messages"] - seen.get("dropped_messages", 0))
        for key, n in now.items():
            if key.startswith("error:") and n > seen.get(key, 0):
                m.kafka_errors.labels(key[6:]).inc(n - seen.get(key, 0))
        m.buffer_bytes.set(self.publisher.buffered_bytes)
        self._seen = now

    def stop(self) -> None:
        self.publisher.stop(self.stop_timeout_s)
        self._sync_metrics()


def _texts(addr: np.ndarray) -> list[str]:
    uniq, inverse = np.unique(addr, return_inverse=True)
    names = [addr_to_text(bytes(u)) for u in uniq]
    return [names[i] for i in inverse.tolist()]


def records_as_dicts(batch: FlowBatch) -> list[dict[str, Any]]:
    """Rows of ``batch`` as JSON-ready dicts (addresses as text, binary as hex)."""
    names: list[str] = []
    cols: list[list[Any]] = []
    for name, (dt, _) in FLOW_COLUMNS.items():
        col = batch.columns[name]
        if dt == "S16":
            cols.append(_texts(np.asarray(col)))
        elif isinstance(col, pa.Array):
            cols.append(col.to_pylist())
        else:
            cols.append(np.asarray(col).tolist())
        names.append(name)
    for name, arr in batch.extras.items():
        values = arr.to_pylist()
        if pa.types.is_binary(arr.type) or pa.types.is_fixed_size_binary(arr.type):
            values = [v.hex() if v is not None else None for v in values]
        cols.append(values)
        names.append(name)
    return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]


class JsonlOutput:
    """One JSON object per record, one per line, to ``path`` (``-`` = stdout)."""

    name = "jsonl-output"

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self.records = 0

    def start(self) -> None:
        if self.path == "-":
            self._file = sys.stdout
        else:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, batch: FlowBatch) -> None:
        if self._file is None or not batch.num_rows:
            return
        lines = [json.dumps(r, separators=(",", ":")) for r in records_as_dicts(batch)]
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        self.records += batch.num_rows

    def health(self, reports: list[dict[str, Any]]) -> None:
        for rep in reports:
            log.info("exporter health", extra=rep)

    def poll(self) -> None:
        pass

    def stop(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self._file is not sys.stdout:
                self._file.close()
            self._file = None


class NullOutput:
    """Counts records and drops them (decoding cost alone)."""

    name = "null-output"

    def __init__(self) -> None:
        self.records = 0

    def start(self) -> None:
        pass

    def write(self, batch: FlowBatch) -> None:
        self.records += batch.num_rows

    def health(self, reports: list[dict[str, Any]]) -> None:
        for rep in reports:
            log.info("exporter health", extra=rep)

    def poll(self) -> None:
        pass

    def stop(self) -> None:
        pass
