"""Errors of the NetFlow/IPFIX decoders.

Every error a decoder raises for bad input is a :class:`DecodeError` whose
``reason`` is a short, stable token: the key under which the collector counts
the error per exporter and observation domain (``ExporterStats.errors``) and
the label of the ``decode_errors`` metric. The decoder catches them itself, so
one malformed packet or set never stops the others of the same call.

Errors::

    DecodeError (ValueError)     .reason
     +-- TruncatedError          "truncated"        packet or set shorter than its header says
     +-- BadVersionError         "bad_version"      not NetFlow v5, v9 or IPFIX (10)
     +-- BadLengthError          "bad_length"       a length field contradicts the bytes
     |                                               (IPFIX message length, set length < 4,
     |                                               v5 count vs size)
     +-- BadSetError             "bad_set"          reserved set/flowset id
     +-- BadTemplateError        "bad_template"     malformed (options) template record
     |    +-- TooManyFieldsError "too_many_fields"  field count above the configured bound
     |    +-- TemplateLoopError  "template_loop"    a walk that does not advance or exceeds
     |    |                                          its iteration bound (never loops)
     |    +-- TooManyTemplatesError "too_many_templates"  a new template while the cache
     |                                               holds its bound (per domain or in all)
     +-- BadRecordError          "bad_record"       a data record that cannot be walked
                                                     (variable-length field past its set)

Reasons that are counted without an exception: ``"no_template"`` (a data set
held until its template arrives), ``"held_evicted"`` (a held set dropped by
the bounds or by age), ``"template_expired"``.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """Bad export data; ``reason`` is the counter key."""

    reason = "decode_error"


class TruncatedError(DecodeError):
    reason = "truncated"


class BadVersionError(DecodeError):
    reason = "bad_version"


class BadLengthError(DecodeError):
    reason = "bad_length"


class BadSetError(DecodeError):
    reason = "bad_set"


class BadTemplateError(DecodeError):
    reason = "bad_template"


class TooManyFieldsError(BadTemplateError):
    reason = "too_many_fields"


class TemplateLoopError(BadTemplateError):
    reason = "template_loop"


class TooManyTemplatesError(BadTemplateError):
    reason = "too_many_templates"


class BadRecordError(DecodeError):
    reason = "bad_record"


#: Every reason a decoder can count, for pre-creating metric label sets.
REASONS: tuple[str, ...] = (
    TruncatedError.reason,
    BadVersionError.reason,
    BadLengthError.reason,
    BadSetError.reason,
    BadTemplateError.reason,
    TooManyFieldsError.reason,
    TemplateLoopError.reason,
    TooManyTemplatesError.reason,
    BadRecordError.reason,
    "no_template",
    "held_evicted",
    "template_expired",
)
