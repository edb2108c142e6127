"""Configuration of the worker (Faust app), the sinks, Kafka and ClickHouse."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator


class KafkaConfig(BaseModel):
    #: Bootstrap servers, comma separated. Empty: use the local broker that
    #: ``voipflow kafka start`` runs (its address is in the data directory).
    bootstrap: str = ""
    #: Partitions of the topics voipflow creates.
    partitions: int = Field(4, ge=1)
    #: Replication factor of the topics voipflow creates (3 in production).
    replication_factor: int = Field(1, ge=1)
    #: ``min.insync.replicas`` of the topics voipflow creates: with producers'
    #: acks=all, a write is acknowledged once this many replicas have it (2 with
    #: replication factor 3). 0 leaves the broker's default.
    min_insync_replicas: int = Field(0, ge=0)
    #: Compression of produced messages.
    compression: Literal["none", "gzip", "lz4", "zstd"] = "lz4"
    #: Flow batches from the collectors (schemas/flowbatch.py).
    flows_topic: str = "flows.v1"
    #: Classified VoIP flows from the workers (schemas/voipflows.py).
    voip_flows_topic: str = "voip-flows.v1"
    #: Closed usage windows per city and app (schemas/json/voip-usage.v1.json).
    usage_topic: str = "voip-usage.v1"
    #: Closed traffic windows per exporter, all flows (schemas/json/traffic.v1.json).
    traffic_topic: str = "traffic.v1"
    #: Rules for enforcement points.
    rules_topic: str = "rules.v1"
    #: Enforcement points' feedback on rules.
    feedback_topic: str = "rules-feedback.v1"
    #: Per-exporter health reports from the collectors.
    health_topic: str = "exporter-health.v1"

    @field_validator("min_insync_replicas")
    @classmethod
    def _check_min_isr(cls, v: int, info: ValidationInfo) -> int:
        rf = info.data.get("replication_factor")
        if rf is not None and v > rf:
            raise ValueError(
                f"must not exceed replication_factor ({rf}): no write could ever be acknowledged"
            )
        return v

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, v: str) -> str:
        for server in filter(None, (s.strip() for s in v.split(","))):
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server!r}")
        return v


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
    #: Days ``voip_usage_1h`` keeps hourly usage (0 = forever).
    usage_1h_ttl_days: int = Field(400, ge=0)
    #: Days ``voip_usage_1d`` keeps daily usage (0 = forever).
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

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if v and not v.startswith(("clickhouse://", "clickhouses://")):
            raise ValueError("must start with clickhouse:// or clickhouses://")
        return v


class WorkerConfig(BaseModel):
    #: Faust application id: the consumer group and the prefix of its
    #: internal topics.
    app_id: str = "voipflow"
    #: Width of the usage windows, seconds. It must divide an hour (1-6, 10,
    #: 12, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, ...) so that every
    #: window lies inside one hour and one day of the ClickHouse rollups.
    window_s: int = Field(60, ge=1, le=3600)
    #: Seconds after a window's end during which late records still update it;
    #: records later than that are counted (``late_records``) and dropped.
    lateness_s: int = Field(30, ge=0)
    #: How often the worker looks for idle cities whose windows must close.
    close_interval_s: float = Field(1.0, gt=0)
    #: Windows close on event time (the city's newest flow end). A city that
    #: received nothing for this long has its event time advanced by the wall
    #: clock, so its last windows still close.
    idle_close_s: float = Field(120.0, gt=0)
    #: The operator's subscriber address space, comma-separated CIDRs. The side
    #: of a flow inside it is the subscriber; flows with neither side inside
    #: are counted, not guessed.
    home_networks: str = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    #: Operator prefix table (CSV ``prefix,city,region,country,lat,lon``) that
    #: places subscriber prefixes in cities; longest prefix wins. Empty: none.
    prefix_table: Path | None = None
    #: MaxMind/DB-IP City database (mmdb), consulted for subscribers that the
    #: prefix table does not place. Empty: none.
    mmdb_path: Path | None = None
    #: Exporter -> city table (CSV ``exporter,city,region,country,lat,lon``;
    #: ``exporter`` is an address or prefix), the last resort. Empty: none.
    exporter_city_table: Path | None = None
    #: Seconds between checks of the tables' modification times; a changed
    #: table is reloaded without a restart.
    table_reload_s: float = Field(10.0, gt=0)
    #: Folder of provider address range files (``<provider>.txt``); empty: the
    #: ranges shipped in ``data/providers``.
    provider_dir: Path | None = None
    #: Confidence from which a flow counts as VoIP.
    voip_threshold: float = Field(0.5, gt=0, le=1)
    #: Publish classified VoIP flows to the voip-flows topic.
    publish_voip_flows: bool = True
    #: Fault injection for tests: after its N-th flows batch, the worker commits
    #: its acked offsets and SIGKILLs itself right then (0 = never).
    fault_kill_after_batches: int = Field(0, ge=0)

    @field_validator("window_s")
    @classmethod
    def _check_window(cls, v: int) -> int:
        if 3600 % v:
            raise ValueError(
                f"{v} does not divide 3600: a window would straddle two hours of the "
                "hourly rollup (use 1-6, 10, 12, 15, 20, 30, 60, 120, 300, 600, ...)"
            )
        return v

    @field_validator("home_networks")
    @classmethod
    def _check_home_networks(cls, v: str) -> str:
        for item in filter(None, (s.strip() for s in v.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not a CIDR prefix: {exc}") from exc
        return v

    @field_validator("prefix_table", "mmdb_path", "exporter_city_table", "provider_dir")
    @classmethod
    def _check_exists(cls, v: Path | None) -> Path | None:
        if v is None or str(v) in ("", "."):
            return None
        if not v.exists():
            raise ValueError(f"{v} does not exist")
        return v

    @property
    def home_prefixes(self) -> list[str]:
        return [s.strip() for s in self.home_networks.split(",") if s.strip()]


class SinkConfig(BaseModel):
    #: Rows per ClickHouse insert at most ...
    batch_rows: int = Field(50000, ge=1)
    #: ... and at least one insert this often when rows are waiting. Batches
    #: are per topic partition, so a table receives up to one insert per
    #: partition per this delay.
    batch_delay_s: float = Field(1.0, gt=0)
    #: Kafka consumer group of the sinks.
    group_id: str = Field("voipflow-sink", min_length=1)
    #: Topics the sink consumes, comma separated, among the voip-flows, usage,
    #: traffic and exporter-health topics of ``[kafka]``; empty: all four.
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
