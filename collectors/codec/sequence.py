"""Sequence-number tracking per exporter and observation domain: loss, reordering, restarts.

Units differ by version: NetFlow v5 and IPFIX sequence numbers count data
records, NetFlow v9 ones count export packets (RFC 3954 5.1), so ``lost`` is
in records for v5/IPFIX and in packets for v9. All arithmetic is modulo 2^32.

Exporters disagree on what the number means: RFC 7011 says "data records
sent *before* this message, options data included"; softflowd sends the
count *including* the current message and only flow records. The tracker
keeps the four readings (before/including x all/flow records) as candidates
and narrows them to those that every in-order packet agrees with, so such an
exporter does not show phantom loss. With nothing to go by it uses the RFC's.

* gap ahead (up to ``restart_gap``): ``lost += gap``;
* behind by at most ``reorder_window``: a late or duplicated packet,
  ``late += units`` (so ``lost - late`` is the net loss) and the expected
  number stays where it was;
* further behind or further ahead, or a v5/v9 boot time (export time minus
  sysUptime) that moved by more than ``BOOT_TOLERANCE_MS`` while the sequence
  broke: the exporter restarted; ``restarts += 1``, tracking starts over.

A tracker can outlive its process (``voipflow.collectors.seqstate`` saves
its fields beside the template cache): one restored from a file is marked
``resumed`` and its first packet is observed on its own, by the rules above,
and kept in ``resume_outcome``, so that the gap across the collector's own
downtime is counted as loss and can be reported once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MOD = 1 << 32
#: Export time (v9: whole seconds) and sysUptime disagree by up to a second
#: or so between packets of one exporter; a restart moves boot time further.
BOOT_TOLERANCE_MS = 5000
#: (counts the current message, counts flow records only); RFC reading first.
MODES: tuple[tuple[bool, bool], ...] = ((False, False), (True, True), (True, False), (False, True))


def mode_step(
    mode: tuple[bool, bool], prev_units: Any, prev_flows: Any, units: Any, flows: Any
) -> Any:
    """How far the sequence number moves from one packet to the next under
    ``mode``: the records of the previous packet or of this one, all of them
    or flow records only. Ints or numpy arrays alike (the tracker checks one
    packet, :meth:`SequenceTracker.observe_many` and the bulk decoder whole
    runs)."""
    including, flows_only = mode
    if including:
        return flows if flows_only else units
    return prev_flows if flows_only else prev_units


@dataclass(slots=True)
class SeqOutcome:
    lost: int = 0
    late: int = 0
    reordered: int = 0
    restart: bool = False
    restarts: int = 0  # observe_many: how many packets were restarts


@dataclass(slots=True)
class SequenceTracker:
    reorder_window: int = 100_000
    restart_gap: int = 1 << 24
    prev_seq: int | None = None
    prev_units: tuple[int, int] = (0, 0)
    boot_ms: int | None = None
    modes: list[tuple[bool, bool]] = field(default_factory=lambda: list(MODES))
    #: Receive time (UTC ms) of the last decode call with a packet of this
    #: exporter and domain; the decoder sets it, saved state older than a
    #: bound is not trusted.
    seen_ms: int = 0
    #: Restored from saved state and no packet observed since.
    resumed: bool = False
    #: What the first packet after the restore gave (gap, restart, late).
    resume_outcome: SeqOutcome | None = None

    def resync(self) -> None:
        """Forget the previous number (the next one is taken as is)."""
        self.prev_seq = None

    def _expected(self, mode: tuple[bool, bool], units: tuple[int, int]) -> int:
        assert self.prev_seq is not None
        n = mode_step(mode, self.prev_units[0], self.prev_units[1], units[0], units[1])
        return (self.prev_seq + n) % MOD

    def observe(
        self, seq: int, units: int, boot_ms: int | None, flow_units: int | None = None
    ) -> SeqOutcome:
        """A packet with sequence ``seq`` carrying ``units`` data records (v9: 1
        packet), ``flow_units`` of them flow records (default: all)."""
        if self.resumed:
            self.resumed = False
            self.resume_outcome = self._observe(seq, units, boot_ms, flow_units)
            return self.resume_outcome
        return self._observe(seq, units, boot_ms, flow_units)

    def _observe(
        self, seq: int, units: int, boot_ms: int | None, flow_units: int | None
    ) -> SeqOutcome:
        out = SeqOutcome()
        now = (units, units if flow_units is None else flow_units)
        if self.prev_seq is None:
            self._accept(seq, now, boot_ms)
            return out
        agree = [m for m in MODES if self._expected(m, now) == seq]
        if agree:
            kept = [m for m in self.modes if m in agree]
            self.modes = kept or agree
            self._accept(seq, now, boot_ms)
            return out
        diff = (seq - self._expected(self.modes[0], now)) % MOD
        if boot_ms is not None and self.boot_ms is not None and _boot_moved(boot_ms, self.boot_ms):
            out.restart = True
        elif diff < MOD // 2:
            if diff > self.restart_gap:
                out.restart = True
            else:
                out.lost = diff
        else:
            back = MOD - diff
            if back <= self.reorder_window:
                out.reordered = 1
                out.late = units
                return out
            out.restart = True
        self._accept(seq, now, boot_ms)
        return out

    def observe_many(
        self,
        seqs: np.ndarray,
        units: np.ndarray,
        flows: np.ndarray,
        boots: np.ndarray,
        has_boot: np.ndarray,
        resync: np.ndarray,
    ) -> SeqOutcome:
        """Packets in the order they arrived, summed: the same as :meth:`observe`
        for each (and :meth:`resync` after those marked), in a few numpy
        operations when every packet follows the one before it.

        ``boots`` holds each packet's boot time where ``has_boot`` (not
        IPFIX); arrays of one length, int64 or bool.
        """
        out = SeqOutcome()
        n = len(seqs)
        if n == 0:
            return out
        start = 0
        if self.prev_seq is None or self.resumed:
            self._observe_one(out, seqs, units, flows, boots, has_boot, resync, 0)
            start = 1
        if start < n and not resync[start:].any() and self.prev_seq is not None:
            s = seqs[start:]
            prev_seq = np.empty(n - start, dtype=np.int64)
            prev_seq[0] = self.prev_seq
            prev_seq[1:] = s[:-1]
            u, f = units[start:], flows[start:]
            prev_u = np.empty_like(prev_seq)
            prev_u[0] = self.prev_units[0]
            prev_u[1:] = u[:-1]
            prev_f = np.empty_like(prev_seq)
            prev_f[0] = self.prev_units[1]
            prev_f[1:] = f[:-1]
            # If one of the modes still possible explains every packet, each
            # packet narrows the modes to those explaining it (never to none),
            # so the result is the modes that explain all of them.
            agree = [
                m
                for m in self.modes
                if np.array_equal((prev_seq + mode_step(m, prev_u, prev_f, u, f)) % MOD, s)
            ]
            if agree:
                self.modes = agree
                self.prev_seq = int(s[-1])
                self.prev_units = (int(u[-1]), int(f[-1]))
                with_boot = np.flatnonzero(has_boot[start:])
                if len(with_boot):
                    self.boot_ms = int(boots[start + with_boot[-1]])
                return out
        for i in range(start, n):
            self._observe_one(out, seqs, units, flows, boots, has_boot, resync, i)
        return out

    def _observe_one(
        self,
        out: SeqOutcome,
        seqs: np.ndarray,
        units: np.ndarray,
        flows: np.ndarray,
        boots: np.ndarray,
        has_boot: np.ndarray,
        resync: np.ndarray,
        i: int,
    ) -> None:
        boot = int(boots[i]) if has_boot[i] else None
        one = self.observe(int(seqs[i]), int(units[i]), boot, int(flows[i]))
        out.lost += one.lost
        out.late += one.late
        out.reordered += one.reordered
        out.restart = out.restart or one.restart
        out.restarts += int(one.restart)
        if resync[i]:
            self.resync()

    def _accept(self, seq: int, units: tuple[int, int], boot_ms: int | None) -> None:
        self.prev_seq = seq
        self.prev_units = units
        if boot_ms is not None:
            self.boot_ms = boot_ms


def _boot_moved(new: int, old: int) -> bool:
    d = abs(new - old)
    # The 32-bit sysUptime wraps every 49.7 days: boot time then jumps by 2^32 ms.
    return d > BOOT_TOLERANCE_MS and abs(d - MOD) > BOOT_TOLERANCE_MS


class SequenceLog:
    """Sequence numbers of a decode call's packets, by position, observed later.

    The bulk decoder handles plain packets in whole groups and the others one
    at a time, out of arrival order; both write here, and each exporter's
    tracker then sees its packets in arrival order (:meth:`replay`).
    """

    def __init__(self, n: int) -> None:
        self.seq = np.zeros(n, dtype=np.int64)
        self.units = np.zeros(n, dtype=np.int64)
        self.flows = np.zeros(n, dtype=np.int64)
        self.boot = np.zeros(n, dtype=np.int64)
        self.has_boot = np.zeros(n, dtype=bool)
        self.resync = np.zeros(n, dtype=bool)
        self.seen = np.zeros(n, dtype=bool)

    def add(self, i: int, seq: int, units: int, flows: int, boot: int | None, resync: bool) -> None:
        self.seq[i] = seq
        self.units[i] = units
        self.flows[i] = flows
        if boot is not None:
            self.boot[i] = boot
            self.has_boot[i] = True
        self.resync[i] = resync
        self.seen[i] = True

    def replay(self, tracker: SequenceTracker, positions: np.ndarray) -> SeqOutcome:
        """Observe the logged packets among ``positions`` (ascending) with ``tracker``."""
        at = positions[self.seen[positions]]
        return tracker.observe_many(
            self.seq[at],
            self.units[at],
            self.flows[at],
            self.boot[at],
            self.has_boot[at],
            self.resync[at],
        )
