"""What one decode call takes and gathers: settings, per-exporter figures, call state.

Shared by :mod:`voipflow.collectors.codec.decoder` and its bulk path
(:mod:`voipflow.collectors.codec.bulk`), which both write into a :class:`DecodeCall`;
it lives apart from both so neither has to import the other for its types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from voipflow.collectors.codec.assemble import CallBatch
from voipflow.collectors.codec.errors import DecodeError
from voipflow.collectors.codec.sequence import SequenceLog
from voipflow.collectors.codec.templates import DomainKey

__all__ = ["DecodeCall", "DecoderConfig", "DomainKey", "ExporterStats"]


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    """Bounds and overrides of one decoder (built from ``CollectorConfig``)."""

    #: Data sets held while their template is unknown, at most this many ...
    held_max_sets: int = 4096
    #: ... and this many bytes (oldest evicted first, counted).
    held_max_bytes: int = 16 * 1024 * 1024
    #: Held data older than this (by receive time) is evicted.
    held_max_age_ms: int = 120_000
    #: A template with more fields is refused (``too_many_fields``).
    max_fields: int = 512
    #: Sequence trackers kept, one per exporter and observation domain; past
    #: this the oldest is forgotten (random domain ids must not grow memory).
    max_domains: int = 65536
    #: exporter address (16 bytes) -> 1-in-N sampling rate that overrides
    #: whatever the exporter announces.
    sampling_override: Mapping[bytes, int] = field(default_factory=dict)
    #: Keep information elements the IE table does not know as extra
    #: ``ie_<pen>_<id>`` binary columns.
    keep_unknown_ies: bool = True
    #: A sequence number behind the expected one by at most this many
    #: (records for v5/IPFIX, packets for v9) is a late packet; further
    #: behind, or further ahead than ``restart_gap``, is an exporter restart.
    reorder_window: int = 100_000
    restart_gap: int = 1 << 24
    #: At most this many errors are returned per call in ``DecodeResult.errors``.
    max_errors_kept: int = 32
    #: Calls with at least this many datagrams take the bulk path (plain
    #: packets decoded in whole groups, ``collectors.codec.bulk``); 0 never does.
    #: The result is the same either way.
    bulk_min_datagrams: int = 8
    #: The bulk path walks datagrams and gathers records with the compiled
    #: core when it is built (``collectors.codec.core``), else with numpy.
    #: The result is the same either way.
    compiled_core: bool = True


@dataclass(slots=True)
class ExporterStats:
    """Per (exporter, observation domain) figures of one ``decode`` call.

    Counters are deltas for the call; fields marked gauge are the state after it.
    """

    exporter: bytes
    observation_domain_id: int
    netflow_version: int = 0  # gauge: 5, 9 or 10 (0 when no header could be read)
    packets: int = 0
    records: int = 0  # flow records decoded (options records not included)
    bytes: int = 0  # UDP payload bytes
    option_records: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # reason -> count
    sequence_lost: int = 0
    sequence_late: int = 0  # records (v9: packets) that came after a later packet
    sequence_reordered: int = 0  # late or duplicated packets
    restarts: int = 0
    templates_added: int = 0
    templates_withdrawn: int = 0
    templates_expired: int = 0
    templates: int = 0  # gauge: templates known for this exporter and domain
    held_sets: int = 0  # gauge: data sets waiting for their template
    held_bytes: int = 0  # gauge
    held_released: int = 0  # records decoded from held sets in this call
    held_evicted: int = 0  # held sets dropped (bounds or age)
    sampling_rate: int = 1  # gauge: rate of the last record decoded (or announced)

    @property
    def decode_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def records_held(self) -> int:
        """Held *sets* (the record count of a set is unknown without its template)."""
        return self.held_sets

    def count_error(self, reason: str, n: int = 1) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + n


@dataclass(slots=True)
class DecodeCall:
    """What one ``Decoder.decode`` call gathers: the batch being built, the
    figures per exporter and domain, the first errors (and, on the bulk path,
    the sequence log). Made per call; the decoder and its bulk path both
    write into it (:meth:`voipflow.collectors.codec.decoder.Decoder.decode_one`).
    """

    batch: CallBatch
    stats: dict[DomainKey, ExporterStats]
    errors: list[tuple[bytes, DecodeError]]
    max_errors: int
    current_domain: int = 0
    #: bulk decoding: sequence numbers are logged and observed at the end
    seqlog: SequenceLog | None = None
    #: bulk decoding: (exporter, domain) -> position of its last parsed datagram
    version_at: dict[DomainKey, int] = field(default_factory=dict)
    #: bulk decoding: where the datagram decoded one by one starts in the
    #: call's frame (-1: not in a frame)
    frame_at: int = -1

    def stats_for(self, exporter: bytes, domain: int) -> ExporterStats:
        key = (exporter, domain)
        st = self.stats.get(key)
        if st is None:
            st = self.stats[key] = ExporterStats(exporter, domain)
        return st

    def error(self, exporter: bytes, domain: int, exc: DecodeError) -> None:
        self.stats_for(exporter, domain).count_error(exc.reason)
        if len(self.errors) < self.max_errors:
            self.errors.append((exporter, exc))
