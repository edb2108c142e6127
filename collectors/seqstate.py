"""Sequence trackers across collector restarts: what was sent while it was down is lost.

The decoder counts loss from each exporter's sequence numbers
(:mod:`voipflow.collectors.codec.sequence`). A tracker lives in memory; if a
restarted collector started its trackers afresh, the first datagram of each
exporter would be taken as it is and every datagram sent while the collector
was down would go uncounted. So the trackers are saved beside the template
cache, at the same moments (every ``template_save_interval_s`` and at an
orderly stop), to ``<data_dir>/collector/<template_cache_file
stem>.sequences-<worker>.json``, and restored at start. The first datagram
after the restart is then checked against the saved expectation by the
tracker's usual rules:

* a gap ahead of at most ``restart_gap`` is counted as loss
  (``voipflow_collector_sequence_lost_total`` and ``sequence_lost`` in
  ``exporter-health.v1``), records for v5/IPFIX, packets for v9;
* a v5/v9 boot time that moved, a number far behind, or a gap larger than
  ``restart_gap`` is an exporter restart (``exporter_restarts``): tracking
  starts over and nothing is counted as lost, as for any such jump;
* either way one log line per exporter and domain says what was found, with
  the time between the last datagram before the restart and the first after.

State whose exporter was last seen more than ``template_expiry_s`` ago (when
loaded, or while it waits for its first datagram) is not trusted: its
templates are gone by then too and the exporter starts afresh.

After a SIGKILL there is no save at the stop: the state is the last periodic
save's, so the gap counted also covers what the killed collector received
after that save (at most ``template_save_interval_s`` of traffic). The file
records whether it was written by an orderly stop, and a restart from a
periodic save says so in its log. The state is also saved within a second of
a restored tracker's first datagram, so that a gap once counted is not
counted again if this process is killed before its first periodic save.

A file that cannot be read, is not of this format or version, or holds a
malformed entry is skipped with a warning: the collector starts those
trackers afresh, as before this state existed.

Errors::

    SequenceStateError (OSError)   the file cannot be read or written, or is
                                   not sequence state of this version
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from voipflow.collectors.codec.call import DomainKey, ExporterStats
from voipflow.collectors.codec.decoder import Decoder
from voipflow.collectors.codec.sequence import MOD, MODES, SequenceTracker

log = logging.getLogger(__name__)

FORMAT = "voipflow-sequence-state"
VERSION = 1


class SequenceStateError(OSError):
    """The sequence state file is unreadable or of another format."""


def state_paths(directory: Path, cache_file: str, worker: int) -> tuple[Path, list[Path]]:
    """(this worker's state file, every worker's state files) under ``directory``.

    ``collector-templates.json`` gives ``collector-templates.sequences-<worker>.json``
    (a name the template cache's ``<stem>-*`` pattern does not match). Every
    worker loads all of them: after the number of workers changed, the kernel
    may send an exporter to another worker.
    """
    base = Path(cache_file)
    own = directory / f"{base.stem}.sequences-{worker}{base.suffix}"
    return own, sorted(directory.glob(f"{base.stem}.sequences-*{base.suffix}"))


def to_json(
    trackers: dict[DomainKey, SequenceTracker], saved_ms: int, orderly: bool
) -> dict[str, Any]:
    """The document saved: every tracker that has seen a sequence number."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "saved_ms": saved_ms,
        "orderly": orderly,
        "trackers": [
            {
                "exporter": key[0].hex(),
                "domain": key[1],
                "prev_seq": t.prev_seq,
                "prev_units": list(t.prev_units),
                "boot_ms": t.boot_ms,
                "modes": [list(m) for m in t.modes],
                "seen_ms": t.seen_ms,
            }
            for key, t in list(trackers.items())
            if t.prev_seq is not None
        ],
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` atomically (temp file + rename)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SequenceStateError(f"cannot write sequence state {path}: {exc}") from exc


def _int(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
        raise ValueError(f"{what} {value!r} is not an integer in [{low}, {high})")
    return value


def _tracker(
    entry: Any, reorder_window: int, restart_gap: int
) -> tuple[DomainKey, SequenceTracker]:
    if not isinstance(entry, dict):
        raise ValueError(f"tracker entry {entry!r} is not an object")
    exporter = bytes.fromhex(entry["exporter"])
    if len(exporter) != 16:
        raise ValueError(f"exporter {entry['exporter']!r} is not a 16-byte address")
    domain = _int(entry["domain"], 0, MOD, "domain")
    units = entry["prev_units"]
    if not isinstance(units, list) or len(units) != 2:
        raise ValueError(f"prev_units {units!r} is not a pair")
    modes = [tuple(m) for m in entry["modes"]]
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"modes {entry['modes']!r} are not counting modes")
    boot = entry["boot_ms"]
    tracker = SequenceTracker(
        reorder_window,
        restart_gap,
        prev_seq=_int(entry["prev_seq"], 0, MOD, "prev_seq"),
        prev_units=(_int(units[0], 0, MOD, "units"), _int(units[1], 0, MOD, "units")),
        boot_ms=None if boot is None else _int(boot, -(1 << 63), 1 << 63, "boot_ms"),
        modes=[(bool(m[0]), bool(m[1])) for m in modes],
        seen_ms=_int(entry["seen_ms"], 0, 1 << 63, "seen_ms"),
        resumed=True,
    )
    return (exporter, domain), tracker


def read(
    path: Path, reorder_window: int, restart_gap: int
) -> tuple[dict[str, Any], dict[DomainKey, SequenceTracker]]:
    """(the file's header fields, its trackers marked resumed); raises
    :class:`SequenceStateError` for anything but a well-formed file of this version."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise SequenceStateError(f"cannot read sequence state {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise SequenceStateError(f"{path} is not sequence state of version {VERSION}")
    try:
        head = {
            "saved_ms": _int(doc["saved_ms"], 0, 1 << 63, "saved_ms"),
            "orderly": bool(doc["orderly"]),
        }
        trackers = dict(_tracker(e, reorder_window, restart_gap) for e in doc["trackers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SequenceStateError(f"malformed sequence state {path}: {exc}") from exc
    return head, trackers


class SequenceState:
    """One worker's saved sequence trackers: load at start, save, report resumes.

    ``own`` is this worker's file, ``every`` lists all workers' files (a
    callable: they are looked up at load time); ``max_age_s`` is how long
    after an exporter's last datagram its state is trusted.
    """

    def __init__(
        self,
        own: Path,
        every: Callable[[], Iterable[Path]],
        max_age_s: float,
        exporter_text: Callable[[bytes], str],
    ) -> None:
        self.own = own
        self.every = every
        self.max_age_ms = int(max_age_s * 1000)
        self.exporter_text = exporter_text
        #: restored and waiting for their first datagram: key -> last seen (ms)
        self.pending: dict[DomainKey, int] = {}
        #: a gap (or an exporter restart) was counted since the last save:
        #: save soon, so that a restart after a SIGKILL does not count it again
        self.counted_since_save = False

    def load(self, decoder: Decoder, now_ms: int) -> int:
        """Restore every worker's saved trackers into ``decoder``; how many.

        Where two files hold the same exporter and domain, the one that saw
        it last wins. Never raises: a bad file is logged and skipped.
        """
        cfg = decoder.config
        found: dict[DomainKey, SequenceTracker] = {}
        try:
            paths = list(self.every())
        except OSError as exc:
            log.warning("sequence state not loaded", extra={"error": str(exc)})
            paths = []
        for path in paths:
            try:
                head, trackers = read(path, cfg.reorder_window, cfg.restart_gap)
            except SequenceStateError as exc:
                log.warning(
                    "sequence state not loaded: loss while the collector was down is not "
                    "counted for its exporters",
                    extra={"error": str(exc), "file": str(path)},
                )
                continue
            if not head["orderly"] and trackers:
                log.warning(
                    "sequence state is from a collector that did not stop in order: the gap "
                    "counted includes what it received after this save",
                    extra={"file": str(path), "saved_s_ago": (now_ms - head["saved_ms"]) / 1000},
                )
            for key, tracker in trackers.items():
                other = found.get(key)
                if other is None or tracker.seen_ms > other.seen_ms:
                    found[key] = tracker
        stale = 0
        for key, tracker in found.items():
            if now_ms - tracker.seen_ms > self.max_age_ms:
                stale += 1
            elif decoder.restore(key, tracker):
                self.pending[key] = tracker.seen_ms
        if found:
            log.info(
                "sequence state loaded",
                extra={"trackers": len(self.pending), "too_old": stale, "file": str(self.own)},
            )
        return len(self.pending)

    def save(self, decoder: Decoder, now_ms: int, *, orderly: bool) -> None:
        """Write this worker's trackers; a failure is logged, never raised."""
        self.counted_since_save = False
        try:
            write(self.own, to_json(decoder.trackers, now_ms, orderly))
        except SequenceStateError as exc:
            log.warning("sequence state not saved", extra={"error": str(exc)})

    def forget_stale(self, decoder: Decoder, now_ms: int) -> int:
        """Drop restored trackers that got no datagram within ``max_age_s`` of
        their exporter's last one: their exporter starts afresh."""
        old = [k for k, seen in self.pending.items() if now_ms - seen > self.max_age_ms]
        for key in old:
            del self.pending[key]
            tracker = decoder.trackers.get(key)
            if tracker is not None and tracker.resumed:
                del decoder.trackers[key]
        return len(old)

    def report(
        self, decoder: Decoder, stats: Mapping[DomainKey, ExporterStats], now_ms: int
    ) -> None:
        """Log, once per exporter and domain, what its first datagram after
        the restart showed (call after each decode with the call's stats)."""
        pending = self.pending
        for key, st in stats.items():
            seen = pending.get(key)
            if seen is None:
                continue
            tracker = decoder.trackers.get(key)
            if tracker is not None and tracker.resumed:
                continue  # no sequence number read yet (a malformed header)
            del pending[key]
            out = tracker.resume_outcome if tracker is not None else None
            if tracker is None or out is None:
                continue
            tracker.resume_outcome = None
            if out.lost or out.restart:
                self.counted_since_save = True
            extra = {
                "exporter": self.exporter_text(key[0]),
                "observation_domain_id": key[1],
                "downtime_s": round((now_ms - seen) / 1000, 3),
                "unit": "packets" if st.netflow_version == 9 else "records",
            }
            if out.restart:
                log.warning(
                    "sequence broke across the collector restart: counted as an exporter "
                    "restart, a gap is not counted as loss",
                    extra={**extra, "restart_gap": tracker.restart_gap},
                )
            elif out.lost:
                log.warning(
                    "sent while the collector was down: counted as sequence loss",
                    extra={**extra, "lost": out.lost},
                )
            else:
                log.info(
                    "sequence continued across the collector restart",
                    extra={**extra, "late": out.late},
                )
