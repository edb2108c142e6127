"""voip-flows.v2 messages for the sink's tests and benchmark.

Each flow batch's rows carry distinct ``bytes`` values (``base + i``), so a
duplicated row is visible as a repeated value, not only as a larger count.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.schemas import voipflows
from voipflow.schemas.flowbatch import ipv4_to_addr16

CITIES = ("Oslo", "Bergen", "Tromsø")
APPS = ("teams", "whatsapp", "sip")
ROLES = tuple(voipflows.ROLES)


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
        "role": pa.array([ROLES[k % len(ROLES)] for k in range(n)]),
        "is_voip": np.ones(n, dtype=np.uint8),
        "confidence": np.full(n, 0.9, dtype=np.float32),
        "evidence": np.full(n, 5, dtype=np.uint32),
        "classifier_version": pa.array(["test-1"] * n),
    }
    return voipflows.encode(voipflows.make_voip_batch(cols))
