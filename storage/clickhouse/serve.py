"""Which SQL endpoint, if any, a process that owns the embedded engine serves.

One function for the processes that hold chdb for long (the sink): the
HTTP interface of :mod:`voipflow.storage.clickhouse.http_server` when
``VOIPFLOW_CLICKHOUSE_HTTP_LISTEN`` is set and the engine is chdb; nothing
when it is empty, or when ``VOIPFLOW_CLICKHOUSE_URL`` names a server (which
serves its own HTTP interface).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from voipflow.storage.clickhouse.http_server import ClickHouseHTTPServer, HTTPServerError
from voipflow.storage.config import ClickHouseConfig

__all__ = ["ClickHouseHTTPServer", "HTTPServerError", "sql_endpoint"]

log = logging.getLogger(__name__)


def sql_endpoint(
    config: ClickHouseConfig, data_dir: Path | str, registry: CollectorRegistry | None = None
) -> list[ClickHouseHTTPServer]:
    """The components to start after the one that opens chdb (zero or one); their
    metrics go to ``registry``."""
    if not config.http_listen:
        return []
    if config.url:
        log.warning(
            "VOIPFLOW_CLICKHOUSE_HTTP_LISTEN is ignored: VOIPFLOW_CLICKHOUSE_URL names a "
            "ClickHouse server, which serves its own HTTP interface"
        )
        return []
    return [ClickHouseHTTPServer(config, Path(data_dir) / "clickhouse", registry)]
