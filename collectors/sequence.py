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
"""

from __future__ import annotations

from dataclasses import dataclass, field

MOD = 1 << 32
#: Export time (v9: whole seconds) and sysUptime disagree by up to a second
#: or so between packets of one exporter; a restart moves boot time further.
BOOT_TOLERANCE_MS = 5000
#: (counts the current message, counts flow records only); RFC reading first.
MODES: tuple[tuple[bool, bool], ...] = ((False, False), (True, True), (True, False), (False, True))


@dataclass(slots=True)
class SeqOutcome:
    lost: int = 0
    late: int = 0
    reordered: int = 0
    restart: bool = False


@dataclass(slots=True)
class SequenceTracker:
    reorder_window: int = 100_000
    restart_gap: int = 1 << 24
    prev_seq: int | None = None
    prev_units: tuple[int, int] = (0, 0)
    boot_ms: int | None = None
    modes: list[tuple[bool, bool]] = field(default_factory=lambda: list(MODES))

    def resync(self) -> None:
        """Forget the previous number (the next one is taken as is)."""
        self.prev_seq = None

    def _expected(self, mode: tuple[bool, bool], units: tuple[int, int]) -> int:
        assert self.prev_seq is not None
        including, flows_only = mode
        n = (units if including else self.prev_units)[1 if flows_only else 0]
        return (self.prev_seq + n) % MOD

    def observe(
        self, seq: int, units: int, boot_ms: int | None, flow_units: int | None = None
    ) -> SeqOutcome:
        """A packet with sequence ``seq`` carrying ``units`` data records (v9: 1
        packet), ``flow_units`` of them flow records (default: all)."""
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

    def _accept(self, seq: int, units: tuple[int, int], boot_ms: int | None) -> None:
        self.prev_seq = seq
        self.prev_units = units
        if boot_ms is not None:
            self.boot_ms = boot_ms


def _boot_moved(new: int, old: int) -> bool:
    d = abs(new - old)
    # The 32-bit sysUptime wraps every 49.7 days: boot time then jumps by 2^32 ms.
    return d > BOOT_TOLERANCE_MS and abs(d - MOD) > BOOT_TOLERANCE_MS
