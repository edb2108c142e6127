"""The demo's rules block: what it prints for applied, refused and missing rules (no I/O)."""

from __future__ import annotations

from pathlib import Path

from voipflow.demo.rules import RuleRow, rules_block


def _row(rule_id: str, state: str, applied_ms: int = 0, detail: str = "") -> RuleRow:
    return RuleRow(
        rule_id=rule_id,
        policy="p",
        city="Lyon",
        app="whatsapp",
        action="block",
        mode="shadow",
        state=state,
        version=1,
        proposed_ms=1_700_000_000_000,
        applied_ms=applied_ms,
        point="demo" if applied_ms else "",
        detail=detail,
    )


def test_applied_and_refused_rules_each_get_a_line_with_their_state() -> None:
    rows = [
        _row("p-applied", "applied", applied_ms=1_700_000_000_450),
        _row("p-refused", "refused", detail="city_cap: 20 rules in force in Lyon"),
    ]
    lines = rules_block(rows, Path("demo.yaml"), "log", Path("/d/enforce-actions.log"))
    assert lines[0].endswith("2 rules, 1 applied")
    table = lines[1].splitlines()
    assert table[0].split() == [
        "rule", "city", "app", "action", "mode", "state", "proposed", "applied", "after",
    ]  # fmt: skip
    applied = next(t for t in table if t.startswith("p-applied"))
    assert applied.split()[5:] == ["applied", "22:13:20", "22:13:20", "0.5", "s"]
    refused = next(t for t in table if t.startswith("p-refused"))
    assert "refused (city_cap: 20 rules in force in Lyon)" in refused
    assert refused.split()[-3:] == ["22:13:20", "-", "-"]
    assert lines[-1] == "what the log backend would do: /d/enforce-actions.log"


def test_no_rule_and_the_nftables_namespace_are_said() -> None:
    lines = rules_block([], Path("demo.yaml"), "log", None)
    assert lines[0].endswith("0 rules, 0 applied")
    assert lines[1].startswith("no rule fired")
    lines = rules_block(
        [_row("r", "applied", 1_700_000_001_000)], Path("x"), "nftables", None, "ns1"
    )
    assert lines[-1] == "nftables: table installed in network namespace ns1"
