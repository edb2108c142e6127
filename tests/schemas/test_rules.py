"""rules.v1 and rules-feedback.v1: the codec accepts what the contract allows
and refuses, with the place named, what it does not."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from voipflow.schemas.rules import (
    FeedbackVersionError,
    RuleError,
    RuleFormatError,
    RuleVersionError,
    decode_feedback,
    decode_rule,
    encode_feedback,
    encode_rule,
)

RULE: dict[str, Any] = {
    "schema": "rules.v1",
    "rule_id": "r-0123456789abcdef",
    "version": 1,
    "policy": "block-p2p-voip-shenzhen",
    "mode": "shadow",
    "action": "block",
    "match": {"apps": ["whatsapp"], "cities": ["Shenzhen"]},
    "target": {
        "kind": "provider_ranges",
        "prefixes": ["157.240.0.0/16", "2a03:2880::/32"],
        "protocol": "udp",
        "ports": [{"from": 3478, "to": 3478}],
    },
    "created_ms": 1_700_000_000_000,
    "expires_ms": 1_700_003_600_000,
    "evidence": {
        "condition": "call_seconds > 600 for 3 windows",
        "windows": [
            {
                "window_start_ms": 1_699_999_880_000,
                "window_s": 60,
                "city": "Shenzhen",
                "app": "whatsapp",
                "metrics": {"call_seconds": 912.5},
            }
        ],
    },
    "reason": "block-p2p-voip-shenzhen: whatsapp call_seconds > 600 in Shenzhen for 3 windows",
    "produced_ms": 1_700_000_000_500,
}


def test_a_rule_round_trips() -> None:
    assert decode_rule(encode_rule(RULE)) == RULE


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("target", "prefixes"), ["157.240.0.1/16"], "not a CIDR prefix"),
        (("target", "prefixes"), ["2A03:2880::/32"], "not canonical"),
        (("target", "prefixes"), ["city"], "not a CIDR prefix"),
        (("target", "ports"), [{"from": 10, "to": 9}], "from 10 > to 9"),
        (("action",), "throttle", "needs rate_kbps"),
        (("action",), "drop", "expected one of"),
        (("mode",), "dry-run", "expected one of"),
        (("expires_ms",), 1_600_000_000_000, "later than created_ms"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_place(
    path: tuple[str, ...], value: Any, words: str
) -> None:
    bad = copy.deepcopy(RULE)
    node = bad
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    with pytest.raises(RuleError, match=words):
        encode_rule(bad)


def test_other_schema_versions_and_non_json_are_told_apart() -> None:
    with pytest.raises(RuleVersionError):
        decode_rule(b'{"schema": "rules.v2"}')
    with pytest.raises(RuleFormatError):
        decode_rule(b"\xff not json")


def test_feedback_round_trips_and_refuses_unknown_status() -> None:
    fb = {
        "schema": "rules-feedback.v1",
        "rule_id": RULE["rule_id"],
        "rule_version": 1,
        "enforcement_point": "bng-1",
        "backend": "nftables",
        "status": "applied",
        "mode": "shadow",
        "hit_packets": 12,
        "hit_bytes": 2400,
        "observed_ms": 1_700_000_001_000,
    }
    assert decode_feedback(encode_feedback(fb)) == fb
    with pytest.raises(FeedbackVersionError):
        decode_feedback(b'{"schema": "rules-feedback.v0"}')
    with pytest.raises(ValueError, match="expected one of"):
        encode_feedback({**fb, "status": "done"})
