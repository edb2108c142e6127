"""The simulated routers: one export process and one UDP socket per exporter.

Exporter ``e`` of city ``c`` (both counted from 1) sends from 127.1.c.e when
the collector is on the IPv4 loopback, so the collector sees distinct
exporters the way it would see distinct BNGs; toward any other target all
exporters share the host's address and differ by observation domain (v9
source id, IPFIX observation domain id; v5 engine id).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter

from voipflow.collectors.codec.encoder import ExportEncoder, make_encoder
from voipflow.collectors.pcapfile import PcapWriter
from voipflow.simulate.addresses import SimulatorDataError

DATAGRAMS = Counter(
    "voipflow_simulator_datagrams_total", "Export datagrams the simulator sent", ["exporter"]
)
RECORDS = Counter(
    "voipflow_simulator_records_total", "Flow records the simulator sent", ["exporter"]
)
SEND_ERRORS = Counter(
    "voipflow_simulator_send_errors_total",
    "Export datagrams the simulator could not send",
    ["exporter", "reason"],
)


@dataclass(slots=True)
class Exporter:
    index: int
    city: str
    address: str  # source address of the datagrams
    observation_domain_id: int
    encoder: ExportEncoder
    sock: socket.socket | None = None
    datagrams: int = 0
    records: int = 0
    send_errors: int = 0
    pending: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False)
    pending_records: int = 0
    last_flush_ms: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "city": self.city,
            "observation_domain_id": self.observation_domain_id,
            "datagrams": self.datagrams,
            "records": self.records,
            "send_errors": self.send_errors,
        }


def loopback_address(city_index: int, exporter_index: int) -> str:
    return f"127.1.{city_index + 1}.{exporter_index + 1}"


class ExporterSet:
    """All exporters of a run: encode each one's records, send, count."""

    def __init__(
        self,
        city_names: list[str],
        per_city: int,
        *,
        version: int,
        sampling: int,
        mtu: int,
        target: tuple[str, int],
        start_ms: int,
        rng: np.random.Generator,
        pcap: PcapWriter | None = None,
        send: bool = True,
        flush_ms: int = 1000,
        flush_records: int = 300,
    ) -> None:
        if len(city_names) > 254:
            raise SimulatorDataError(f"{len(city_names)} cities: at most 254 are supported")
        self.target = target
        self.pcap = pcap
        self.send_enabled = send
        self.flush_ms = flush_ms
        self.flush_records = flush_records
        family = ipaddress.ip_address(target[0])
        self.family = socket.AF_INET6 if family.version == 6 else socket.AF_INET
        self.per_source = family.version == 4 and family.is_loopback
        self.exporters: list[Exporter] = []
        for ci, city in enumerate(city_names):
            for ei in range(per_city):
                index = len(self.exporters)
                domain = index + 1
                # a few days of uptime, different per router
                boot = start_ms - int(rng.uniform(1, 30) * 86_400_000)
                kwargs: dict[str, Any] = {"sampling_rate": sampling, "mtu": mtu}
                if version != 10:
                    kwargs["boot_time_ms"] = boot
                enc = make_encoder(
                    version,
                    observation_domain_id=domain & 0xFF if version == 5 else domain,
                    **kwargs,
                )
                addr = loopback_address(ci, ei) if self.per_source else "0.0.0.0"
                self.exporters.append(
                    Exporter(index, city, addr, domain, enc, last_flush_ms=start_ms)
                )

    def open(self) -> None:
        if not self.send_enabled:
            return
        for e in self.exporters:
            s = socket.socket(self.family, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            if self.per_source:
                s.bind((e.address, 0))
            e.sock = s

    def close(self) -> None:
        for e in self.exporters:
            if e.sock is not None:
                e.sock.close()
                e.sock = None

    def export(self, columns: dict[str, np.ndarray], exporter: np.ndarray, now_ms: int) -> int:
        """Queue one step's records; send what is due. Returns datagrams sent.

        Like a router's export buffer, an exporter sends when it holds enough
        records to fill datagrams, or when ``flush_ms`` passed since it last
        sent, so slow exporters do not send one tiny datagram per step.
        """
        if len(exporter):
            order = np.argsort(exporter, kind="stable")
            bounds = np.searchsorted(exporter[order], np.arange(len(self.exporters) + 1))
            for e in self.exporters:
                lo, hi = bounds[e.index], bounds[e.index + 1]
                if lo < hi:
                    take = order[lo:hi]
                    e.pending.append({k: v[take] for k, v in columns.items()})
                    e.pending_records += int(hi - lo)
        sent = 0
        for e in self.exporters:
            due = now_ms - e.last_flush_ms >= self.flush_ms
            if e.pending_records and (due or e.pending_records >= self.flush_records):
                sent += self._flush(e, now_ms)
        return sent

    def flush(self, now_ms: int) -> int:
        """Send everything queued (at the end of a run)."""
        return sum(self._flush(e, now_ms) for e in self.exporters if e.pending_records)

    def _flush(self, e: Exporter, now_ms: int) -> int:
        parts, n = e.pending, e.pending_records
        e.pending, e.pending_records, e.last_flush_ms = [], 0, now_ms
        cols = (
            parts[0]
            if len(parts) == 1
            else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        )
        sent = self._send(e, e.encoder.encode(cols, now_ms), now_ms)
        e.records += n
        RECORDS.labels(e.address).inc(n)
        return sent

    def _send(self, e: Exporter, datagrams: list[bytes], now_ms: int) -> int:
        if self.pcap is not None:
            # the pcap is IPv4 only: an IPv6 collector is shown as 127.0.0.1
            src = e.address if self.per_source else "127.0.0.1"
            dst = self.target if self.family == socket.AF_INET else ("127.0.0.1", self.target[1])
            for d in datagrams:
                self.pcap.write(now_ms, (src, 2055), dst, d)
        if e.sock is None:
            e.datagrams += len(datagrams)
            return len(datagrams)
        ok = 0
        for d in datagrams:
            try:
                e.sock.sendto(d, self.target)
                ok += 1
            except OSError as exc:
                e.send_errors += 1
                reason = errno.errorcode.get(exc.errno or 0, "oserror")
                SEND_ERRORS.labels(e.address, reason).inc()
        e.datagrams += ok
        DATAGRAMS.labels(e.address).inc(ok)
        return ok
