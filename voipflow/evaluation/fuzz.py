"""Hostile export datagrams, seeded: the collector's decode path against a fuzz campaign.

:class:`Mutator` turns a stream of valid NetFlow v5, v9 and IPFIX datagrams
(from :mod:`voipflow.collectors.codec.encoder`, 64 exporters, each with its
templates and sequence numbers) into a stream where most datagrams are
hostile, one kind per datagram (:data:`KINDS`): truncations, random bit flips,
boundary values in random 16-bit fields, zero-length and overlong sets,
template floods (hundreds of templates with random ids, layouts and
observation domains), a template id redefined with another layout in the
middle of a stream (then data in the old layout), enormous field counts,
sequence numbers that wrap at 2**32, and random bytes behind a valid version.
The same seed gives the same datagrams.

:func:`campaign` feeds them to :meth:`Decoder.decode_frame` in calls of
``batch`` datagrams, as ``voipflow collect`` does
(:mod:`voipflow.collectors.service`), and keeps what an operator would want
to know: calls that raised (crashes) or took more than ``hang_s`` CPU seconds (hangs),
errors by reason (every reason must be one of the documented taxonomy,
:data:`voipflow.collectors.codec.errors.REASONS` and the counted-only
reasons), datagrams rejected whole versus the decoder's own accounting
(``datagrams = packets decoded + datagrams rejected``, each rejected one
counted under exactly one reason of the header's), and memory (peak RSS,
templates in the cache, held sets) sampled along the way.
"""

from __future__ import annotations

import random
import resource
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voipflow.collectors.codec import packets
from voipflow.collectors.codec.decoder import Decoder, DecoderConfig
from voipflow.collectors.codec.encoder import make_encoder
from voipflow.collectors.codec.errors import DecodeError
from voipflow.collectors.codec.frame import Frame
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.schemas.flowbatch import ipv4_to_addr16, text_to_addr16

#: (kind, weight): what the mutator makes of the next datagram.
KINDS: tuple[tuple[str, int], ...] = (
    ("valid", 22),
    ("truncate", 12),
    ("bitflip", 14),
    ("boundary16", 8),
    ("set_length", 7),
    ("template_flood", 6),
    ("redefine", 6),
    ("huge_fields", 5),
    ("sequence_wrap", 6),
    ("random", 6),
    ("splice", 8),
)
#: Reasons counted without an exception (held data, expiry), beside the error classes'.
COUNTED_ONLY = ("no_template", "held_evicted", "template_expired")
EXPORTERS = 64
#: 3000 plausible field specifiers, for templates that claim more fields than allowed.
SPECS = b"".join(struct.pack(">HH", 1 + i % 400, 4) for i in range(3000))
#: Simulated receive time per decode call: the campaign crosses template expiry.
CALL_MS = 100


def _columns(rng: np.random.Generator, n: int, now_ms: int, v6: bool) -> dict[str, Any]:
    if v6:
        raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        raw[:, :4] = (0x20, 0x01, 0x0D, 0xB8)
        src = raw.copy().view("S16").reshape(-1)
        raw[:, 4] ^= 0xFF
        dst = raw.view("S16").reshape(-1)
    else:
        src = ipv4_to_addr16(rng.integers(0x0A000000, 0x0AFFFFFF, n, dtype=np.uint32))
        dst = ipv4_to_addr16(rng.integers(0x01000000, 0xDFFFFFFF, n, dtype=np.uint32))
    start = now_ms - rng.integers(1000, 60_000, n)
    pk = rng.integers(1, 2000, n).astype(np.uint64)
    return {
        "ip_version": np.full(n, 6 if v6 else 4, np.uint8),
        "src_addr": src,
        "dst_addr": dst,
        "src_port": rng.integers(1024, 65535, n).astype(np.uint16),
        "dst_port": rng.choice(np.array([443, 53, 3478, 5060, 8801], np.uint16), n),
        "protocol": np.full(n, 17, np.uint8),
        "packets": pk,
        "bytes": pk * np.uint64(200),
        "flow_start_ms": start.astype(np.uint64),
        "flow_end_ms": (start + 500).astype(np.uint64),
    }


class Exporter:
    """One exporter's valid export stream (v5, v9 or IPFIX), refilled on demand."""

    def __init__(self, index: int, rng: np.random.Generator) -> None:
        self.address = text_to_addr16(f"198.18.{index // 250}.{1 + index % 250}")
        self.version = (5, 9, 10)[index % 3]
        self.v6 = self.version != 5 and index % 2 == 1
        self.rng = rng
        self.domain = index + 1
        self.encoder = make_encoder(
            self.version,
            observation_domain_id=self.domain,
            template_refresh_packets=64,
            template_refresh_ms=600_000,
        )
        self.queue: list[bytes] = []

    def next(self, now_ms: int) -> bytes:
        if not self.queue:
            n = int(self.rng.integers(500, 3000))
            self.queue = self.encoder.encode(_columns(self.rng, n, now_ms, self.v6), now_ms)[::-1]
        return self.queue.pop()


@dataclass
class Mutator:
    """The seeded stream of (kind, exporter address, datagram)."""

    seed: int
    made: Counter[str] = field(default_factory=Counter)
    floods: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.r = random.Random(self.seed)
        rng = np.random.default_rng(self.seed)
        self.exporters = [Exporter(i, rng) for i in range(EXPORTERS)]
        self.kinds = [k for k, _ in KINDS]
        self.weights = [w for _, w in KINDS]
        self.now_ms = 1_700_000_000_000

    def next(self) -> tuple[str, bytes, bytes]:
        r = self.r
        ex = self.exporters[r.randrange(EXPORTERS)]
        kind = r.choices(self.kinds, self.weights)[0]
        base = ex.next(self.now_ms)
        data = getattr(self, "_" + kind)(ex, base)
        self.made[kind] += 1
        return kind, ex.address, data

    # -- the kinds ---------------------------------------------------------------

    def _valid(self, ex: Exporter, d: bytes) -> bytes:
        return d

    def _truncate(self, ex: Exporter, d: bytes) -> bytes:
        return d[: self.r.randrange(len(d))]

    def _bitflip(self, ex: Exporter, d: bytes) -> bytes:
        b = bytearray(d)
        for _ in range(self.r.randint(1, 8)):
            pos = self.r.randrange(len(b) * 8)
            b[pos >> 3] ^= 1 << (pos & 7)
        return bytes(b)

    def _boundary16(self, ex: Exporter, d: bytes) -> bytes:
        b = bytearray(d)
        pos = self.r.randrange(0, max(1, len(b) - 1))
        value = self.r.choice((0, 1, 3, 4, 5, 0x7FFF, 0x8000, 0xFFFF, len(b), len(b) + 1))
        struct.pack_into(">H", b, pos, value & 0xFFFF)
        return bytes(b)

    def _set_length(self, ex: Exporter, d: bytes) -> bytes:
        """A set whose length is 0, 1-4 (header only or less), or past the datagram's end."""
        header = {5: 24, 9: 20, 10: 16}[ex.version]
        if ex.version == 5 or len(d) < header + 4:
            return d[:header] + b"\x00\x00\x00\x00"
        b = bytearray(d)
        struct.pack_into(">H", b, header + 2, self.r.choice((0, 1, 2, 3, 4, 0xFFFF, len(d))))
        return bytes(b)

    def _template_records(self, n: int, fields_max: int) -> bytes:
        r = self.r
        out = []
        for _ in range(n):
            k = r.randint(1, fields_max)
            specs = b"".join(
                struct.pack(">HH", r.choice((1, 2, 4, 7, 8, 11, 12, 27, 152, r.randrange(1, 500))),
                            r.choice((0, 1, 2, 4, 8, 16, 0xFFFF, r.randrange(1, 64))))
                for _ in range(k)
            )  # fmt: skip
            out.append(struct.pack(">HH", r.randrange(256, 65536), k) + specs)
        return b"".join(out)

    def _template_flood(self, ex: Exporter, d: bytes) -> bytes:
        """1 .. 24 templates with random ids and layouts (from a pool made once)."""
        version = 9 if ex.version == 9 else 10
        if not self.floods:
            self.floods = [self._template_records(self.r.randint(1, 24), 12) for _ in range(512)]
        body = bytearray(self.r.choice(self.floods))
        struct.pack_into(">H", body, 0, self.r.randrange(256, 65536))  # a new id for the first
        sets = struct.pack(">HH", 0 if version == 9 else 2, 4 + len(body)) + body
        return self._as(ex, version, sets)

    def _as(self, ex: Exporter, version: int, sets: bytes) -> bytes:
        domain = self.r.choice((ex.domain, ex.domain, self.r.randrange(1 << 32)))
        if version == 10:
            head = struct.pack(">HHIII", 10, 16 + len(sets), self.now_ms // 1000, 0, domain)
        else:
            head = struct.pack(">HHIIII", 9, 1, 1000, self.now_ms // 1000, 0, domain)
        return head + sets

    def _redefine(self, ex: Exporter, d: bytes) -> bytes:
        """The exporter's own data template id announced again with another layout."""
        if ex.version == 5:
            return self._bitflip(ex, d)
        tid = 256 + self.r.randrange(2)
        k = self.r.randint(1, 30)
        specs = b"".join(
            struct.pack(">HH", self.r.randrange(1, 300), self.r.choice((1, 2, 4, 8, 16)))
            for _ in range(k)
        )
        body = struct.pack(">HH", tid, k) + specs
        sets = struct.pack(">HH", 0 if ex.version == 9 else 2, 4 + len(body)) + body
        return self._as(ex, ex.version, sets)

    def _huge_fields(self, ex: Exporter, d: bytes) -> bytes:
        """A template record claiming 513 .. 65535 fields (some of them present)."""
        version = 9 if ex.version == 9 else 10
        k = self.r.choice((513, 4096, 65535, self.r.randint(513, 65535)))
        present = min(k, self.r.choice((0, 10, 600, 3000)))
        specs = SPECS[: 4 * present]
        body = struct.pack(">HH", self.r.randrange(256, 65536), k) + specs
        length = 4 + len(body)
        sets = struct.pack(">HH", 0 if version == 9 else 2, min(length, 0xFFFF)) + body
        return self._as(ex, version, sets)

    def _sequence_wrap(self, ex: Exporter, d: bytes) -> bytes:
        """The exporter's datagram with a sequence number near 2**32 (or just past it)."""
        b = bytearray(d)
        seq = self.r.choice(((1 << 32) - self.r.randrange(1, 5000), self.r.randrange(0, 5000)))
        offset = {5: 16, 9: 12, 10: 8}[ex.version]
        if len(b) >= offset + 4:
            struct.pack_into(">I", b, offset, seq)
        return bytes(b)

    def _random(self, ex: Exporter, d: bytes) -> bytes:
        n = self.r.randrange(0, 1500)
        version = self.r.choice((5, 9, 10))
        return struct.pack(">H", version) + self.r.randbytes(n)

    def _splice(self, ex: Exporter, d: bytes) -> bytes:
        other = self.exporters[self.r.randrange(EXPORTERS)].next(self.now_ms)
        cut = self.r.randrange(len(d))
        return d[:cut] + other[self.r.randrange(len(other)) :]


def rejected_whole(data: bytes) -> bool:
    """Whether the header itself is refused (the datagram then counts no packet)."""
    try:
        packets.parse_message(memoryview(data))
    except DecodeError:
        return True
    return False


@dataclass
class Report:
    datagrams: int = 0
    calls: int = 0
    crashes: int = 0
    hangs: int = 0
    slowest_call_s: float = 0.0
    packets: int = 0
    rejected: int = 0
    rejected_expected: int = 0
    records: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    undocumented: Counter[str] = field(default_factory=Counter)
    held_evicted: int = 0
    peak_templates: int = 0
    peak_held_sets: int = 0
    peak_held_bytes: int = 0
    rss_start_mb: float = 0.0
    peak_rss_mb: float = 0.0
    seconds: float = 0.0
    made: Counter[str] = field(default_factory=Counter)
    first_crashes: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> bool:
        """Every datagram decoded or rejected whole, and every rejection counted."""
        return (
            self.packets + self.rejected == self.datagrams
            and self.rejected == self.rejected_expected
            and sum(self.errors.values()) >= self.rejected
        )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def campaign(
    total: int, seed: int = 1, batch: int = 256, hang_s: float = 5.0, progress: Any = None
) -> Report:
    """Decode ``total`` mutated datagrams in calls of ``batch``; the :class:`Report`."""
    from voipflow.collectors.codec.errors import REASONS

    documented = set(REASONS) | set(COUNTED_ONLY)
    mut = Mutator(seed)
    cache = TemplateCache(expiry_s=1800)
    dec = Decoder(cache, DecoderConfig())
    rep = Report(rss_start_mb=peak_rss_mb())
    t0 = time.monotonic()
    while rep.datagrams < total:
        n = min(batch, total - rep.datagrams)
        made = [mut.next() for _ in range(n)]
        payloads = [m[2] for m in made]
        exporters = [m[1] for m in made]
        rep.rejected_expected += sum(map(rejected_whole, payloads))
        mut.now_ms += CALL_MS
        started = time.process_time()  # CPU seconds: a busy machine does not make a hang
        try:
            res = dec.decode_frame(
                Frame.join(payloads), exporters, np.full(n, mut.now_ms, dtype=np.int64)
            )
        except Exception as exc:  # the decoder promises never to raise: a crash
            rep.crashes += 1
            if len(rep.first_crashes) < 5:
                rep.first_crashes.append(f"call {rep.calls} (seed {seed}): {exc!r}")
            rep.datagrams += n
            rep.calls += 1
            continue
        took = time.process_time() - started
        rep.slowest_call_s = max(rep.slowest_call_s, took)
        rep.hangs += took > hang_s
        rep.datagrams += n
        rep.calls += 1
        rep.records += res.batch.num_rows
        for st in res.stats.values():
            rep.packets += st.packets
            rep.held_evicted += st.held_evicted
            for reason, count in st.errors.items():
                rep.errors[reason] += count
                if reason not in documented:
                    rep.undocumented[reason] += count
        rep.rejected = rep.datagrams - rep.packets
        if rep.calls % 64 == 0:
            rep.peak_templates = max(rep.peak_templates, len(cache))
            rep.peak_held_sets = max(rep.peak_held_sets, dec.held_sets)
            rep.peak_held_bytes = max(rep.peak_held_bytes, dec.held_bytes)
            if progress is not None and rep.calls % 512 == 0:
                progress(rep, time.monotonic() - t0)
    rep.peak_templates = max(rep.peak_templates, len(cache))
    rep.peak_rss_mb = peak_rss_mb()
    rep.seconds = time.monotonic() - t0
    rep.made = mut.made
    return rep
