"""Where the chaos run looks for its flows: traffic.v1, chdb, clickhouse-server; and its disk.

* :func:`read_traffic` sums the flows of ``traffic.v1`` windows, first copy per
  (exporter, window, observation domain), as the sink keeps them.
* :func:`read_chdb` reads the flow ids of ``flows_voip`` and the usage rows of
  the sink's embedded engine once the sink has stopped.
* :class:`NativeStore` is a database on Debian's clickhouse-server 18.16 with a
  flows table in the old syntax that carries the Kafka offsets (18.16 has no
  deduplication tokens, see :mod:`voipflow.storage.sink.replay`).
* :class:`Disk` is a small tmpfs under the sink's chdb directory that can be
  filled to the last byte and emptied again (needs root).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from voipflow.evaluation.chaos_load import ChaosLoad
from voipflow.settings import Settings, load_settings

#: The flows table on clickhouse-server 18.16 (no IPv6 type, no LowCardinality).
NATIVE_TABLE = """
CREATE TABLE {db}.flows_simple (
    d Date DEFAULT toDate(time_received),
    time_received DateTime,
    subscriber_addr FixedString(16),
    subscriber_port UInt16,
    city String,
    app String,
    packets UInt64,
    bytes UInt64,
    kafka_partition UInt32,
    kafka_offset UInt64
) ENGINE = MergeTree(d, (kafka_partition, kafka_offset), 8192)
"""


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` is ``env`` inside (settings are read from the environment only)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_of(env: Mapping[str, str]) -> Settings:
    with environment(env):
        return load_settings(None)


def migrate_chdb(env: Mapping[str, str], data_dir: Path, cities: Path) -> None:
    """The schema and the city table in ``<data_dir>/clickhouse``, as the demo makes them."""
    from voipflow.demo.database import ClickHouseSchema

    ClickHouseSchema(settings_of(env), data_dir, cities).start()


def read_chdb(
    env: Mapping[str, str], data_dir: Path, load: ChaosLoad
) -> tuple[np.ndarray, int, int]:
    """(flow id of every ``flows_voip`` row, usage rows, flows counted by usage rows)."""
    from voipflow.demo.database import opened

    settings = settings_of(env)
    with opened(settings, data_dir) as ch:
        rows = ch.query(
            "SELECT IPv4StringToNum(replaceOne(toString(subscriber_addr), '::ffff:', '')), "
            f"subscriber_port FROM {settings.sink.flows_table}"
        ).rows
        usage = ch.query("SELECT count(), sum(flows) FROM voip_usage_1m").rows[0]
    addr = np.array([r[0] for r in rows], dtype=np.uint32)
    port = np.array([r[1] for r in rows], dtype=np.int64)
    return load.ids_of(addr, port), int(usage[0]), int(usage[1] or 0)


def read_traffic(bootstrap: str, topic: str) -> tuple[int, int]:
    """(flows, VoIP flows) of the first copy of every ``traffic.v1`` window."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=8000,
    )
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    try:
        for m in consumer:
            msg = json.loads(m.value)
            key = (msg["exporter"], msg["window_start_ms"], msg["observation_domain_id"])
            seen.setdefault(key, msg)
    finally:
        consumer.close()
    return (
        sum(int(m["flows"]) for m in seen.values()),
        sum(int(m.get("voip_flows", 0)) for m in seen.values()),
    )


class NativeStore:
    """A fresh database with ``flows_simple`` on a clickhouse-server (:mod:`.chserver`)."""

    def __init__(self, server: Any, topic: str) -> None:
        self.server = server
        self.topic = topic
        self.db = "chaos_" + os.urandom(4).hex()

    def _client(self) -> Any:
        from clickhouse_driver import Client

        return Client("127.0.0.1", port=self.server.tcp_port)

    def create(self) -> None:
        client = self._client()
        client.execute(f"CREATE DATABASE {self.db}")
        client.execute(NATIVE_TABLE.format(db=self.db))
        client.disconnect()

    def env(self) -> dict[str, str]:
        return {
            "VOIPFLOW_CLICKHOUSE_URL": f"clickhouse://127.0.0.1:{self.server.tcp_port}/{self.db}",
            "VOIPFLOW_SINK_FLOWS_TABLE": "flows_simple",
            "VOIPFLOW_SINK_TOPICS": self.topic,
        }

    def ids(self, load: ChaosLoad) -> np.ndarray:
        client = self._client()
        rows = client.execute(
            "SELECT IPv4StringToNum(replaceOne(IPv6NumToString(subscriber_addr), '::ffff:', '')), "
            f"subscriber_port FROM {self.db}.flows_simple"
        )
        client.execute(f"DROP DATABASE IF EXISTS {self.db}")
        client.disconnect()
        addr = np.array([r[0] for r in rows], dtype=np.uint32)
        port = np.array([r[1] for r in rows], dtype=np.int64)
        return load.ids_of(addr, port)


class Disk:
    """A tmpfs of ``size_mb`` mounted on ``path``: :meth:`fill` leaves no byte free."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.filler = path / "chaos-filler"
        self.mounted = False

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )
        self.mounted = True

    def free_mb(self) -> float:
        return shutil.disk_usage(self.path).free / 1e6

    def fill(self) -> None:
        block = b"\0" * (1 << 20)
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (1 << 20, 4096, 1):
                while True:
                    try:
                        os.write(fd, block[:size])
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def clear(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
            self.mounted = False


class LagProbe:
    """Uncommitted messages of a group, with short timeouts (a broker may be dead)."""

    def __init__(self, bootstrap: str, timeout_ms: int = 5000) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        self.timeout_ms = timeout_ms
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            request_timeout_ms=timeout_ms * 2,
        )

    def lag(self, group: str, topics: list[str]) -> int:
        from kafka import TopicPartition

        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self.consumer.partitions_for_topic(t) or ())
        ]
        ends = self.consumer.end_offsets(tps, timeout_ms=self.timeout_ms) if tps else {}
        committed = self.admin.list_group_offsets(group).get(group, {})
        total = 0
        for tp, end in ends.items():
            om = committed.get(tp)
            total += max(0, end - (om.offset if om is not None and om.offset >= 0 else 0))
        return total

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()
        with contextlib.suppress(Exception):
            self.admin.close()
