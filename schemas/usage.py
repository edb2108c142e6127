"""The ``voip-usage.v1`` message: VoIP usage of one city x app x closed window.

The contract is the JSON Schema ``schemas/json/voip-usage.v1.json``; this
module validates against it, and serialises and parses messages. The validator
interprets the subset of JSON Schema (2020-12) that the project's schemas use:
``type``, ``const``, ``required``, ``properties``, ``additionalProperties:
false``, ``minimum``, ``maximum``, ``minLength`` and ``items`` — enough to keep
the schema file the one source of truth without another dependency.

Key of a message: :func:`usage_key` = ``"<city>|<app>|<window_start_ms>"``.

Errors::

    UsageError          not a valid voip-usage.v1 message
     +-- UsageFormatError    bytes that are not one JSON object
     +-- UsageVersionError   an object with another ``schema``
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_NAME = "voip-usage.v1"
SCHEMA_PATH = Path(__file__).parent / "json" / f"{SCHEMA_NAME}.json"


class UsageError(ValueError):
    """The message does not satisfy the voip-usage.v1 JSON Schema."""


class UsageFormatError(UsageError):
    """The bytes are not one JSON object."""


class UsageVersionError(UsageError):
    """The object names another schema."""


@cache
def usage_schema() -> dict[str, Any]:
    """The JSON Schema of voip-usage.v1, as shipped in ``schemas/json``."""
    with SCHEMA_PATH.open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _check(value: Any, schema: dict[str, Any], where: str) -> None:
    if "const" in schema and value != schema["const"]:
        raise UsageError(f"{where}: expected {schema['const']!r}, got {value!r}")
    t = schema.get("type")
    if t is not None:
        ok = isinstance(value, _TYPES[t]) and not (t != "boolean" and isinstance(value, bool))
        if t == "integer" and isinstance(value, float) and value.is_integer():
            ok = False  # JSON integers must be written without a fraction
        if not ok:
            raise UsageError(f"{where}: expected {t}, got {type(value).__name__}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise UsageError(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise UsageError(f"{where}: {value} > maximum {schema['maximum']}")
        if isinstance(value, float) and value != value:
            raise UsageError(f"{where}: NaN is not a number here")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        raise UsageError(f"{where}: shorter than {schema['minLength']} characters")
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                raise UsageError(f"{where}: missing {name!r}")
        props = schema.get("properties", {})
        for name, sub in value.items():
            if name in props:
                _check(sub, props[name], f"{where}.{name}")
            elif schema.get("additionalProperties", True) is False:
                raise UsageError(f"{where}: unknown property {name!r}")
    if isinstance(value, list | tuple) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]")


def validate_usage(obj: Any) -> dict[str, Any]:
    """Return ``obj`` when it is a valid voip-usage.v1 message, else raise."""
    if not isinstance(obj, dict):
        raise UsageFormatError(f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("schema") != SCHEMA_NAME:
        got = obj.get("schema")
        raise UsageVersionError(f"message schema is {got!r}, expected {SCHEMA_NAME!r}")
    _check(obj, usage_schema(), "$")
    return obj


def usage_key(city: str, app: str, window_start_ms: int) -> str:
    """The Kafka key of a usage message."""
    return f"{city}|{app}|{int(window_start_ms)}"


def encode_usage(obj: dict[str, Any]) -> bytes:
    """Validate and serialise one message (compact UTF-8 JSON)."""
    validate_usage(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def decode_usage(data: bytes | str) -> dict[str, Any]:
    """Parse and validate one message."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageFormatError(f"not JSON: {exc}") from exc
    return validate_usage(obj)
