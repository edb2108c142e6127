"""Configuration of the collector process (``voipflow collect``)."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, Field, field_validator


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

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        return _host_port(v)
