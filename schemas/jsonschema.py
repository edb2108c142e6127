"""The subset of JSON Schema (2020-12) the project's message schemas use.

``type``, ``const``, ``enum``, ``required``, ``properties``, ``additionalProperties:
false``, ``minimum``, ``maximum``, ``minLength`` and ``items`` — enough to
keep the files in ``schemas/json`` the one source of truth for the JSON
topics without another dependency. Each message module (:mod:`voipflow.schemas.usage`,
:mod:`voipflow.schemas.traffic`) builds a :class:`MessageCodec` with its own error
classes, so callers see that module's exception tree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

JSON_DIR = Path(__file__).parent / "json"

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``schemas/json/<name>.json``."""
    with (JSON_DIR / f"{name}.json").open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


def check(value: Any, schema: dict[str, Any], where: str, error: type[ValueError]) -> None:
    """Raise ``error`` naming the first place where ``value`` breaks ``schema``."""
    if "const" in schema and value != schema["const"]:
        raise error(f"{where}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise error(f"{where}: expected one of {schema['enum']!r}, got {value!r}")
    t = schema.get("type")
    if t is not None:
        ok = isinstance(value, _TYPES[t]) and not (t != "boolean" and isinstance(value, bool))
        if t == "integer" and isinstance(value, float) and value.is_integer():
            ok = False  # JSON integers must be written without a fraction
        if not ok:
            raise error(f"{where}: expected {t}, got {type(value).__name__}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise error(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise error(f"{where}: {value} > maximum {schema['maximum']}")
        if isinstance(value, float) and not math.isfinite(value):
            raise error(f"{where}: {value} is not a JSON number")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        raise error(f"{where}: shorter than {schema['minLength']} characters")
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                raise error(f"{where}: missing {name!r}")
        props = schema.get("properties", {})
        for name, sub in value.items():
            if name in props:
                check(sub, props[name], f"{where}.{name}", error)
            elif schema.get("additionalProperties", True) is False:
                raise error(f"{where}: unknown property {name!r}")
    if isinstance(value, list | tuple) and "items" in schema:
        if _all_plain_integers(value, schema["items"]):
            return
        for i, item in enumerate(value):
            check(item, schema["items"], f"{where}[{i}]", error)


#: The keywords an ``items`` schema may have for :func:`_all_plain_integers`.
_INTEGER_KEYWORDS = frozenset({"type", "minimum", "maximum"})


def _all_plain_integers(value: list[Any] | tuple[Any, ...], items: dict[str, Any]) -> bool:
    """True when ``items`` asks only for integers in a range and every element is
    a plain ``int`` inside it: the whole array checked by a few C-level passes
    (a usage message's subscriber hashes run to thousands). False means "check
    element by element", which also names the first bad one."""
    if items.get("type") != "integer" or not _INTEGER_KEYWORDS.issuperset(items):
        return False
    if not value:
        return True
    if not all(type(item) is int for item in value):  # bool and float are not
        return False
    lo, hi = items.get("minimum"), items.get("maximum")
    return (lo is None or min(value) >= lo) and (hi is None or max(value) <= hi)


@dataclass(frozen=True)
class MessageCodec:
    """Validate, encode and decode the JSON messages of one schema.

    ``error`` is raised for a value that breaks the schema, ``format_error``
    (a subclass) for bytes that are not one JSON object, ``version_error``
    (a subclass) for an object whose ``schema`` field names another schema.
    """

    name: str
    error: type[ValueError]
    format_error: type[ValueError]
    version_error: type[ValueError]

    def validate(self, obj: Any) -> dict[str, Any]:
        """Return ``obj`` when it is a valid message, else raise."""
        if not isinstance(obj, dict):
            raise self.format_error(f"expected a JSON object, got {type(obj).__name__}")
        if obj.get("schema") != self.name:
            got = obj.get("schema")
            raise self.version_error(f"message schema is {got!r}, expected {self.name!r}")
        check(obj, load_schema(self.name), "$", self.error)
        return obj

    def encode(self, obj: dict[str, Any]) -> bytes:
        """Validate and serialise one message (compact UTF-8 JSON)."""
        self.validate(obj)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes | str) -> dict[str, Any]:
        """Parse and validate one message."""
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.format_error(f"not JSON: {exc}") from exc
        return self.validate(obj)
