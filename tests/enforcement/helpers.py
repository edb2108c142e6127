"""Building blocks of the enforcement tests: usage windows, policies, an evaluator,
feedback of enforcement points, and a topic read to its end."""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from voipflow.enforcement.config import GuardrailConfig
from voipflow.enforcement.evaluator import Evaluator
from voipflow.enforcement.guardrails import Guardrails
from voipflow.enforcement.policy import Policy, parse_policies
from voipflow.enforcement.targets import PeerSet, TargetResolver
from voipflow.schemas.rules import validate_feedback
from voipflow.schemas.usage import validate_usage
from voipflow.streams.providers import ProviderRanges, load_providers

T0 = 1_760_000_000_000 // 60_000 * 60_000  # a minute boundary, UTC ms
CITY_PREFIXES = {
    "Berlin": ["10.1.0.0/16", "2001:db8:1::/48"],
    "Hamburg": ["10.2.0.0/16"],
    "Munich": ["10.3.0.0/16"],
}


def usage(
    city: str,
    app: str,
    minute: int,
    *,
    call_seconds: float = 0.0,
    subscribers: int = 0,
    window_s: int = 60,
    region: str = "",
    country: str = "DE",
) -> dict[str, Any]:
    """A valid voip-usage.v1 window ``minute`` windows after T0."""
    return validate_usage(
        {
            "schema": "voip-usage.v1",
            "window_start_ms": T0 + minute * window_s * 1000,
            "window_s": window_s,
            "city": city,
            "region": region or city,
            "country": country,
            "app": app,
            "flows": 10,
            "packets": 1000,
            "bytes": 100_000,
            "subscribers": subscribers,
            "subscriber_hashes": list(range(subscribers)),
            "call_seconds": call_seconds,
            "voip_share": 0.1,
            "produced_ms": T0,
        }
    )


def policy(
    name: str = "p",
    *,
    apps: str = "[teams]",
    cities: str = "[]",
    metric: str = "call_seconds",
    threshold: float = 100,
    windows: int = 3,
    action: str = "block",
    target: str = "subscriber_prefixes",
    ttl: str = "10m",
    mode: str = "enforce",
    rate: int | None = None,
) -> Policy:
    text = f"""
policies:
  - name: {name}
    match: {{apps: {apps}, cities: {cities}}}
    condition: {{metric: {metric}, threshold: {threshold}, for: {windows}}}
    action: {action}
    target: {target}
    ttl: {ttl}
    mode: {mode}
"""
    if rate is not None:
        text += f"    rate_kbps: {rate}\n"
    return parse_policies(text).policies[0]


@cache
def providers() -> ProviderRanges:
    """The shipped provider ranges, read once per test session."""
    return load_providers()


def insert_via_sink(ch: Any, rules: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """Write rules and events as the sink does: each message through its table mapping."""
    from voipflow.schemas.rule_events import encode_rule_event
    from voipflow.schemas.rules import encode_rule
    from voipflow.storage.sink.tables import combine, parse_rule, parse_rule_event

    if rules:
        cols, _ = combine([parse_rule(encode_rule(r)) for r in rules])
        ch.insert("rules", cols)
    if events:
        cols, _ = combine([parse_rule_event(encode_rule_event(e)) for e in events])
        ch.insert("rule_events", cols)


def evaluator(
    policies: list[Policy],
    guard: GuardrailConfig | None = None,
    city_prefixes: dict[str, list[str]] | None = None,
) -> Evaluator:
    resolver = TargetResolver(
        providers(),
        CITY_PREFIXES if city_prefixes is None else city_prefixes,
        PeerSet(timeout_ms=600_000, max_peers=100),
    )
    return Evaluator(policies, resolver, Guardrails(guard or GuardrailConfig()))


def rule_feedback(
    rule: dict[str, Any], status: str, ep: str, at: int, **extra: Any
) -> dict[str, Any]:
    """A rules-feedback.v1 message of an enforcement point about ``rule``."""
    return validate_feedback(
        {
            "schema": "rules-feedback.v1",
            "rule_id": rule["rule_id"],
            "rule_version": rule["version"],
            "enforcement_point": ep,
            "backend": "nftables",
            "status": status,
            "mode": rule["mode"],
            "observed_ms": at,
            **extra,
        }
    )


def read_all(bootstrap: str, topic: str) -> list[tuple[str, bytes | None]]:
    """Every message of a topic, in offset order per partition (no compaction view)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[tuple[str, bytes | None]] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for records in consumer.poll(timeout_ms=500).values():
                out += [(r.key.decode(), r.value) for r in records]
        return out
    finally:
        consumer.close()
