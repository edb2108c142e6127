"""Which evaluator owns a city: the one function that maps a city to a partition.

voip-usage.v1 is keyed by window (``city|app|window_start``), so one city's
windows lie on several of its partitions. The evaluator re-keys every window
into its own scopes topic on the partition :func:`scope_partition` gives for
the window's city; its state topic has as many partitions, and a state entry
lives on its city's partition too. So the evaluator that the consumer group
gives scopes partition ``p`` holds every window and every rule of the cities
of ``p``, and restores exactly state partition ``p``.

The hash must be stable across processes, hosts and Python versions (never
the built-in ``hash``, which is salted per process): CRC-32 of the UTF-8 name.
"""

from __future__ import annotations

import zlib


def scope_partition(city: str, partitions: int) -> int:
    """The partition of ``city``'s usage windows and state among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    return zlib.crc32(city.encode("utf-8")) % partitions
