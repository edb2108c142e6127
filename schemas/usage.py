"""The ``voip-usage.v1`` message: VoIP usage of one city x app x closed window.

The contract is the JSON Schema ``schemas/json/voip-usage.v1.json``; this
module validates against it (:mod:`voipflow.schemas.jsonschema`), and serialises and
parses messages.

Key of a message: :func:`usage_key` = ``"<city>|<app>|<window_start_ms>"``.

Errors::

    UsageError          not a valid voip-usage.v1 message
     +-- UsageFormatError    bytes that are not one JSON object
     +-- UsageVersionError   an object with another ``schema``
"""

from __future__ import annotations

from typing import Any

from voipflow.schemas.jsonschema import JSON_DIR, MessageCodec, load_schema

SCHEMA_NAME = "voip-usage.v1"
SCHEMA_PATH = JSON_DIR / f"{SCHEMA_NAME}.json"


class UsageError(ValueError):
    """The message does not satisfy the voip-usage.v1 JSON Schema."""


class UsageFormatError(UsageError):
    """The bytes are not one JSON object."""


class UsageVersionError(UsageError):
    """The object names another schema."""


_CODEC = MessageCodec(SCHEMA_NAME, UsageError, UsageFormatError, UsageVersionError)


def usage_schema() -> dict[str, Any]:
    """The JSON Schema of voip-usage.v1, as shipped in ``schemas/json``."""
    return load_schema(SCHEMA_NAME)


def validate_usage(obj: Any) -> dict[str, Any]:
    """Return ``obj`` when it is a valid voip-usage.v1 message, else raise."""
    return _CODEC.validate(obj)


def usage_key(city: str, app: str, window_start_ms: int) -> str:
    """The Kafka key of a usage message."""
    return f"{city}|{app}|{int(window_start_ms)}"


def encode_usage(obj: dict[str, Any]) -> bytes:
    """Validate and serialise one message (compact UTF-8 JSON)."""
    return _CODEC.encode(obj)


def decode_usage(data: bytes | str) -> dict[str, Any]:
    """Parse and validate one message."""
    return _CODEC.decode(data)
