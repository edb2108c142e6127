"""Configuration of one simulator run (``voipflow simulate`` flags map onto it).

The simulator is a tool, not a pipeline component, so its settings are
command-line flags rather than ``VOIPFLOW_*`` variables; this model validates
them in one place so that ``voipflow demo`` and the benchmarks build the same
object and get the same errors.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def parse_target(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    if host != "localhost":
        ipaddress.ip_address(host)
    return ("127.0.0.1" if host == "localhost" else host), int(port)


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Collector address the exporters send to (``HOST:PORT``).
    target: str = "127.0.0.1:2055"
    #: Flow records per second the simulated routers produce before sampling
    #: (with 1:N sampling fewer are sent, as on a real router).
    rate: float = Field(1000.0, gt=0, le=10_000_000)
    #: Seconds to run; 0 runs until interrupted.
    duration_s: float = Field(60.0, ge=0)
    #: Export format: 5 (NetFlow v5), 9 (NetFlow v9) or 10 (IPFIX).
    version: Literal[5, 9, 10] = 10
    #: 1-in-N packet sampling applied and announced by every exporter.
    sampling: int = Field(1, ge=1, le=16383)
    #: City table (CSV: prefix, city, region, country, lat, lon).
    cities: Path | None = None
    #: Directory of provider range files (``<provider>.txt``, CIDR per line).
    providers: Path | None = None
    #: Random seed: the same seed and start time give the same records.
    seed: int = 1
    #: Where to write the ground truth (JSON) when the run ends.
    truth: Path | None = None
    #: Also (or, with ``send=False``, only) write the datagrams to this pcap.
    pcap: Path | None = None
    #: Send datagrams over UDP (off: only the pcap and the truth are written).
    send: bool = True
    #: Exporters (BNGs) per city, each with its own loopback source address.
    exporters_per_city: int = Field(1, ge=1, le=250)
    #: Subscribers per city.
    subscribers_per_city: int = Field(2000, ge=1, le=1_000_000)
    #: Long flows (calls, video) are exported in slices of this many seconds.
    active_timeout_s: float = Field(60.0, ge=1, le=3600)
    #: Share of flow records that belong to VoIP calls (media and signalling).
    voip_share: float = Field(0.15, ge=0, le=1)
    #: Share of flow records that are video streaming.
    video_share: float = Field(0.10, ge=0, le=1)
    #: Share of flow records that are DNS; web takes the rest.
    dns_share: float = Field(0.30, ge=0, le=1)
    #: Share of sessions over IPv6 (ignored for NetFlow v5, which is IPv4 only).
    ipv6_share: float = Field(0.25, ge=0, le=1)
    #: Simulation step: records of one step are generated and sent together.
    tick_s: float = Field(0.1, gt=0, le=10)
    #: Export datagram size limit (bytes on the wire, IP and UDP headers included).
    mtu: int = Field(1500, ge=576, le=65535)
    #: Start of simulated time (UTC ms); default: the wall clock at start.
    start_ms: int | None = None
    #: Run as fast as possible instead of in real time (for benchmarks).
    unpaced: bool = False

    @field_validator("target")
    @classmethod
    def _check_target(cls, v: str) -> str:
        parse_target(v)
        return v

    @model_validator(mode="after")
    def _check_shares(self) -> SimulatorConfig:
        if self.voip_share + self.video_share + self.dns_share > 1 + 1e-9:
            raise ValueError("voip_share + video_share + dns_share must not exceed 1")
        if not self.send and self.pcap is None and self.truth is None:
            raise ValueError("nothing to do: no sending, no pcap, no truth file")
        return self

    @property
    def web_share(self) -> float:
        return max(0.0, 1.0 - self.voip_share - self.video_share - self.dns_share)

    @property
    def target_addr(self) -> tuple[str, int]:
        return parse_target(self.target)
