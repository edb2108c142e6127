"""Guardrails: protected prefixes are cut out of every block and throttle, for any input."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.enforcement.helpers import evaluator, policy, usage
from voipflow.enforcement.config import BUILTIN_NEVER_BLOCK, GuardrailConfig
from voipflow.enforcement.evaluator import Publish
from voipflow.enforcement.guardrails import Guardrails, covers_protected
from voipflow.settings import SettingsError, load_settings


def test_a_target_around_a_protected_prefix_is_split() -> None:
    g = Guardrails(GuardrailConfig(emergency_prefixes="10.1.2.3/32"))
    check = g.check_target("block", ["10.1.0.0/16"])
    assert check.refusal is None
    assert len(check.prefixes) == 16  # 10.1.0.0/16 minus one address: 16 prefixes
    covered = sum(ipaddress.ip_network(p).num_addresses for p in check.prefixes)
    assert covered == 65536 - 1
    assert covers_protected(check.prefixes, g.protected) == []
    assert check.trimmed == ("10.1.2.3/32 (emergency)",)


def test_a_target_inside_a_protected_prefix_is_dropped() -> None:
    g = Guardrails(GuardrailConfig(infrastructure_prefixes="192.0.2.0/24"))
    check = g.check_target("throttle", ["192.0.2.128/25", "198.51.100.0/24"])
    assert check.prefixes == ("198.51.100.0/24",)
    only = g.check_target("block", ["192.0.2.7/32"])
    assert only.prefixes == () and only.refusal is not None
    assert only.refusal.code == "never_block"


def test_builtins_and_their_ipv4_mapped_forms_are_protected() -> None:
    g = Guardrails(GuardrailConfig())
    check = g.check_target("block", ["127.0.0.0/8", "::ffff:127.0.0.1/128", "fe80::1/128"])
    assert check.refusal is not None and check.refusal.code == "never_block"
    whole = g.check_target("block", ["0.0.0.0/0"])
    assert whole.refusal is None
    for p in BUILTIN_NEVER_BLOCK:
        net = ipaddress.ip_network(p)
        if net.version == 4:
            assert covers_protected(whole.prefixes, [(net, "x")]) == []


def test_monitor_and_alert_are_not_traffic_rules() -> None:
    g = Guardrails(GuardrailConfig())
    assert g.check_target("monitor", ["127.0.0.1/32"]).prefixes == ("127.0.0.1/32",)
    assert g.check_target("alert", []).refusal is None
    assert g.check_target("block", []).refusal is not None


def test_prefix_cap() -> None:
    g = Guardrails(GuardrailConfig(max_prefixes_per_rule=4, emergency_prefixes="10.0.0.1/32"))
    check = g.check_target("block", ["10.0.0.0/24"])
    assert check.refusal is not None and check.refusal.code == "too_many_prefixes"


def test_bad_guardrail_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOIPFLOW_GUARDRAILS_EMERGENCY_PREFIXES", "10.0.0.0/8,not-a-prefix")
    with pytest.raises(SettingsError, match="VOIPFLOW_GUARDRAILS_EMERGENCY_PREFIXES"):
        load_settings()
    monkeypatch.setenv("VOIPFLOW_GUARDRAILS_EMERGENCY_PREFIXES", "112.0.0.0/24")
    monkeypatch.setenv("VOIPFLOW_GUARDRAILS_MAX_RULES_PER_CITY", "3")
    s = load_settings()
    assert s.guardrails.max_rules_per_city == 3
    assert s.guardrails.protected()["emergency"] == ["112.0.0.0/24"]


# -- property: for any policy and any input ---------------------------------

# Addresses near each other and near the built-in ranges, so that targets and
# protected prefixes overlap often; any length, so they nest both ways.
_V4_BASES = [0x0A000000, 0x0A010200, 0x7F000000, 0xA9FE0000, 0xE0000000, 0xC0000200, 0]
_V6_BASES = [
    0x20010DB8 << 96,
    0xFE80 << 112,
    0xFFFF << 32 | 0x7F000001,
    0xFFFF << 32 | 0x0A010203,
    1,
]


@st.composite
def prefixes(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        base = draw(st.sampled_from(_V4_BASES)) + draw(st.integers(0, 0xFFFF))
        length = draw(st.integers(0, 32))
        return str(ipaddress.ip_network((base & 0xFFFFFFFF, length), strict=False))
    base = draw(st.sampled_from(_V6_BASES)) + draw(st.integers(0, 0xFFFF))
    length = draw(st.integers(0, 128))
    return str(ipaddress.ip_network((base, length), strict=False))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "never_block": draw(st.lists(prefixes(), max_size=3)),
        "infrastructure": draw(st.lists(prefixes(), max_size=3)),
        "emergency": draw(st.lists(prefixes(), max_size=3)),
        "targets": draw(st.lists(prefixes(), max_size=5)),
        "action": draw(st.sampled_from(["block", "throttle", "monitor", "alert"])),
        "kind": draw(st.sampled_from(["subscriber_prefixes", "app_ports"])),
        "windows": draw(st.integers(1, 3)),
        "threshold": draw(st.integers(0, 200)),
        "load": draw(st.lists(st.integers(0, 400), min_size=1, max_size=8)),
    }


def _emit(sc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Run one scenario through the evaluator: the rules it emitted, the protected prefixes."""
    guard = GuardrailConfig(
        never_block=",".join(sc["never_block"]),
        infrastructure_prefixes=",".join(sc["infrastructure"]),
        emergency_prefixes=",".join(sc["emergency"]),
        max_prefixes_per_rule=100_000,
    )
    pol = policy(
        "prop",
        apps="[zoom]",
        windows=sc["windows"],
        threshold=sc["threshold"],
        action=sc["action"],
        target=sc["kind"],
        rate=128 if sc["action"] == "throttle" else None,
    )
    ev = evaluator([pol], guard, city_prefixes={"Berlin": sc["targets"]})
    emitted = []
    for minute, load in enumerate(sc["load"]):
        for out in ev.on_usage(usage("Berlin", "zoom", minute, call_seconds=load), 0):
            if isinstance(out, Publish):
                emitted.append(out.rule)
    return emitted, Guardrails(guard).protected


@pytest.mark.slow
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_emitted_block_or_throttle_covers_a_protected_prefix(sc: dict[str, Any]) -> None:
    emitted, protected = _emit(sc)
    for rule in emitted:
        if rule["action"] in ("block", "throttle"):
            assert rule["target"]["prefixes"], "a traffic rule without prefixes hits everything"
            assert covers_protected(rule["target"]["prefixes"], protected) == []


def test_the_property_scenarios_do_emit_split_traffic_rules() -> None:
    """The property above is not vacuous: its scenarios emit blocks that were split."""
    sc = {
        "never_block": ["10.0.0.0/30"],
        "infrastructure": [],
        "emergency": ["::ffff:10.1.2.3/128"],
        "targets": ["10.0.0.0/8", "127.0.0.0/24"],
        "action": "block",
        "kind": "app_ports",
        "windows": 2,
        "threshold": 10,
        "load": [50, 50],
    }
    (rule,), protected = _emit(sc)
    assert rule["action"] == "block" and rule["target"]["ports"] == [{"from": 8801, "to": 8810}]
    assert "10.0.0.4/30" in rule["target"]["prefixes"]
    assert not any(p.startswith("127.") for p in rule["target"]["prefixes"])
    assert "10.1.2.2/32" in rule["target"]["prefixes"]  # 10.1.2.3 written as IPv6 is cut out
    assert covers_protected(rule["target"]["prefixes"], protected) == []
