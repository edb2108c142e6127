"""chdb on a full disk: the insert is refused (DiskFull, transient), never silently lost.

chdb 3 returns from an insert on a full disk without an error and keeps none
of its rows; the embedded backend checks the free space first. The disk is
a real tmpfs the test mounts (root is needed; without it the test is skipped
and says so).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voipflow.evaluation.chaos_store import Disk
from voipflow.storage.clickhouse.embedded import EmbeddedClickHouse
from voipflow.storage.clickhouse.errors import DiskFull


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    disk = Disk(tmp_path / "mnt", size_mb=96)
    try:
        disk.mount()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {exc}")
    try:
        yield disk
    finally:
        disk.clear()
        disk.unmount()


def _rows(start: int, n: int) -> dict[str, np.ndarray]:
    return {"a": np.arange(start, start + n, dtype=np.uint64), "b": np.full(n, "y" * 40, object)}


@pytest.mark.slow
def test_insert_on_a_full_disk_is_refused_and_goes_in_once_space_is_back(
    small_disk: Disk,
) -> None:
    ch = EmbeddedClickHouse(small_disk.path / "db", "default")
    try:
        ch.execute("CREATE TABLE default.x (a UInt64, b String) ENGINE = MergeTree ORDER BY a")
        ch.insert("x", _rows(0, 1000))
        small_disk.fill()
        with pytest.raises(DiskFull) as err:
            ch.insert("x", _rows(1000, 1000))
        assert err.value.transient and str(small_disk.path / "db") in str(err.value)
        assert ch.query("SELECT count() FROM default.x").rows == [(1000,)]
        small_disk.clear()
        ch.insert("x", _rows(1000, 1000))
        assert ch.query("SELECT count() FROM default.x").rows == [(2000,)]
    finally:
        ch.close()
