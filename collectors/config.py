"""Configuration of the collector process (``voipflow collect``)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from voipflow.collectors.codec import core
from voipflow.collectors.codec.decoder import DecoderConfig
from voipflow.collectors.codec.templates import TemplateCache


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    ipaddress.ip_address(host.strip("[]"))
    return value


def split_listen(value: str) -> list[tuple[str, int]]:
    """``"0.0.0.0:2055,[::]:2055"`` -> ``[("0.0.0.0", 2055), ("::", 2055)]``."""
    out = []
    for item in filter(None, (s.strip() for s in value.split(","))):
        host, _, port = _host_port(item).rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


def split_networks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma separated CIDRs (a bare address is a /32 or /128)."""
    return [
        ipaddress.ip_network(item, strict=False)
        for item in filter(None, (s.strip() for s in value.split(",")))
    ]


class CollectorConfig(BaseModel):
    #: UDP addresses the collector listens on for NetFlow v5/v9 and IPFIX,
    #: comma separated ``host:port``; IPv6 in brackets, e.g.
    #: ``0.0.0.0:2055,[::]:2055`` (IPv6 sockets are v6-only).
    listen: str = "0.0.0.0:2055"
    #: Receiving processes sharing the port with SO_REUSEPORT (one per core).
    #: The kernel keeps one exporter on one process, so templates and sequence
    #: numbers stay with the process that decodes them.
    workers: int = Field(1, ge=1, le=256)
    #: Socket receive buffer asked for each socket. Tried with SO_RCVBUFFORCE
    #: (root) first, then SO_RCVBUF, which the kernel caps at
    #: net.core.rmem_max; the start log says what was granted.
    rcvbuf_bytes: int = Field(32 * 1024 * 1024, ge=65536)
    #: At most this many datagrams are read per wakeup before they are decoded
    #: together.
    recv_burst: int = Field(2048, ge=1, le=65536)
    #: After a wakeup with fewer than ``recv_burst`` datagrams waiting, wait
    #: this long for more before decoding, so each decode call gets a bigger
    #: group (fixed costs per call are paid less often). Adds at most this
    #: much delay; 0 decodes whatever one wakeup found.
    coalesce_ms: float = Field(50.0, ge=0, le=1000)
    #: Decoded records are published (one Kafka message per exporter) when
    #: one exporter has this many waiting, when all together have four times
    #: as many ...
    batch_max_records: int = Field(20000, ge=1)
    #: ... or when the oldest record waited this long.
    batch_max_delay_ms: int = Field(500, ge=1)
    #: One Kafka message carries at most this many bytes of encoded batch
    #: (uncompressed); bigger batches are split. Keep it below the broker's
    #: ``message.max.bytes`` (1 MB by default).
    max_message_bytes: int = Field(1_000_000, ge=10_000)
    #: Where ``VOIPFLOW_KAFKA_COMPRESSION`` is applied to flow batches:
    #: ``arrow`` compresses the buffers inside each Arrow IPC stream
    #: (LZ4_FRAME or ZSTD, which Arrow readers decompress by themselves) and
    #: sends the Kafka record batch uncompressed; ``kafka`` lets the Kafka
    #: client compress the record batch. ``arrow`` takes a quarter less CPU
    #: per record published (kafka-python then copies a third of the bytes;
    #: ``benchmarks/collector_bench.py``) and needs lz4, zstd or none.
    compression_layer: Literal["arrow", "kafka"] = "arrow"
    #: Exporters allowed to send, comma separated CIDRs; empty allows all.
    #: Packets from others are refused and counted (reason ``not_allowed``).
    allow: str = ""
    #: Per-exporter rate limit in packets per second (token bucket); 0 = none.
    #: Packets over it are refused and counted (reason ``rate_limited``).
    rate_limit_pps: float = Field(0.0, ge=0)
    #: Bucket size of the rate limit in packets; 0 = one second's worth.
    rate_limit_burst: float = Field(0.0, ge=0)
    #: Bytes of encoded batches kept while Kafka is unreachable. When full the
    #: oldest batch not yet handed to the Kafka client is dropped and counted.
    buffer_max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)
    #: Bytes handed to the Kafka client at once (the rest waits in the buffer,
    #: where it can still be dropped oldest-first).
    inflight_max_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    #: How long the Kafka client retries a batch (idempotently: the broker
    #: drops its repeats) before giving up. A batch it gave up on goes back to
    #: the buffer and is sent again after a backoff, as a new record: if its
    #: first send was written after all, it is in flows.v1 twice. Long, so
    #: that a broker restart or a leader election never reaches it.
    delivery_timeout_ms: int = Field(300000, ge=1000)
    #: First wait before sending again after a failure; it doubles with
    #: each failure in a row ...
    retry_backoff_ms: int = Field(200, ge=1)
    #: ... up to this.
    retry_backoff_max_ms: int = Field(5000, ge=1)
    #: How often each process publishes ``exporter-health.v1``; 0 disables it.
    health_interval_s: float = Field(10.0, ge=0)
    #: How often the template cache is written to
    #: ``<data_dir>/collector/<template_cache_file stem>-<worker>.json``
    #: and the sequence trackers to ``<stem>.sequences-<worker>.json``
    #: (also at stop); every worker loads all of them at start. After a
    #: SIGKILL the loss counted is from the last save.
    template_save_interval_s: float = Field(60.0, gt=0)
    #: Seconds a stopping collector waits for Kafka to take what is buffered.
    stop_timeout_s: float = Field(20.0, ge=0)

    #: Templates not re-announced for this long are forgotten; saved sequence
    #: state of an exporter not seen for this long is not trusted.
    template_expiry_s: float = Field(1800.0, gt=0)
    #: File (under the data directory) where templates and options data are
    #: kept across restarts, and beside it the sequence trackers (so datagrams
    #: sent while the collector was down count as sequence loss); empty
    #: disables both.
    template_cache_file: str = "collector-templates.json"
    #: Data sets that arrive before their template are held, at most this many ...
    held_max_sets: int = Field(4096, ge=0)
    #: ... and this many bytes ...
    held_max_bytes: int = Field(16 * 1024 * 1024, ge=0)
    #: ... for at most this long; the rest is counted as evicted.
    held_max_age_s: float = Field(120.0, ge=0)
    #: Templates with more fields than this are refused as malformed.
    max_template_fields: int = Field(512, ge=1, le=65535)
    #: Templates kept in all (exporter, observation domain) pairs together;
    #: new ones beyond it are refused and counted (``too_many_templates``)
    #: until old ones expire: a flood of templates in ever new domains stays
    #: bounded in memory (about 2 KB per template).
    max_templates: int = Field(65536, ge=16)
    #: Exporters given their own ``exporter`` label in the Prometheus metrics;
    #: the ones heard after that share ``exporter="other"``, so that datagrams
    #: from ever new (spoofed) source addresses cannot grow the metrics
    #: without bound. Set it above the number of exporters you run.
    max_exporter_labels: int = Field(1000, ge=1)
    #: (exporter, observation domain) pairs reported in exporter-health.v1;
    #: what further pairs send is counted in Prometheus only
    #: (``untracked_domain_packets``).
    max_health_domains: int = Field(65536, ge=1)
    #: Exporter address -> 1-in-N sampling rate that overrides what the
    #: exporter announces, e.g. ``{"192.0.2.1": 1000}`` (JSON in the variable).
    sampling_override: dict[str, int] = Field(default_factory=dict)
    #: How datagrams are walked and records gathered: ``compiled`` with the
    #: codec's C core (built by ``make setup``; refuses to start without it),
    #: ``numpy`` without it, ``auto`` the core when built, else numpy (logged
    #: at start). The records and counters are the same either way.
    codec_core: Literal["auto", "compiled", "numpy"] = "auto"

    @field_validator("sampling_override")
    @classmethod
    def _check_sampling(cls, v: dict[str, int]) -> dict[str, int]:
        for addr, rate in v.items():
            ipaddress.ip_address(addr)
            if not 1 <= rate <= 2**32 - 1:
                raise ValueError(f"sampling rate of {addr} must be 1..4294967295, got {rate}")
        return v

    def decoder_config(self) -> DecoderConfig:
        """The decoder's bounds and overrides from these settings."""
        override = {}
        for addr, rate in self.sampling_override.items():
            ip = ipaddress.ip_address(addr)
            packed = ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed
            override[packed] = rate
        return DecoderConfig(
            held_max_sets=self.held_max_sets,
            held_max_bytes=self.held_max_bytes,
            held_max_age_ms=int(self.held_max_age_s * 1000),
            max_fields=self.max_template_fields,
            sampling_override=override,
            compiled_core=self.codec_core != "numpy",
        )

    def template_cache(self) -> TemplateCache:
        """An empty template cache with the configured expiry."""
        return TemplateCache(expiry_s=self.template_expiry_s, max_templates=self.max_templates)

    @field_validator("codec_core")
    @classmethod
    def _check_core(cls, v: str) -> str:
        if v == "compiled" and not core.AVAILABLE:
            raise ValueError(f"{core.BUILD_HINT}; or set it to auto or numpy")
        return v

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        if not split_listen(v):
            raise ValueError("expected host:port[,host:port...]")
        return v

    @field_validator("allow")
    @classmethod
    def _check_allow(cls, v: str) -> str:
        split_networks(v)
        return v
