"""Queries over HTTP while the sink inserts a backlog at full speed (real Kafka, real chdb).

The sink and the HTTP interface share this process's chdb engine, as they do
in ``voipflow sink``: the sink inserts through its backend's connection, each
query gets a connection of its own. While the sink drains a backlog of flow
batches, clients keep querying through clickhouse-connect; at the end every
row is in exactly once and every query was answered.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.storage.sinkdata import committed, flow_batch, produce, wait_until
from voipflow.schemas.topics import KafkaConfig
from voipflow.storage.clickhouse.http_server import ClickHouseHTTPServer
from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions
from voipflow.storage.config import ClickHouseConfig, SinkConfig
from voipflow.storage.sink import Sink

clickhouse_connect = pytest.importorskip("clickhouse_connect")

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BATCHES, ROWS = 60, 2000


@pytest.fixture()
def server(chdb_dir: Path) -> Iterator[ClickHouseHTTPServer]:
    cfg = ClickHouseConfig(http_listen="127.0.0.1:0", http_max_queries=2)
    srv = ClickHouseHTTPServer(cfg, chdb_dir)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _querier(url: str, database: str, stop: threading.Event, out: dict[str, Any]) -> None:
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, database=database)
    try:
        while not stop.is_set():
            asked = time.monotonic()
            try:
                rows, distinct = client.query(
                    "SELECT count(), uniqExact(bytes) FROM flows_voip"
                ).result_rows[0]
                per_city = client.query(
                    "SELECT city, app, count() FROM flows_voip GROUP BY city, app ORDER BY ALL"
                ).result_rows
            except Exception as exc:  # collected, asserted on below
                out["errors"].append(repr(exc))
                continue
            out["answers"].append((rows, distinct, sum(r[2] for r in per_city), asked))
    finally:
        client.close()


def test_queries_answer_while_the_sink_inserts_and_no_row_is_lost_or_doubled(
    kafka_bootstrap: str, kafka_topic_factory: Any, chdb: Any, tmp_path: Path, server: Any
) -> None:
    Migrator(chdb, RenderOptions.from_config(ClickHouseConfig(), chdb.database)).migrate()
    topic = kafka_topic_factory(4, prefix="voip-flows")
    kafka = KafkaConfig(voip_flows_topic=topic)
    produce(kafka_bootstrap, topic, [flow_batch(ROWS, base=k * ROWS) for k in range(BATCHES)])
    total = BATCHES * ROWS

    stop = threading.Event()
    out: dict[str, Any] = {"answers": [], "errors": []}
    queriers = [
        threading.Thread(target=_querier, args=(server.url, chdb.database, stop, out))
        for _ in range(2)
    ]
    for t in queriers:
        t.start()
    config = SinkConfig(
        group_id="sink-" + os.urandom(4).hex(),
        topics=topic,
        batch_rows=5000,
        batch_delay_s=0.2,
    )
    sink = Sink(config, kafka, ClickHouseConfig(), tmp_path, bootstrap=kafka_bootstrap, ch=chdb)
    sink.start()
    try:
        wait_until(
            lambda: (
                sum(
                    (o.offset if o is not None else 0)
                    for o in committed(kafka_bootstrap, config.group_id, topic).values()
                )
                == BATCHES
            ),
            120,
            "the sink to commit every batch",
            every_s=0.5,
        )
        # Only a query asked after the last commit must see every row: one
        # asked before it may still be answering when the commit lands.
        committed_at = time.monotonic()
        wait_until(
            lambda: sum(a[3] >= committed_at for a in list(out["answers"])) >= 4,
            60,
            "answers to queries asked after the inserts",
        )
    finally:
        stop.set()
        for t in queriers:
            t.join(60)
        sink.stop()

    assert out["errors"] == []
    assert chdb.query("SELECT count(), uniqExact(bytes) FROM flows_voip").rows == [(total, total)]
    assert sink.rows_inserted.get("flows_voip") == total
    # Every answer is a consistent prefix of the inserts: never more rows than
    # sent, never a row twice, and the grouped count agrees with the total.
    assert all(rows <= total and distinct == rows for rows, distinct, _, _ in out["answers"])
    assert all(grouped >= rows for rows, _, grouped, _ in out["answers"])
    after = [rows for rows, _, _, asked in out["answers"] if asked >= committed_at]
    assert after and all(rows == total for rows in after)
