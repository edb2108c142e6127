"""What the sink writes: Kafka message values -> columns of one ClickHouse table.

One :class:`TableSpec` per topic: ``parse`` turns one message value into a
*part* (columns of that message's rows) or raises :class:`BadMessage` with a
short reason (JSON topics are validated by their contract's codec in
:mod:`voipflow.schemas`); ``combine`` concatenates the parts of a batch into the columns
of one insert. Pure functions, no I/O: the sink (:mod:`voipflow.storage.sink.loop`) does the
Kafka and ClickHouse work around them.

Errors::

    BadMessage(ValueError)   a message that can never be inserted; ``reason``
                             is a short label for metrics (bad_json,
                             wrong_schema, truncated, missing_field, bad_value)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.schemas import health, rule_events, rules, traffic, usage, voipflows
from voipflow.schemas.flowbatch import (
    BatchFormatError,
    BatchSchemaError,
    BatchVersionError,
    text_to_addr16,
)
from voipflow.schemas.jsonschema import load_schema

#: A message's rows as columns (numpy or Arrow arrays), plus its row count.
Part = tuple[dict[str, Any], int]


class BadMessage(ValueError):
    """A message that can never be inserted; ``reason`` labels it for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TableSpec:
    topic: str
    table: str
    parse: Callable[[bytes], Part]
    #: Columns every part has (the sink checks the table has them at start).
    columns: tuple[str, ...]
    #: Keep only the first copy of a row per this key (None: keep all rows):
    #: a ``DateTime`` column first, then strings, integers or 16-byte
    #: addresses (``S16`` columns, ``IPv6`` in the table).
    first_copy_key: tuple[str, ...] | None = None
    #: Table that holds the rows already kept, for ``first_copy_key``.
    first_copy_table: str | None = None
    #: Rows of closed windows: inserted after ``window_batch_delay_s``
    #: rather than ``batch_delay_s``.
    windows: bool = False
    #: A message without a value is a tombstone (a withdrawn rule on a
    #: compacted topic): nothing to insert, and not a bad message.
    tombstones: bool = False
    #: Messages carry source positions (voip-flows): republished copies are
    #: left out (:mod:`voipflow.storage.sink.sources`).
    source_positions: bool = False


def combine(parts: Sequence[Part]) -> tuple[dict[str, Any], int]:
    """Concatenate parts column by column (one copy per column, no per-row work)."""
    if not parts:
        return {}, 0
    names = list(parts[0][0])
    out: dict[str, Any] = {}
    for name in names:
        cols = [p[0][name] for p in parts]
        if isinstance(cols[0], pa.Array | pa.ChunkedArray):
            out[name] = pa.concat_arrays(
                [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols]
            )
        elif isinstance(cols[0], np.ndarray):
            out[name] = np.concatenate(cols)
        else:
            merged: list[Any] = []
            for c in cols:
                merged.extend(c)
            out[name] = merged
    return out, sum(n for _, n in parts)


def with_offsets(part: Part, partition: int, offset: int) -> Part:
    """The part with ``kafka_partition``/``kafka_offset`` columns (servers without tokens)."""
    cols, n = part
    cols = dict(cols)
    cols["kafka_partition"] = np.full(n, partition, dtype=np.uint32)
    cols["kafka_offset"] = np.full(n, offset, dtype=np.uint64)
    return cols, n


# -- voip-flows.v2 (v1 read with role '') ---------------------------------

_MS = "datetime64[ms]"

FLOW_COLUMNS = (
    "time_received",
    "flow_start",
    "flow_end",
    *[
        name
        for name in voipflows.VOIP_FLOW_COLUMNS
        if name not in ("time_received_ms", "flow_start_ms", "flow_end_ms")
    ],
)


def parse_voip_flows(value: bytes) -> Part:
    """A voip-flows.v2 (or v1) batch -> flows_voip columns (times as ``datetime64[ms]``)."""
    try:
        batch = voipflows.decode(value)
    except BatchVersionError as exc:
        raise BadMessage("wrong_schema", str(exc)) from exc
    except BatchSchemaError as exc:
        raise BadMessage("bad_columns", str(exc)) from exc
    except BatchFormatError as exc:
        raise BadMessage("truncated", str(exc)) from exc
    cols: dict[str, Any] = {}
    for name in voipflows.VOIP_FLOW_COLUMNS:
        col = batch.columns[name]
        if name.endswith("_ms"):
            cols[name[: -len("_ms")]] = col.view(_MS)
        else:
            cols[name] = col
    return cols, batch.num_rows


# -- JSON topics -----------------------------------------------------------
#
# Each JSON topic is validated by its contract's codec (schemas/usage.py,
# schemas/traffic.py, schemas/health.py: the JSON Schemas in schemas/json);
# what the schema cannot say (an address that parses, a value that fits the
# column's type) is checked here.


@dataclass(frozen=True, slots=True)
class _Contract:
    name: str
    decode: Callable[[bytes], dict[str, Any]]
    error: type[ValueError]
    format_error: type[ValueError]
    version_error: type[ValueError]


_USAGE = _Contract(
    usage.SCHEMA_NAME,
    usage.decode_usage,
    usage.UsageError,
    usage.UsageFormatError,
    usage.UsageVersionError,
)
_TRAFFIC = _Contract(
    traffic.SCHEMA_NAME,
    traffic.decode_traffic,
    traffic.TrafficError,
    traffic.TrafficFormatError,
    traffic.TrafficVersionError,
)
_RULES = _Contract(
    rules.RULES_SCHEMA,
    rules.decode_rule,
    rules.RuleError,
    rules.RuleFormatError,
    rules.RuleVersionError,
)
_RULE_EVENTS = _Contract(
    rule_events.SCHEMA_NAME,
    rule_events.decode_rule_event,
    rule_events.RuleEventError,
    rule_events.RuleEventFormatError,
    rule_events.RuleEventVersionError,
)
_HEALTH = _Contract(
    health.SCHEMA_NAME,
    health.decode_health,
    health.HealthError,
    health.HealthFormatError,
    health.HealthVersionError,
)


def _decoded(value: bytes, contract: _Contract) -> dict[str, Any]:
    """The message, validated by its contract's codec, or BadMessage with a reason."""
    try:
        return contract.decode(value)
    except contract.format_error as exc:
        raise BadMessage("bad_json", str(exc)) from exc
    except contract.version_error as exc:
        raise BadMessage("wrong_schema", str(exc)) from exc
    except contract.error as exc:
        obj = json.loads(value)  # parsed above, so it parses
        required = load_schema(contract.name).get("required", ())
        missing = [name for name in required if name not in obj]
        if missing:
            raise BadMessage("missing_field", ", ".join(missing)) from exc
        raise BadMessage("bad_value", str(exc)) from exc


def _uint(obj: dict[str, Any], key: str, dtype: str, lo: int = 0) -> np.ndarray:
    """A validated integer field as a one-row column of ``dtype``, refused if it does not fit."""
    v = obj[key]
    if not lo <= v <= np.iinfo(dtype).max:
        raise BadMessage("bad_value", f"{key}={v!r}")
    return np.array([v], dtype=dtype)


def _seconds(obj: dict[str, Any], key: str) -> np.ndarray:
    """A validated ms timestamp field as a one-row ``datetime64[s]`` column."""
    _uint(obj, key, "u8")
    return np.array([obj[key] // 1000], dtype="datetime64[s]")


def _addr16(obj: dict[str, Any], key: str) -> np.ndarray:
    try:
        return np.array([text_to_addr16(obj[key])], dtype="S16")
    except ValueError as exc:
        raise BadMessage("bad_value", f"{key}={obj[key]!r}") from exc


USAGE_COLUMNS = (
    "window_start",
    "window_s",
    "city",
    "region",
    "country",
    "app",
    "flows",
    "packets",
    "bytes",
    "subscribers",
    "subscriber_hashes",
    "call_seconds",
    "voip_share",
    "produced",
)


def parse_usage(value: bytes) -> Part:
    """A voip-usage.v1 window -> one voip_usage_in row."""
    obj = _decoded(value, _USAGE)
    hash_arr = np.array(obj["subscriber_hashes"], dtype=np.uint64)
    cols: dict[str, Any] = {
        "window_start": _seconds(obj, "window_start_ms"),
        "window_s": _uint(obj, "window_s", "u4", 1),
        "city": pa.array([obj["city"]], pa.string()),
        "region": pa.array([obj["region"]], pa.string()),
        "country": pa.array([obj["country"]], pa.string()),
        "app": pa.array([obj["app"]], pa.string()),
        "flows": _uint(obj, "flows", "u8"),
        "packets": _uint(obj, "packets", "u8"),
        "bytes": _uint(obj, "bytes", "u8"),
        "subscribers": _uint(obj, "subscribers", "u8"),
        "subscriber_hashes": pa.array([hash_arr], pa.list_(pa.uint64())),
        "call_seconds": np.array([obj["call_seconds"]], dtype=np.float64),
        "voip_share": np.array([obj["voip_share"]], dtype=np.float64),
        "produced": _uint(obj, "produced_ms", "u8").view(_MS),
    }
    return cols, 1


#: The report's fields as ``exporter_health`` columns (``ts_ms`` -> ``ts``),
#: in the contract's order: the JSON Schema is the one list of them.
HEALTH_COLUMNS = tuple(
    "ts" if name == "ts_ms" else name for name in health.health_fields() if name != "schema"
)

#: Column types of the integer fields of a report (the schema bounds them).
_HEALTH_INTS: dict[str, str] = {
    "observation_domain_id": "u4",
    "netflow_version": "u1",
    "templates": "u4",
    "exporter_restarts": "u4",
    "sampling_rate": "u4",
}


def parse_health(value: bytes) -> Part:
    """An exporter-health.v1 report -> one exporter_health row."""
    obj = _decoded(value, _HEALTH)
    cols: dict[str, Any] = {
        "ts": _uint(obj, "ts_ms", "u8").view(_MS),
        "collector": pa.array([obj["collector"]], pa.string()),
        "exporter": _addr16(obj, "exporter"),
    }
    for key in HEALTH_COLUMNS[3:]:
        cols[key] = _uint(obj, key, _HEALTH_INTS.get(key, "u8"))
    return cols, 1


TRAFFIC_COLUMNS = (
    "window_start",
    "window_s",
    "exporter",
    "observation_domain_id",
    *traffic.COUNTERS,
    "produced",
)


def parse_traffic(value: bytes) -> Part:
    """A traffic.v1 window -> one exporter_traffic_1m row."""
    obj = _decoded(value, _TRAFFIC)
    cols: dict[str, Any] = {
        "window_start": _seconds(obj, "window_start_ms"),
        "window_s": _uint(obj, "window_s", "u4", 1),
        "exporter": _addr16(obj, "exporter"),
        "observation_domain_id": _uint(obj, "observation_domain_id", "u4"),
    }
    for key in traffic.COUNTERS:
        cols[key] = _uint(obj, key, "u8")
    cols["produced"] = _uint(obj, "produced_ms", "u8").view(_MS)
    return cols, 1


RULE_COLUMNS = (
    "rule_id", "version", "created", "action", "city", "app", "match", "rate_limit_kbps",
    "expires", "reason", "author", "body", "policy", "mode", "target_kind",
)  # fmt: skip


def _one(values: Sequence[str]) -> str:
    """The one city (app) of a rule's scope; empty when it has several or none (all)."""
    return str(values[0]) if len(values) == 1 else ""


def _text(value: str) -> pa.Array:
    return pa.array([value], pa.string())


_ZERO_U4 = np.zeros(1, dtype=np.uint32)


def parse_rule(value: bytes) -> Part:
    """A rules.v1 message -> one ``rules`` row (a version of the rule)."""
    obj = _decoded(value, _RULES)
    match = obj["match"]
    cols: dict[str, Any] = {
        "rule_id": _text(obj["rule_id"]),
        "version": _uint(obj, "version", "u4", 1),
        "created": _uint(obj, "created_ms", "u8").view(_MS),
        "action": _text(obj["action"]),
        "city": _text(_one(match.get("cities", []))),
        "app": _text(_one(match.get("apps", []))),
        "match": _text(json.dumps(match, separators=(",", ":"), ensure_ascii=False)),
        "rate_limit_kbps": _uint(obj, "rate_kbps", "u4") if "rate_kbps" in obj else _ZERO_U4,
        "expires": _uint(obj, "expires_ms", "u8").view(_MS),
        "reason": _text(obj["reason"]),
        "author": _text(f"policy:{obj['policy']}"),
        "body": _text(json.dumps(obj, separators=(",", ":"), ensure_ascii=False)),
        "policy": _text(obj["policy"]),
        "mode": _text(obj["mode"]),
        "target_kind": _text(obj["target"]["kind"]),
    }
    return cols, 1


RULE_EVENT_COLUMNS = (
    "ts", "rule_id", "rule_version", "event", "state", "action", "feedback",
    "enforcement_point", "hits", "hit_packets", "hit_bytes", "detail", "event_id", "policy",
    "mode", "city", "app",
)  # fmt: skip


def parse_rule_event(value: bytes) -> Part:
    """A rule-events.v1 message -> one ``rule_events`` row."""
    obj = _decoded(value, _RULE_EVENTS)
    cols: dict[str, Any] = {"ts": _uint(obj, "ts_ms", "u8").view(_MS)}
    for name in RULE_EVENT_COLUMNS[1:]:
        if name == "rule_version":
            cols[name] = _uint(obj, name, "u4")
        elif name in ("hits", "hit_packets", "hit_bytes"):
            cols[name] = _uint(obj, name, "u8")
        else:
            cols[name] = _text(obj[name])
    return cols, 1


def default_specs(
    voip_flows_topic: str = "voip-flows.v1",
    usage_topic: str = "voip-usage.v1",
    health_topic: str = "exporter-health.v1",
    *,
    traffic_topic: str = "traffic.v1",
    flows_table: str = "flows_voip",
    rules_topic: str = "rules.v1",
    rule_events_topic: str = "rule-events.v1",
) -> list[TableSpec]:
    """The sink's topics and the tables they fill."""
    return [
        TableSpec(
            voip_flows_topic, flows_table, parse_voip_flows, FLOW_COLUMNS, source_positions=True
        ),
        TableSpec(
            usage_topic,
            "voip_usage_in",
            parse_usage,
            USAGE_COLUMNS,
            first_copy_key=("window_start", "city", "app"),
            first_copy_table="voip_usage_1m",
            windows=True,
        ),
        TableSpec(health_topic, "exporter_health", parse_health, HEALTH_COLUMNS),
        TableSpec(
            traffic_topic,
            "exporter_traffic_1m",
            parse_traffic,
            TRAFFIC_COLUMNS,
            first_copy_key=("window_start", "exporter", "observation_domain_id"),
            first_copy_table="exporter_traffic_1m",
            windows=True,
        ),
        # every version of a rule; ReplacingMergeTree(version) keeps one copy
        TableSpec(rules_topic, "rules", parse_rule, RULE_COLUMNS, tombstones=True),
        # an event published twice (a producer retry, the evaluator repairing
        # after a crash) carries the same event id: one row
        TableSpec(
            rule_events_topic,
            "rule_events",
            parse_rule_event,
            RULE_EVENT_COLUMNS,
            first_copy_key=("ts", "event_id"),
            first_copy_table="rule_events",
        ),
    ]
