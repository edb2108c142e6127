"""The ``exporter-health.v1`` message: one exporter x observation domain as a collector saw it.

The contract is the JSON Schema ``schemas/json/exporter-health.v1.json``
(the fields, their ranges and what they mean); this module validates against
it (:mod:`voipflow.schemas.jsonschema`), and serialises and parses messages. The
collectors write these reports (``collectors/health.py``), the sink inserts
them into ``exporter_health``.

Key of a message: the exporter address as text.

Errors::

    HealthError          not a valid exporter-health.v1 message
     +-- HealthFormatError    bytes that are not one JSON object
     +-- HealthVersionError   an object with another ``schema``
"""

from __future__ import annotations

from typing import Any

from voipflow.schemas.jsonschema import MessageCodec, load_schema

SCHEMA_NAME = "exporter-health.v1"


class HealthError(ValueError):
    """The message does not satisfy the exporter-health.v1 JSON Schema."""


class HealthFormatError(HealthError):
    """The bytes are not one JSON object."""


class HealthVersionError(HealthError):
    """The object names another schema."""


_CODEC = MessageCodec(SCHEMA_NAME, HealthError, HealthFormatError, HealthVersionError)


def health_schema() -> dict[str, Any]:
    """The JSON Schema of exporter-health.v1, as shipped in ``schemas/json``."""
    return load_schema(SCHEMA_NAME)


def health_fields() -> tuple[str, ...]:
    """The fields of a report, in the schema's order (``schema`` first)."""
    return tuple(health_schema()["required"])


def validate_health(obj: Any) -> dict[str, Any]:
    """Return ``obj`` when it is a valid exporter-health.v1 message, else raise."""
    return _CODEC.validate(obj)


def encode_health(obj: dict[str, Any]) -> bytes:
    """Validate and serialise one message (compact UTF-8 JSON)."""
    return _CODEC.encode(obj)


def decode_health(data: bytes | str) -> dict[str, Any]:
    """Parse and validate one message."""
    return _CODEC.decode(data)
