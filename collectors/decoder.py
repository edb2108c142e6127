"""Decode NetFlow v5, NetFlow v9 and IPFIX export packets into flow batches.

Pure code: bytes in, columns out; no sockets, no logging, no clock. The
receiving runtime owns the sockets, Kafka and metrics and calls this API.

API
---
::

    from collectors.decoder import Decoder, DecoderConfig, DecodeResult
    from collectors.templates import TemplateCache

    cache = TemplateCache(expiry_s=1800)          # one per process
    cache.load(path)                              # optional, on start
    dec = Decoder(cache, DecoderConfig(sampling_override={addr16: 100}))
    res: DecodeResult = dec.decode([(payload, exporter16, received_ms), ...])
    res.batch        # schemas.flowbatch.FlowBatch of every record decoded in
                     # the call, including held data released by a template
                     # that arrived in this call
    res.stats        # {(exporter16, observation_domain_id): ExporterStats}
                     # counters are deltas for this call, gauges are current
    res.errors       # [(exporter16, DecodeError), ...] first few, for logs
    cache.save(path)                              # on stop

* ``payload`` is one UDP payload (``bytes``/``bytearray``/``memoryview``),
  ``exporter16`` the sender address as 16 bytes (IPv4 mapped into
  ``::ffff:0:0/96``, see ``schemas.flowbatch.text_to_addr16``) and
  ``received_ms`` the receive time in UTC ms (it also drives template and
  held-data expiry). Hand over many datagrams per call: records of the same
  template across all of them are decoded by one ``numpy.frombuffer``.
* A malformed packet or set is counted in ``stats[...].errors[reason]`` and
  skipped; the other sets and datagrams of the call are decoded. ``decode``
  raises nothing for bad input.
* Counters (``packets``, ``bytes``) are unscaled; ``sampling_rate`` says which
  1-in-N sampling applied to each record (the flows.v1 contract).
* Sequence numbers: a gap becomes ``sequence_lost``, in *records* for v5 and
  IPFIX (their sequence counts records) and in *packets* for v9 (RFC 3954
  counts export packets). Late or duplicated packets count in
  ``sequence_reordered`` and give back the loss they had caused. A restarted
  exporter (v5/v9 boot time moved and sequence broken; IPFIX sequence jumped
  back or far ahead) counts in ``restarts``, without loss. After an IPFIX
  message whose data set had to be held (record count unknown), the next
  sequence number is taken as is, without counting loss.

Errors (raised by the lower layers, caught and counted here; see
:mod:`collectors.errors`)::

    DecodeError (ValueError)     .reason
     +-- TruncatedError          "truncated"
     +-- BadVersionError         "bad_version"
     +-- BadLengthError          "bad_length"
     +-- BadSetError             "bad_set"
     +-- BadTemplateError        "bad_template"
     |    +-- TooManyFieldsError "too_many_fields"
     |    +-- TemplateLoopError  "template_loop"
     +-- BadRecordError          "bad_record"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from collectors.errors import (
    REASONS,
    BadLengthError,
    BadRecordError,
    BadSetError,
    BadTemplateError,
    BadVersionError,
    DecodeError,
    TemplateLoopError,
    TooManyFieldsError,
    TruncatedError,
)
from collectors.templates import TemplateCache
from schemas.flowbatch import FlowBatch

__all__ = [
    "REASONS",
    "BadLengthError",
    "BadRecordError",
    "BadSetError",
    "BadTemplateError",
    "BadVersionError",
    "Datagram",
    "DecodeError",
    "DecodeResult",
    "Decoder",
    "DecoderConfig",
    "ExporterStats",
    "TemplateLoopError",
    "TooManyFieldsError",
    "TruncatedError",
]

#: (UDP payload, exporter address as 16 bytes, receive time in UTC ms)
Datagram = tuple[bytes | bytearray | memoryview, bytes, int]


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
    sequence_reordered: int = 0
    restarts: int = 0
    templates_added: int = 0
    templates_withdrawn: int = 0
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
class DecodeResult:
    batch: FlowBatch
    stats: dict[tuple[bytes, int], ExporterStats]
    errors: list[tuple[bytes, DecodeError]] = field(default_factory=list)


class Decoder:
    """Decodes lists of export datagrams with the templates in ``templates``."""

    def __init__(self, templates: TemplateCache, config: DecoderConfig | None = None) -> None:
        self.templates = templates
        self.config = config or DecoderConfig()

    def decode(self, datagrams: Sequence[Datagram]) -> DecodeResult:
        """Decode every datagram; never raises for bad input (see module doc)."""
        raise NotImplementedError
