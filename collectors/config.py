"""Configuration of the collector process (``voipflow collect``)."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, Field, field_validator

from collectors.decoder import DecoderConfig
from collectors.templates import TemplateCache


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    ipaddress.ip_address(host.strip("[]"))
    return value


class CollectorConfig(BaseModel):
    #: UDP address the collector listens on for NetFlow v5/v9 and IPFIX.
    listen: str = "0.0.0.0:2055"
    #: Receiving processes sharing the port with SO_REUSEPORT (one per core).
    workers: int = Field(1, ge=1, le=256)
    #: Socket receive buffer; the kernel caps it at net.core.rmem_max.
    rcvbuf_bytes: int = Field(32 * 1024 * 1024, ge=65536)
    #: A flow batch is published when it holds this many records ...
    batch_max_records: int = Field(20000, ge=1)
    #: ... or when its oldest record waited this long.
    batch_max_delay_ms: int = Field(500, ge=1)

    #: Templates not re-announced for this long are forgotten.
    template_expiry_s: float = Field(1800.0, gt=0)
    #: File (under the data directory) where templates and options data are
    #: kept across restarts; empty disables persistence.
    template_cache_file: str = "collector-templates.json"
    #: Data sets that arrive before their template are held, at most this many ...
    held_max_sets: int = Field(4096, ge=0)
    #: ... and this many bytes ...
    held_max_bytes: int = Field(16 * 1024 * 1024, ge=0)
    #: ... for at most this long; the rest is counted as evicted.
    held_max_age_s: float = Field(120.0, ge=0)
    #: Templates with more fields than this are refused as malformed.
    max_template_fields: int = Field(512, ge=1, le=65535)
    #: Exporter address -> 1-in-N sampling rate that overrides what the
    #: exporter announces, e.g. ``{"192.0.2.1": 1000}`` (JSON in the variable).
    sampling_override: dict[str, int] = Field(default_factory=dict)

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
        )

    def template_cache(self) -> TemplateCache:
        """An empty template cache with the configured expiry."""
        return TemplateCache(expiry_s=self.template_expiry_s)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        return _host_port(v)
