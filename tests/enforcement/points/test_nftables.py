"""The nftables backend in network namespaces: real kernel, real packets.

A UDP media stream runs from the provider namespace to the subscriber
namespace through the router namespace, where the rules are installed. The
reconciler is driven directly here (no Kafka); test_nft_point.py runs the
whole point.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.enforcement.points.netns import Lab, Media, require_netns
from tests.enforcement.points.rulesdata import make_rule
from voipflow.enforcement.points.config import EnforceConfig, parse_prefixes
from voipflow.enforcement.points.desired import DesiredRules
from voipflow.enforcement.points.metrics import EnforceMetrics
from voipflow.enforcement.points.nftables import NftBackend
from voipflow.enforcement.points.reconcile import Feedback, Reconciler
from voipflow.schemas.rules import encode_rule, validate_feedback

pytestmark = pytest.mark.slow


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_netns()
    lab = Lab().up()
    try:
        yield lab
    finally:
        lab.close()


class Point:
    """A reconciler on the router namespace's nftables, fed rules by hand."""

    def __init__(self, lab: Lab, never_block: str = "", **config: Any) -> None:
        self.config = EnforceConfig(point_id="t", nft_netns=lab.router, **config)
        self.backend = NftBackend(self.config, parse_prefixes(never_block))
        self.backend.start()
        self.store = DesiredRules()
        self.metrics = EnforceMetrics()
        self.rec = Reconciler(self.backend, self.store, Feedback("t", "nftables"), self.metrics)

    def put(self, rule: dict[str, Any]) -> None:
        change = self.store.apply(rule["rule_id"].encode(), encode_rule(rule))
        assert change.refused is None

    def reconcile(self, hits: bool = False) -> list[dict[str, Any]]:
        out = self.rec.reconcile(hits=hits)
        for msg in out:
            validate_feedback(msg)
        return out

    def table(self) -> str:
        """The table without its counters and countdowns, with handles (recreation shows)."""
        res = self.backend._nft(["-s", "-a", "list", "table", "inet", "voipflow"])
        return res.stdout


def _statuses(out: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((m["rule_id"], m["status"]) for m in out)


def test_block_stops_media_counts_hits_and_lifts_at_expiry(lab: Lab, tmp_path: Path) -> None:
    media = Media(lab, tmp_path)
    assert media.started(), "media does not flow through the router before any rule"
    point = Point(lab)
    now = int(time.time() * 1000)
    point.put(make_rule("r-block", created_ms=now, expires_ms=now + 5000))
    assert _statuses(point.reconcile()) == [("r-block", "applied")]
    time.sleep(0.3)
    assert not media.flowing(), "media still flows while the block is applied"
    hits = [m for m in point.reconcile(hits=True) if m["status"] == "hits"]
    assert hits and hits[0]["hit_packets"] > 50 and hits[0]["hit_bytes"] > 50 * 172
    while int(time.time() * 1000) < now + 5000:
        time.sleep(0.2)
    assert media.flowing(1.5), "media did not come back after the rule expired"
    out = point.reconcile()
    assert _statuses(out) == [("r-block", "expired")]
    assert out[0]["hit_packets"] > 50
    assert "r" not in point.table().split("chain rules_enforce")[1].split("}")[0].strip()


def test_shadow_mode_counts_and_drops_nothing(lab: Lab, tmp_path: Path) -> None:
    media = Media(lab, tmp_path)
    point = Point(lab)
    point.put(make_rule("r-shadow", mode="shadow"))
    assert _statuses(point.reconcile()) == [("r-shadow", "applied")]
    time.sleep(0.3)
    assert media.flowing(), "shadow mode dropped media"
    time.sleep(0.5)
    hits = [m for m in point.reconcile(hits=True) if m["status"] == "hits"]
    assert hits[0]["mode"] == "shadow" and hits[0]["hit_packets"] > 50


def test_ipv6_block_stops_ipv6_media_only(lab: Lab, tmp_path: Path) -> None:
    media6 = Media(lab, tmp_path, port=40006, v6=True)
    media4 = Media(lab, tmp_path, port=40004)
    assert media6.started(), "IPv6 media does not flow through the router before any rule"
    point = Point(lab)
    point.put(make_rule("r-v6", target={"prefixes": ["2001:db8:100::/48"]}))
    assert _statuses(point.reconcile()) == [("r-v6", "applied")]
    time.sleep(0.3)
    assert not media6.flowing() and media4.flowing()
    hits = [m for m in point.reconcile(hits=True) if m["status"] == "hits"]
    assert hits[0]["hit_packets"] > 50


def test_throttle_limits_the_rate(lab: Lab, tmp_path: Path) -> None:
    media = Media(lab, tmp_path, pps=200)
    time.sleep(0.5)
    before = media.received()
    time.sleep(2.0)
    free = media.received() - before
    point = Point(lab)
    # 64 kbit/s = 8000 bytes/s: about 40 of the 200 datagrams (200 bytes on IP) a second.
    point.put(make_rule("r-slow", action="throttle", rate_kbps=64))
    point.reconcile()
    time.sleep(0.5)
    before = media.received()
    time.sleep(2.0)
    limited = media.received() - before
    assert 0 < limited < free * 0.5, (free, limited)


def test_ports_and_protocol_narrow_the_match(lab: Lab, tmp_path: Path) -> None:
    media = Media(lab, tmp_path, port=40000)
    other = Media(lab, tmp_path, port=41000)
    point = Point(lab)
    point.put(
        make_rule("r-port", target={"ports": [{"from": 39990, "to": 40010}], "protocol": "udp"})
    )
    point.reconcile()
    time.sleep(0.3)
    assert not media.flowing() and other.flowing()
    point.put(make_rule("r-port", version=2, target={"protocol": "tcp", "ports": []}))
    assert _statuses(point.reconcile()) == [("r-port", "applied")]
    time.sleep(0.3)
    assert media.flowing(), "a tcp-only rule dropped udp media"


def test_reconcile_is_idempotent_and_repairs_drift(lab: Lab) -> None:
    point = Point(lab, never_block="192.0.2.0/24")
    point.put(make_rule("r-1", target={"prefixes": ["198.51.100.0/24", "2001:db8::/32"]}))
    point.put(make_rule("r-2", mode="shadow", target={"prefixes": ["203.0.113.0/24"]}))
    assert _statuses(point.reconcile()) == [("r-1", "applied"), ("r-2", "applied")]
    first = point.table()
    assert point.reconcile() == []
    assert point.table() == first, "a reconcile without changes changed the table"

    # An element deleted by hand comes back.
    h = point.store.rules["r-1"].handle
    assert lab.nft("delete", "element", "inet", "voipflow", f"{h}_4", "{ 198.51.100.0/24 }")
    out = point.reconcile()
    assert _statuses(out) == [("r-1", "applied")]
    assert "drift repaired" in out[0]["detail"]
    assert "198.51.100.0/24" in point.table()

    # The whole table deleted by hand comes back with every rule.
    assert lab.nft("delete", "table", "inet", "voipflow").returncode == 0
    out = point.reconcile()
    assert _statuses(out) == [("r-1", "applied"), ("r-2", "applied")]
    assert all("drift" in m["detail"] for m in out)
    assert (
        point.metrics.registry.get_sample_value("voipflow_enforce_drift_total", {"kind": "base"})
        == 1
    )
    assert point.reconcile() == []
    doc = json.loads(lab.nft("-j", "list", "table", "inet", "voipflow").stdout)
    jumps = [o for o in doc["nftables"] if "rule" in o and o["rule"].get("comment") == h]
    assert len(jumps) == 1, "the rule's jump is doubled or missing"


def test_a_restarted_point_keeps_what_is_right_and_removes_what_is_stale(lab: Lab) -> None:
    keep = make_rule("r-keep")
    old = Point(lab)
    old.put(keep)
    old.put(make_rule("r-gone", target={"prefixes": ["203.0.113.0/24"]}))
    old.put(make_rule("r-change", target={"prefixes": ["192.0.2.0/24"]}))
    old.reconcile()
    # A new process: r-gone was withdrawn while it was down, r-change has version 2.
    new = Point(lab)
    new.put(keep)
    new.put(make_rule("r-change", version=2, target={"prefixes": ["192.0.2.0/25"]}))
    new.store.apply(b"r-gone", None)
    out = new.reconcile()
    assert _statuses(out) == [
        ("r-change", "applied"),
        ("r-gone", "removed"),
        ("r-keep", "applied"),
    ]
    details = {m["rule_id"]: m.get("detail") for m in out}
    assert details["r-keep"] == "found installed at start, unchanged"
    assert details["r-change"] == "replaced version 1"
    assert details["r-gone"] == "withdrawn"
    table = new.table()
    assert "203.0.113.0/24" not in table and "192.0.2.0/25" in table


def test_a_restart_with_nothing_to_change_confirms_every_rule(lab: Lab) -> None:
    rules = [make_rule("r-1"), make_rule("r-2", target={"prefixes": ["203.0.113.0/24"]})]
    old = Point(lab)
    for rule in rules:
        old.put(rule)
    old.reconcile()
    before = old.table()
    new = Point(lab)
    for rule in rules:
        new.put(rule)
    out = new.reconcile()
    assert [(m["rule_id"], m["status"], m["detail"]) for m in sorted(out, key=str)] == [
        ("r-1", "applied", "found installed at start, unchanged"),
        ("r-2", "applied", "found installed at start, unchanged"),
    ]
    assert new.table() == before
