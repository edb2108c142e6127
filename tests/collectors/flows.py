"""Random flow columns the encoder and decoder tests share, and their clock.

Every column of flows.v1 with values a v5/v9/IPFIX export can carry, so a
round trip through an encoder and a decoder must give them back exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voipflow.schemas.flowbatch import ipv4_to_addr16

T0 = 1_700_000_000_000
BOOT = T0 - 5 * 86_400_000  # five days of uptime


def random_flows(n: int, seed: int, v6_share: float = 0.0, v5: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    is_v6 = rng.random(n) < v6_share
    src = ipv4_to_addr16(rng.integers(1, 2**32 - 1, n, dtype=np.uint32))
    dst = ipv4_to_addr16(rng.integers(1, 2**32 - 1, n, dtype=np.uint32))
    k = int(is_v6.sum())
    if k:
        raw = rng.integers(0, 256, (2 * k, 16), dtype=np.uint8)
        raw[:, 0] = 0x20  # global unicast, never IPv4-mapped
        v6 = raw.view("S16").reshape(-1)
        src[is_v6], dst[is_v6] = v6[:k], v6[k:]
    protocol = rng.choice([6, 17, 1, 47], n)
    protocol[(protocol == 1) & is_v6] = 58
    src_port = rng.integers(0, 65536, n)
    dst_port = rng.integers(0, 65536, n)
    # no ports but for TCP and UDP; ICMP type * 256 + code in the destination
    # port, as exporters do
    portless = ~np.isin(protocol, (6, 17))
    src_port[portless] = dst_port[portless] = 0
    icmp = np.isin(protocol, (1, 58))
    dst_port[icmp] = rng.choice([0, 3 * 256 + 1, 8 * 256, 11 * 256], int(icmp.sum()))
    start = T0 + rng.integers(0, 60_000, n)
    big = 2**32 - 1 if v5 else 2**40
    cols: dict[str, Any] = {
        "ip_version": np.where(is_v6, 6, 4).astype(np.uint8),
        "src_addr": src,
        "dst_addr": dst,
        "src_port": src_port,
        "dst_port": dst_port,
        "protocol": protocol,
        "tcp_flags": np.where(protocol == 6, rng.integers(0, 64, n), 0),
        "tos": rng.integers(0, 256, n),
        "packets": rng.integers(1, 5000, n),
        "bytes": rng.integers(40, big, n),
        "input_if": rng.integers(0, 2**16 if v5 else 2**32, n),
        "output_if": rng.integers(0, 2**16 if v5 else 2**32, n),
        "src_as": rng.integers(0, 2**16 if v5 else 2**32, n),
        "dst_as": rng.integers(0, 2**16 if v5 else 2**32, n),
        "flow_start_ms": start,
        "flow_end_ms": start + rng.integers(0, 120_000, n),
    }
    return cols
