"""Messages for sink tests: voip-flows batches, usage windows, health reports.

Flow batches are :func:`voipflow.evaluation.sinkdata.flow_batch` (the sink
benchmark uses them too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

# The sink tests import these from here; they live in the package.
from voipflow.evaluation.sinkdata import APPS as APPS
from voipflow.evaluation.sinkdata import CITIES as CITIES
from voipflow.evaluation.sinkdata import flow_batch as flow_batch
from voipflow.schemas import voipflows
from voipflow.schemas.flowbatch import ipv4_to_addr16


def usage_message(
    window_start_ms: int, city: str, app: str, flows: int, hashes: Iterable[int]
) -> bytes:
    hashes = list(hashes)
    return json.dumps(
        {
            "schema": "voip-usage.v1",
            "window_start_ms": window_start_ms,
            "window_s": 60,
            "city": city,
            "region": "R",
            "country": "NO",
            "app": app,
            "flows": flows,
            "packets": flows * 100,
            "bytes": flows * 10_000,
            "subscribers": len(set(hashes)),
            "subscriber_hashes": hashes,
            "call_seconds": float(flows * 30),
            "voip_share": 0.5,
            "produced_ms": window_start_ms + 90_000,
        }
    ).encode()


def health_message(ts_ms: int, exporter: str, records: int) -> bytes:
    return json.dumps(
        {
            "schema": "exporter-health.v1",
            "ts_ms": ts_ms,
            "collector": "host:1",
            "exporter": exporter,
            "observation_domain_id": 0,
            "netflow_version": 10,
            "packets": 1,
            "records": records,
            "bytes": 100,
            "decode_errors": 0,
            "templates": 1,
            "records_held": 0,
            "sequence_lost": 0,
            "exporter_restarts": 0,
            "sampling_rate": 1,
            "kernel_drops": 0,
        }
    ).encode()


def traffic_message(
    window_start_ms: int, exporter: str, domain: int = 0, flows: int = 10, **counters: int
) -> bytes:
    """A valid traffic.v1 window; counters not given derive from ``flows``."""
    values = {
        "flows": flows,
        "packets": flows * 20,
        "bytes": flows * 20 * 500,
        "packets_est": flows * 20,
        "bytes_est": flows * 20 * 500,
        "placed_flows": flows,
        "unlocated_flows": 0,
        "unhomed_flows": 0,
        "voip_flows": 0,
        "voip_bytes_est": 0,
    }
    values.update(counters)
    return json.dumps(
        {
            "schema": "traffic.v1",
            "window_start_ms": window_start_ms,
            "window_s": 60,
            "exporter": exporter,
            "observation_domain_id": domain,
            **values,
            "produced_ms": window_start_ms + 90_000,
        }
    ).encode()


def produce(
    bootstrap: str, topic: str, values: Iterable[bytes], partition: int | None = None
) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for k, value in enumerate(values):
            producer.send(topic, value=value, key=str(k).encode(), partition=partition)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def committed(bootstrap: str, group: str, topic: str) -> dict[int, Any]:
    """partition -> OffsetAndMetadata (or None) of ``group`` on ``topic``."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return {
            p: consumer.committed(TopicPartition(topic, p), metadata=True) for p in sorted(parts)
        }
    finally:
        consumer.close(autocommit=False)


def wait_until(check: Any, timeout_s: float, what: str, every_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def random_voip_batch(n: int, seed: int = 0) -> voipflows.VoipFlowBatch:
    """``n`` VoIP flows with random values in every column (for format tests)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    for name, (dt, _) in voipflows.VOIP_FLOW_COLUMNS.items():
        if dt == "S16":
            cols[name] = ipv4_to_addr16(rng.integers(0, 2**32, n, dtype=np.uint32))
        elif name == "role":
            cols[name] = pa.array(rng.choice(["", *voipflows.ROLES], n).tolist())
        elif dt == "str":
            cols[name] = pa.array(rng.choice(["Oslo", "Bergen", "teams", ""], n).tolist())
        elif dt == "f4":
            cols[name] = rng.random(n).astype(np.float32)
        else:
            cols[name] = rng.integers(0, np.iinfo(dt).max, n, dtype=dt, endpoint=True)
    return voipflows.make_voip_batch(cols)
