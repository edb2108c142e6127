"""Configuration of the worker (Faust app).

Kafka's settings are in :mod:`voipflow.schemas.topics` (the worker, the collectors' wiring
and the sink share them); ClickHouse's and the sink's in :mod:`voipflow.storage.config`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator


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
    #: Windows close on event time (see ``source_idle_s``). From this long
    #: after a city's last record on, its event time follows the wall clock,
    #: so its last windows still close (after this plus the lateness). A
    #: stalled input looks the same, so keep it above the longest stall
    #: (broker failover, worker failover) whose records must still count.
    idle_close_s: float = Field(120.0, gt=0)
    #: A city's (or exporter's) windows close on the event time of its
    #: slowest source partition, so that a partition stalled by a worker
    #: failover still finds its windows open. A source partition not heard
    #: for this long stops holding them back. Keep it above the time a
    #: failover takes (the group's session timeout, 10 s, plus the replay).
    source_idle_s: float = Field(60.0, gt=0)
    #: A flows partition with records waiting whose committed offset has not
    #: moved for this long is stalled (no worker takes it: a failover under
    #: way); the windows of its keys stay open until it moves. The group
    #: commits every second while it works ...
    stall_after_s: float = Field(5.0, gt=0)
    #: ... but for at most this long: a partition stalled for longer stops
    #: holding windows (its records, when they come, count as late).
    stall_max_hold_s: float = Field(900.0, gt=0)
    #: How often the worker reads the flows partitions' end and committed
    #: offsets to find the stalled ones; 0 turns the check off.
    stall_poll_s: float = Field(2.0, ge=0)
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
    #: Where ``VOIPFLOW_KAFKA_COMPRESSION`` is applied to what the worker
    #: produces: ``arrow`` compresses the buffers inside each voip-flows.v1
    #: Arrow IPC stream (LZ4_FRAME or ZSTD, which Arrow readers decompress by
    #: themselves) and produces every record batch uncompressed; ``kafka``
    #: lets the Kafka client compress the record batches. The client's lz4 is
    #: LZ4-HC level 9, a fourteenth of the fast mode's speed: it took a sixth
    #: of the worker's CPU (docs/performance.md); the JSON partials and states
    #: gain little from compression (their hashes are base64). ``arrow``
    #: needs lz4, zstd or none.
    compression_layer: Literal["arrow", "kafka"] = "arrow"
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
