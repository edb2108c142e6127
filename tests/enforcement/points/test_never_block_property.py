"""Property: nothing a point would drop or limit touches a never-block prefix, whatever the rule."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.enforcement.points.rulesdata import make_rule
from voipflow.enforcement.points.desired import DesiredRules
from voipflow.schemas.rules import encode_rule


@st.composite
def v4_prefix(draw: st.DrawFn) -> ipaddress.IPv4Network:
    length = draw(st.integers(0, 32))
    addr = draw(st.integers(0, 2**32 - 1))
    return ipaddress.IPv4Network((addr >> (32 - length) << (32 - length), length))


@settings(max_examples=200, deadline=None)
@given(
    never=st.lists(v4_prefix(), min_size=1, max_size=4),
    target=st.lists(v4_prefix(), min_size=1, max_size=6),
    action=st.sampled_from(["block", "throttle", "monitor", "alert"]),
    mode=st.sampled_from(["enforce", "shadow"]),
)
def test_no_traffic_rule_in_force_overlaps_a_never_block_prefix(
    never: list[ipaddress.IPv4Network],
    target: list[ipaddress.IPv4Network],
    action: str,
    mode: str,
) -> None:
    store = DesiredRules(never_block=list(never))
    extra = {"rate_kbps": 64} if action == "throttle" else {}
    rule = make_rule(
        action=action, mode=mode, target={"prefixes": [str(n) for n in target]}, **extra
    )
    change = store.apply(b"r-test-1", encode_rule(rule))
    overlaps = any(t.overlaps(n) for t in target for n in never)
    if action in ("block", "throttle"):
        assert (change.refused is not None) == overlaps
    else:
        assert change.refused is None
    for held in store.rules.values():
        if held.action in ("block", "throttle"):
            assert not any(p.overlaps(n) for p in held.v4 for n in never)
