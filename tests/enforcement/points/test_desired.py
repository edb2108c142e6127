"""The desired set: latest valid version per key, refusals, tombstones, expiry."""

from __future__ import annotations

import ipaddress
import json

from tests.enforcement.points.rulesdata import make_rule
from voipflow.enforcement.points.desired import Change, DesiredRules
from voipflow.schemas.rules import encode_rule


def _put(store: DesiredRules, rule: dict) -> Change:
    return store.apply(rule["rule_id"].encode(), encode_rule(rule))


def test_latest_version_wins_and_older_ones_are_ignored() -> None:
    store = DesiredRules()
    _put(store, make_rule(version=2, target={"prefixes": ["198.51.100.0/24"]}))
    change = _put(store, make_rule(version=1, target={"prefixes": ["203.0.113.0/24"]}))
    assert change.stale
    rule = store.rules["r-test-1"]
    assert (rule.version, [str(n) for n in rule.v4]) == (2, ["198.51.100.0/24"])


def test_prefixes_are_collapsed_and_ports_merged_for_interval_sets() -> None:
    store = DesiredRules()
    rule = make_rule(
        target={
            "prefixes": ["10.1.0.0/16", "10.0.0.0/8", "2001:db8::/33", "2001:db8:8000::/33"],
            "ports": [
                {"from": 3478, "to": 3479},
                {"from": 3480, "to": 3481},
                {"from": 5060, "to": 5060},
            ],
        }
    )
    _put(store, rule)
    got = store.rules["r-test-1"]
    assert [str(n) for n in got.v4] == ["10.0.0.0/8"]
    assert [str(n) for n in got.v6] == ["2001:db8::/32"]
    assert got.ports == ((3478, 3481), (5060, 5060))


def test_tombstone_withdraws_and_the_id_stays_known() -> None:
    store = DesiredRules()
    _put(store, make_rule())
    handle = store.rules["r-test-1"].handle
    store.apply(b"r-test-1", None)
    assert store.rules == {}
    assert store.name_of(handle) == "r-test-1"


def test_unknown_schema_version_is_refused_with_its_version() -> None:
    store = DesiredRules()
    doc = make_rule(version=7)
    doc["schema"] = "rules.v2"
    change = store.apply(b"r-test-1", json.dumps(doc).encode())
    assert change.refused is not None
    assert (change.refused.reason, change.refused.version) == ("schema_version", 7)
    assert store.rules == {}


def test_malformed_prefix_and_garbage_are_refused() -> None:
    store = DesiredRules()
    doc = make_rule(target={"prefixes": ["10.0.0.1/8"]})
    change = store.apply(b"r-test-1", json.dumps(doc).encode())
    assert change.refused is not None and change.refused.reason == "invalid"
    assert "host bits set" in change.refused.error
    change = store.apply(b"r-x", b"\xff not json")
    assert change.refused is not None
    assert (change.refused.reason, change.refused.version) == ("not_json", 0)


def test_never_block_overlap_is_refused_for_block_and_throttle_only() -> None:
    store = DesiredRules(never_block=[ipaddress.ip_network("198.51.100.128/25")])
    change = _put(store, make_rule())
    assert change.refused is not None and change.refused.reason == "never_block"
    assert "198.51.100.128/25" in change.refused.error
    change = _put(store, make_rule("r-mon", action="monitor"))
    assert change.refused is None
    wider = make_rule(
        "r-wide", target={"prefixes": ["198.51.0.0/16"]}, action="throttle", rate_kbps=64
    )
    refused = _put(store, wider).refused
    assert refused is not None and refused.reason == "never_block"


def test_a_block_of_everything_is_refused() -> None:
    store = DesiredRules()
    change = _put(store, make_rule(target={"prefixes": [], "protocol": "any", "ports": []}))
    assert change.refused is not None and change.refused.reason == "matches_everything"


def test_a_refused_new_version_removes_the_old_one() -> None:
    store = DesiredRules(never_block=[ipaddress.ip_network("192.0.2.0/24")])
    _put(store, make_rule())
    change = _put(store, make_rule(version=2, target={"prefixes": ["192.0.2.0/24"]}))
    assert change.refused is not None
    assert "r-test-1" not in store.rules
    assert store.versions["r-test-1"] == 2


def test_key_must_be_the_rule_id() -> None:
    store = DesiredRules()
    change = store.apply(b"other", encode_rule(make_rule()))
    assert change.refused is not None and change.refused.reason == "key_mismatch"


def test_expired_rules_are_not_in_force() -> None:
    store = DesiredRules()
    rule = make_rule(created_ms=1000, expires_ms=5000)
    _put(store, rule)
    assert list(store.in_force(4999)) == ["r-test-1"]
    assert store.in_force(5000) == {}
    assert store.next_expiry_ms(0) == 5000


def test_a_block_without_prefixes_is_refused_when_never_block_is_set() -> None:
    ports_only = make_rule(target={"prefixes": [], "ports": [{"from": 3478, "to": 3478}]})
    assert _put(DesiredRules(), ports_only).refused is None
    store = DesiredRules(never_block=[ipaddress.ip_network("192.0.2.0/24")])
    change = _put(store, ports_only)
    assert change.refused is not None and change.refused.reason == "never_block"


def test_rules_past_the_maximum_are_refused_but_existing_ones_change() -> None:
    store = DesiredRules(max_rules=2)
    _put(store, make_rule("r-1"))
    _put(store, make_rule("r-2"))
    change = _put(store, make_rule("r-3"))
    assert change.refused is not None and change.refused.reason == "max_rules"
    assert _put(store, make_rule("r-2", version=2, mode="shadow")).refused is None
    store.apply(b"r-1", None)
    assert _put(store, make_rule("r-3", version=2)).refused is None
