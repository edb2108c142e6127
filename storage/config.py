"""Configuration of the ClickHouse backends and of the Kafka-to-ClickHouse sink."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator


def split_host_port(listen: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``[v6]:port``; ValueError when malformed."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ClickHouseConfig(BaseModel):
    #: ``clickhouse://user:password@host:9000/database`` for a server through
    #: the native protocol; empty for the embedded engine (chdb) in
    #: ``<data_dir>/clickhouse``.
    url: str = ""
    #: Database used by the embedded engine (a server's comes from ``url``).
    database: str = Field("voipflow", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    #: Seconds to wait for a server connection before counting it as down.
    connect_timeout_s: float = Field(5.0, gt=0)
    #: Seconds a statement may wait for the server's answer.
    timeout_s: float = Field(60.0, gt=0)
    #: Cluster name for ``voipflow db migrate``: when set, DDL is rendered
    #: ``ON CLUSTER`` with Replicated*MergeTree tables (``<name>_local``) behind
    #: Distributed tables of the plain names. Empty: one server or chdb.
    cluster: str = Field("", pattern=r"^([A-Za-z_][A-Za-z0-9_-]*)?$")
    #: Days ``flows_voip`` keeps VoIP flow records (0 = forever).
    flows_ttl_days: int = Field(90, ge=0)
    #: Days ``voip_usage_1m`` keeps per-minute usage (0 = forever).
    usage_1m_ttl_days: int = Field(35, ge=0)
    #: Days ``voip_usage_1h`` keeps hourly usage, and ``city_traffic_1h``,
    #: ``app_subscribers_1h``, ``city_subscribers_1h`` their hours (0 = forever).
    usage_1h_ttl_days: int = Field(400, ge=0)
    #: Days ``voip_usage_1d``, ``app_subscribers_1d``, ``city_subscribers_1d`` keep
    #: daily usage (0 = forever; dashboards read whole days of hourly ranges here,
    #: so keep them at least as long as the hourly tables).
    usage_1d_ttl_days: int = Field(0, ge=0)
    #: Days ``exporter_traffic_1m`` keeps per-minute traffic per exporter (0 = forever).
    traffic_1m_ttl_days: int = Field(90, ge=0)
    #: Days ``exporter_traffic_1h`` keeps hourly traffic per exporter (0 = forever).
    traffic_1h_ttl_days: int = Field(400, ge=0)
    #: Days ``exporter_traffic_1d`` keeps daily traffic per exporter (0 = forever).
    traffic_1d_ttl_days: int = Field(0, ge=0)
    #: Days ``exporter_health`` and ``pipeline_stats`` keep reports (0 = forever).
    health_ttl_days: int = Field(30, ge=0)
    #: Days ``rule_events`` keeps rule state changes (0 = forever).
    rule_events_ttl_days: int = Field(400, ge=0)
    #: Inserts per table whose deduplication tokens are remembered
    #: (``non_replicated_deduplication_window``/``replicated_deduplication_window``);
    #: a replayed batch older than this many inserts would be inserted again.
    dedup_window: int = Field(1000, ge=1)
    #: ``host:port`` where the process that owns the embedded engine (the sink)
    #: serves ClickHouse's HTTP interface, so that SQL clients, Grafana and
    #: ``voipflow db query`` can read while it runs; port 0 picks a free port
    #: (written to ``<data_dir>/clickhouse/http.json``). Empty: not served.
    http_listen: str = ""
    #: The one user the HTTP interface accepts (basic auth, or the
    #: X-ClickHouse-User/X-ClickHouse-Key headers).
    http_user: str = Field("default", min_length=1)
    #: That user's password; required when ``http_listen`` is not a loopback address.
    http_password: SecretStr = Field(SecretStr(""), validate_default=True)
    #: Served queries run with ClickHouse's ``readonly = 1``: no writes, no DDL,
    #: no table functions reading files or URLs. The process's own inserts are
    #: not affected.
    http_readonly: bool = True
    #: Queries that run at the same time; the others wait in the queue ...
    http_max_queries: int = Field(2, ge=1)
    #: ... of at most this many (a query beyond it is refused at once with
    #: ClickHouse's error 202) ...
    http_queue: int = Field(16, ge=0)
    #: ... for at most this many seconds.
    http_queue_timeout_s: float = Field(10.0, gt=0)
    #: ``max_execution_time`` of served queries, seconds.
    http_query_timeout_s: float = Field(60.0, gt=0)

    @field_validator("http_listen")
    @classmethod
    def _check_http_listen(cls, v: str) -> str:
        if v.strip():
            split_host_port(v)
        return v.strip()

    @field_validator("http_password")
    @classmethod
    def _check_http_password(cls, v: SecretStr, info: ValidationInfo) -> SecretStr:
        listen = info.data.get("http_listen") or ""
        if listen and not v.get_secret_value() and not is_loopback(split_host_port(listen)[0]):
            raise ValueError(
                f"empty while VOIPFLOW_CLICKHOUSE_HTTP_LISTEN={listen} accepts connections "
                "from other machines; set a password (or listen on 127.0.0.1)"
            )
        return v

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if v and not v.startswith(("clickhouse://", "clickhouses://")):
            raise ValueError("must start with clickhouse:// or clickhouses://")
        return v


class SinkConfig(BaseModel):
    #: Rows per ClickHouse insert at most ...
    batch_rows: int = Field(50000, ge=1)
    #: ... and at least one insert this often when rows are waiting. Batches
    #: are per topic partition, so a table receives up to one insert per
    #: partition per this delay.
    batch_delay_s: float = Field(1.0, gt=0)
    #: The same delay for the rows of closed windows (usage and traffic
    #: topics): a window's few rows are complete when they arrive, and the
    #: dashboards' newest minute waits for them.
    window_batch_delay_s: float = Field(0.2, gt=0)
    #: Kafka consumer group of the sinks.
    group_id: str = Field("voipflow-sink", min_length=1)
    #: Topics the sink consumes, comma separated, among the voip-flows, usage,
    #: traffic, exporter-health, rules and rule-events topics of ``[kafka]``;
    #: empty: all six.
    topics: str = ""
    #: Table the voip-flows topic fills (a plain name, in the configured database).
    flows_table: str = Field("flows_voip", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    #: First wait before retrying an insert that failed for a transient reason ...
    retry_initial_s: float = Field(0.5, gt=0)
    #: ... doubling up to this wait between retries (retries never give up).
    retry_max_s: float = Field(30.0, gt=0)
    #: Topic that receives messages the sink cannot insert (raw value, with
    #: headers naming the reason and origin); empty: bad messages are only
    #: counted and logged.
    dead_letter_topic: str = ""
    #: Seconds between rows of the sink's own counters (rows inserted, bad
    #: messages, retries, lag) in ``pipeline_stats``; 0 = never.
    stats_interval_s: float = Field(60.0, ge=0)
    #: Seconds without heartbeats after which the group gives a dead sink's
    #: partitions to another member (the broker allows 6 to 300 by default).
    session_timeout_s: float = Field(10.0, ge=1)
    #: Stop once the group gave this sink its partitions, everything they held
    #: when it started is committed, and nothing arrived for this many seconds
    #: after that (0 = run until stopped): for backfills and tests.
    exit_when_idle_s: float = Field(0.0, ge=0)
    #: Fault injection for tests: SIGKILL the sink process right after its
    #: N-th successful insert, before the offsets are committed (0 = never).
    fault_kill_after_inserts: int = Field(0, ge=0)

    @field_validator("retry_max_s")
    @classmethod
    def _check_retry(cls, v: float, info: ValidationInfo) -> float:
        initial = info.data.get("retry_initial_s")
        if initial is not None and v < initial:
            raise ValueError("must be at least retry_initial_s")
        return v
