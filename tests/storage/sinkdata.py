"""Messages for sink tests: voip-flows batches, usage windows, health reports.

Each flow batch's rows carry distinct ``bytes`` values (``base + i``), so a
duplicated row is visible as a repeated value, not only as a larger count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from schemas import voipflows
from schemas.flowbatch import ipv4_to_addr16

CITIES = ("Oslo", "Bergen", "Tromsø")
APPS = ("teams", "whatsapp", "sip")


def flow_batch(n: int, base: int, now_ms: int | None = None) -> bytes:
    """``n`` VoIP flows; ``bytes`` runs base .. base+n-1."""
    now_ms = now_ms or int(time.time() * 1000)
    i = np.arange(n, dtype=np.uint64)
    cols: dict[str, Any] = {
        "time_received_ms": np.full(n, now_ms, dtype=np.uint64),
        "flow_start_ms": np.full(n, now_ms - 60_000, dtype=np.uint64),
        "flow_end_ms": np.full(n, now_ms - 1_000, dtype=np.uint64),
        "exporter_addr": ipv4_to_addr16(np.full(n, 0xC0000201, dtype=np.uint32)),
        "observation_domain_id": np.zeros(n, dtype=np.uint32),
        "ip_version": np.full(n, 4, dtype=np.uint8),
        "subscriber_addr": ipv4_to_addr16((0x0A000000 + (i % 5000)).astype(np.uint32)),
        "peer_addr": ipv4_to_addr16(np.full(n, 0x34700001, dtype=np.uint32)),
        "subscriber_port": (40000 + i % 1000).astype(np.uint16),
        "peer_port": np.full(n, 3478, dtype=np.uint16),
        "protocol": np.full(n, 17, dtype=np.uint8),
        "direction": (i % 2).astype(np.uint8),
        "packets": np.full(n, 10, dtype=np.uint64),
        "bytes": base + i,
        "reverse_packets": np.zeros(n, dtype=np.uint64),
        "reverse_bytes": np.zeros(n, dtype=np.uint64),
        "sampling_rate": np.ones(n, dtype=np.uint32),
        "city": pa.array([CITIES[k % 3] for k in range(n)]),
        "region": pa.array(["R"] * n),
        "country": pa.array(["NO"] * n),
        "peer_asn": np.full(n, 8075, dtype=np.uint32),
        "app": pa.array([APPS[k % 3] for k in range(n)]),
        "is_voip": np.ones(n, dtype=np.uint8),
        "confidence": np.full(n, 0.9, dtype=np.float32),
        "evidence": np.full(n, 5, dtype=np.uint32),
        "classifier_version": pa.array(["test-1"] * n),
    }
    return voipflows.encode(voipflows.make_voip_batch(cols))


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
        elif dt == "str":
            cols[name] = pa.array(rng.choice(["Oslo", "Bergen", "teams", ""], n).tolist())
        elif dt == "f4":
            cols[name] = rng.random(n).astype(np.float32)
        else:
            cols[name] = rng.integers(0, np.iinfo(dt).max, n, dtype=dt, endpoint=True)
    return voipflows.make_voip_batch(cols)
