"""The ``rule-events.v1`` message: one state change of one rule.

The contract is ``schemas/json/rule-events.v1.json``. The policy evaluator
publishes ``proposed`` and ``refused`` events, the ledger the rest; the sink
writes them to ``rule_events``. Key: the rule id (:func:`event_key`).

Errors::

    RuleEventError              not a valid rule-events.v1 message
     +-- RuleEventFormatError   bytes that are not one JSON object
     +-- RuleEventVersionError  an object with another ``schema``
"""

from __future__ import annotations

from typing import Any

from voipflow.schemas.jsonschema import MessageCodec, load_schema

SCHEMA_NAME = "rule-events.v1"


class RuleEventError(ValueError):
    """The message does not satisfy the rule-events.v1 JSON Schema."""


class RuleEventFormatError(RuleEventError):
    """The bytes are not one JSON object."""


class RuleEventVersionError(RuleEventError):
    """The object names another schema."""


_CODEC = MessageCodec(SCHEMA_NAME, RuleEventError, RuleEventFormatError, RuleEventVersionError)


def rule_events_schema() -> dict[str, Any]:
    """The JSON Schema of rule-events.v1, as shipped in ``schemas/json``."""
    return load_schema(SCHEMA_NAME)


def validate_rule_event(obj: Any) -> dict[str, Any]:
    """Return ``obj`` when it is a valid rule-events.v1 message, else raise."""
    return _CODEC.validate(obj)


def encode_rule_event(obj: dict[str, Any]) -> bytes:
    """Validate and serialise one event (compact UTF-8 JSON)."""
    return _CODEC.encode(obj)


def decode_rule_event(data: bytes | str) -> dict[str, Any]:
    """Parse and validate one event."""
    return _CODEC.decode(data)


def event_key(rule_id: str) -> bytes:
    """The Kafka key of an event: its rule, so one rule's events stay in order."""
    return rule_id.encode()
