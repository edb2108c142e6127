"""The ``traffic.v1`` message: all traffic of one exporter x observation domain x closed window.

Coverage for operators: how much each exporter sent, how much of it the
worker placed in a city, how much was VoIP. The contract is the JSON Schema
``schemas/json/traffic.v1.json``; this module validates against it
(:mod:`voipflow.schemas.jsonschema`), and serialises and parses messages.

Key of a message: :func:`traffic_key` = ``"<exporter>|<window_start_ms>"``
(an exporter's observation domains share the key, so they share a partition).

Errors::

    TrafficError          not a valid traffic.v1 message
     +-- TrafficFormatError    bytes that are not one JSON object
     +-- TrafficVersionError   an object with another ``schema``
"""

from __future__ import annotations

from typing import Any

from voipflow.schemas.jsonschema import MessageCodec

SCHEMA_NAME = "traffic.v1"

#: The counters of a message, in the order the worker's state keeps them.
COUNTERS = (
    "flows",
    "packets",
    "bytes",
    "packets_est",
    "bytes_est",
    "placed_flows",
    "unlocated_flows",
    "unhomed_flows",
    "voip_flows",
    "voip_bytes_est",
)


class TrafficError(ValueError):
    """The message does not satisfy the traffic.v1 JSON Schema."""


class TrafficFormatError(TrafficError):
    """The bytes are not one JSON object."""


class TrafficVersionError(TrafficError):
    """The object names another schema."""


_CODEC = MessageCodec(SCHEMA_NAME, TrafficError, TrafficFormatError, TrafficVersionError)


def validate_traffic(obj: Any) -> dict[str, Any]:
    """Return ``obj`` when it is a valid traffic.v1 message, else raise."""
    return _CODEC.validate(obj)


def traffic_key(exporter: str, window_start_ms: int) -> str:
    """The Kafka key of a traffic message."""
    return f"{exporter}|{int(window_start_ms)}"


def encode_traffic(obj: dict[str, Any]) -> bytes:
    """Validate and serialise one message (compact UTF-8 JSON)."""
    return _CODEC.encode(obj)


def decode_traffic(data: bytes | str) -> dict[str, Any]:
    """Parse and validate one message."""
    return _CODEC.decode(data)
