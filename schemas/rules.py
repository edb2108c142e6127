"""The ``rules.v1`` and ``rules-feedback.v1`` messages: rules and what enforcement did.

The contracts are the JSON Schemas ``schemas/json/rules.v1.json`` and
``schemas/json/rules-feedback.v1.json``; teams that write enforcement points in
other languages need only those two files. This module validates against them
(:mod:`voipflow.schemas.jsonschema`) and adds the checks a schema cannot express: the
prefixes are CIDR prefixes, port ranges are ordered, a throttle has a rate.

Keys: a rule is keyed by its ``rule_id`` (:func:`rule_key`) on a compacted
topic, and withdrawn by a tombstone (a null value) under the same key; feedback
is keyed ``"<rule_id>|<enforcement_point>"`` (:func:`feedback_key`).

Errors::

    RuleError               not a valid rules.v1 message
     +-- RuleFormatError        bytes that are not one JSON object
     +-- RuleVersionError       an object with another ``schema``
    FeedbackError           not a valid rules-feedback.v1 message
     +-- FeedbackFormatError    bytes that are not one JSON object
     +-- FeedbackVersionError   an object with another ``schema``
"""

from __future__ import annotations

import ipaddress
from typing import Any

from voipflow.schemas.jsonschema import MessageCodec, load_schema

RULES_SCHEMA = "rules.v1"
FEEDBACK_SCHEMA = "rules-feedback.v1"


class RuleError(ValueError):
    """The message does not satisfy the rules.v1 contract."""


class RuleFormatError(RuleError):
    """The bytes are not one JSON object."""


class RuleVersionError(RuleError):
    """The object names another schema."""


class FeedbackError(ValueError):
    """The message does not satisfy the rules-feedback.v1 JSON Schema."""


class FeedbackFormatError(FeedbackError):
    """The bytes are not one JSON object."""


class FeedbackVersionError(FeedbackError):
    """The object names another schema."""


_RULES = MessageCodec(RULES_SCHEMA, RuleError, RuleFormatError, RuleVersionError)
_FEEDBACK = MessageCodec(FEEDBACK_SCHEMA, FeedbackError, FeedbackFormatError, FeedbackVersionError)


def rules_schema() -> dict[str, Any]:
    """The JSON Schema of rules.v1, as shipped in ``schemas/json``."""
    return load_schema(RULES_SCHEMA)


def feedback_schema() -> dict[str, Any]:
    """The JSON Schema of rules-feedback.v1, as shipped in ``schemas/json``."""
    return load_schema(FEEDBACK_SCHEMA)


def _check_rule(obj: dict[str, Any]) -> dict[str, Any]:
    target = obj["target"]
    for i, text in enumerate(target["prefixes"]):
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise RuleError(
                f"$.target.prefixes[{i}]: {text!r} is not a CIDR prefix: {exc}"
            ) from exc
        if str(net) != text:
            raise RuleError(f"$.target.prefixes[{i}]: {text!r} is not canonical, write {net}")
    for i, rng in enumerate(target["ports"]):
        if rng["from"] > rng["to"]:
            raise RuleError(f"$.target.ports[{i}]: from {rng['from']} > to {rng['to']}")
    if obj["action"] == "throttle" and "rate_kbps" not in obj:
        raise RuleError("$: a throttle rule needs rate_kbps")
    if obj["expires_ms"] <= obj["created_ms"]:
        raise RuleError("$: expires_ms must be later than created_ms")
    return obj


def validate_rule(obj: Any) -> dict[str, Any]:
    """Return ``obj`` when it is a valid rules.v1 message, else raise :class:`RuleError`."""
    return _check_rule(_RULES.validate(obj))


def encode_rule(obj: dict[str, Any]) -> bytes:
    """Validate and serialise one rule (compact UTF-8 JSON)."""
    validate_rule(obj)
    return _RULES.encode(obj)


def decode_rule(data: bytes | str) -> dict[str, Any]:
    """Parse and validate one rule."""
    return _check_rule(_RULES.decode(data))


def rule_key(rule_id: str) -> bytes:
    """The Kafka key of a rule and of its tombstone."""
    return rule_id.encode()


def validate_feedback(obj: Any) -> dict[str, Any]:
    """Return ``obj`` when it is a valid rules-feedback.v1 message, else raise."""
    return _FEEDBACK.validate(obj)


def encode_feedback(obj: dict[str, Any]) -> bytes:
    """Validate and serialise one feedback message."""
    return _FEEDBACK.encode(obj)


def decode_feedback(data: bytes | str) -> dict[str, Any]:
    """Parse and validate one feedback message."""
    return _FEEDBACK.decode(data)


def feedback_key(rule_id: str, enforcement_point: str) -> bytes:
    """The Kafka key of a feedback message."""
    return f"{rule_id}|{enforcement_point}".encode()
