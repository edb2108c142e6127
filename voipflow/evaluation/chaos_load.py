"""The chaos run's load: IPFIX exporters whose every flow can be found again.

Each flow has an id ``i`` (0, 1, 2, ... in send order per exporter block) that
is written into the flow itself: the subscriber address is a city network
(``homes[i % H]``) plus a host part, the subscriber port carries the rest, so
``(subscriber_addr, subscriber_port)`` is unique per flow and
:meth:`ChaosLoad.ids_of` turns rows of ``flows_voip`` back into ids. Every
flow is SIP signalling over UDP to port 5060 from a home network (rule R1 of
:mod:`voipflow.streams.classify`), so every flow sent is a VoIP flow and the
sender's record is the truth for ``traffic.v1``, ``flows_voip`` and the usage
tables alike.

The exporters send their templates once, at the start (no refresh), so after a
collector restart only the collector's template cache can decode them, and
each datagram's IPFIX sequence number (data records sent before it) is kept
with its send time: UDP sent while the collector's socket was closed is then
explained exactly, exporter by exporter (:meth:`Sender.sent_between`).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voipflow.collectors.codec.encoder import make_encoder
from voipflow.schemas.flowbatch import ipv4_to_addr16

#: Host parts per city network used for subscribers (1 .. HOSTS).
HOSTS = 65_000
#: First subscriber port; the port carries ``id // (networks * HOSTS)``.
PORT_BASE = 20_000
#: The exporters' source addresses start here (127.0.0.1 is the collector's).
EXPORTER_NET = "127.0.1."


def city_networks(cities_csv: Path) -> np.ndarray:
    """The IPv4 /16 networks of the city table (as integers): subscribers live there."""
    nets = []
    for line in cities_csv.read_text(encoding="utf-8").splitlines()[1:]:
        prefix = line.split(",", 1)[0]
        if "." in prefix and prefix.endswith("/16"):
            nets.append(int(ipaddress.IPv4Address(prefix.split("/")[0])))
    if not nets:
        raise ValueError(f"{cities_csv}: no IPv4 /16 city prefixes to place subscribers in")
    return np.array(nets, dtype=np.uint32)


@dataclass
class Datagram:
    """One export datagram as sent: who, when, which ids, which sequence number."""

    exporter: int
    sequence: int
    first_id: int
    flows: int
    sent_at: float = 0.0
    error: str = ""


class ChaosLoad:
    """``rate`` flows/s for ``seconds`` from ``exporters`` IPFIX exporters."""

    def __init__(
        self, homes: np.ndarray, rate: int, seconds: int, exporters: int, seed: int = 1
    ) -> None:
        self.homes = homes
        self.rate = rate
        self.seconds = seconds
        self.exporters = exporters
        self.rng = np.random.default_rng(seed)
        self.per_exporter = max(1, rate // exporters)
        self.encoders = [
            make_encoder(
                10,
                observation_domain_id=e + 1,
                template_refresh_packets=1 << 30,
                template_refresh_ms=1 << 40,
            )
            for e in range(exporters)
        ]
        self.next_id = 0

    @property
    def total(self) -> int:
        return self.per_exporter * self.exporters * self.seconds

    def addresses(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(IPv4 subscriber address as integer, subscriber port) of flow ids."""
        h = len(self.homes)
        host = 1 + (ids // h) % HOSTS
        port = PORT_BASE + ids // (h * HOSTS)
        return (self.homes[ids % h] | host).astype(np.uint32), port.astype(np.uint16)

    def ids_of(self, addr_v4: np.ndarray, port: np.ndarray) -> np.ndarray:
        """Flow ids of (IPv4 subscriber address, port) pairs (-1 when not ours)."""
        h = len(self.homes)
        net = addr_v4.astype(np.uint32) & np.uint32(0xFFFF0000)
        host = (addr_v4.astype(np.int64) & 0xFFFF) - 1
        order = np.argsort(self.homes)
        pos = np.searchsorted(self.homes[order], net)
        pos = np.minimum(pos, h - 1)
        hit = self.homes[order][pos] == net
        city = order[pos]
        ids = city + h * (host + HOSTS * (port.astype(np.int64) - PORT_BASE))
        return np.where(hit & (host >= 0) & (port >= PORT_BASE), ids, -1)

    def second(self, s: int, export_ms: int) -> list[tuple[int, bytes, Datagram]]:
        """The datagrams of second ``s`` of the load, exporters interleaved."""
        out: list[list[tuple[int, bytes, Datagram]]] = []
        n = self.per_exporter
        for e, enc in enumerate(self.encoders):
            ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
            self.next_id += n
            addr, port = self.addresses(ids)
            end = export_ms - self.rng.integers(0, 1000, n)
            packets = self.rng.integers(4, 40, n).astype(np.uint64)
            cols = {
                "ip_version": np.full(n, 4, np.uint8),
                "src_addr": ipv4_to_addr16(addr),
                "dst_addr": ipv4_to_addr16(self.rng.integers(0x01000000, 0x09000000, n)),
                "src_port": port,
                "dst_port": np.full(n, 5060, np.uint16),
                "protocol": np.full(n, 17, np.uint8),
                "packets": packets,
                "bytes": packets * np.uint64(400),
                "flow_start_ms": (end - 2000).astype(np.uint64),
                "flow_end_ms": end.astype(np.uint64),
            }
            datagrams = enc.encode(cols, export_ms)
            seqs = [int.from_bytes(d[8:12], "big") for d in datagrams]
            counts = np.diff(np.array([*seqs, int(getattr(enc, "data_records", 0))]))
            rows: list[tuple[int, bytes, Datagram]] = []
            first = int(ids[0])
            for d, seq, count in zip(datagrams, seqs, counts, strict=True):
                rows.append((e, d, Datagram(e, seq, first, int(count))))
                first += int(count)
            if first != int(ids[-1]) + 1:
                raise AssertionError(f"exporter {e}: datagrams carry {first - int(ids[0])} of {n}")
            out.append(rows)
        mixed = [r for group in zip(*_pad(out), strict=True) for r in group if r is not None]
        return mixed


def _pad(
    groups: list[list[tuple[int, bytes, Datagram]]],
) -> list[list[tuple[int, bytes, Datagram] | None]]:
    longest = max(len(g) for g in groups)
    return [list(g) + [None] * (longest - len(g)) for g in groups]


@dataclass
class Sender:
    """Sends a :class:`ChaosLoad` to ``port`` in a thread, one second at a time."""

    load: ChaosLoad
    port: int
    sent: list[Datagram] = field(default_factory=list)
    stop_flag: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    finished: float = 0.0

    def run(self) -> None:
        socks = []
        for e in range(self.load.exporters):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"{EXPORTER_NET}{e + 1}", 0))
            socks.append(sock)
        self.started = time.monotonic()
        try:
            for s in range(self.load.seconds):
                if self.stop_flag.is_set():
                    break
                batch = self.load.second(s, int(time.time() * 1000))
                t_s = self.started + s
                for k, (e, payload, info) in enumerate(batch):
                    due = t_s + k / max(1, len(batch))
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    info.sent_at = time.monotonic()
                    try:
                        socks[e].sendto(payload, ("127.0.0.1", self.port))
                    except OSError as exc:  # counted: the exporter's sequence still moved
                        info.error = type(exc).__name__
                    self.sent.append(info)
        finally:
            self.finished = time.monotonic()
            for sock in socks:
                sock.close()

    def flows_sent(self) -> int:
        return sum(d.flows for d in self.sent)

    def sent_between(self, t0: float, t1: float) -> dict[int, tuple[int, int, int]]:
        """Per exporter: (first sequence number, flows, datagrams) sent in [t0, t1)."""
        out: dict[int, tuple[int, int, int]] = {}
        for d in self.sent:
            if t0 <= d.sent_at < t1:
                seq, flows, n = out.get(d.exporter, (d.sequence, 0, 0))
                out[d.exporter] = (seq, flows + d.flows, n + 1)
        return out

    def datagram_of(self, ids: np.ndarray) -> list[Datagram]:
        """The datagrams that carried these flow ids (each once)."""
        firsts = np.array([d.first_id for d in self.sent], dtype=np.int64)
        order = np.argsort(firsts)
        pos = np.searchsorted(firsts[order], ids, side="right") - 1
        return [self.sent[int(order[p])] for p in np.unique(pos[pos >= 0])]
