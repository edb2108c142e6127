"""Policy files: the shipped example validates, bad files are refused with file, line, reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.paths import REPO
from voipflow.cli import main
from voipflow.enforcement.errors import PolicyFileError
from voipflow.enforcement.policy import (
    load_policies,
    load_policy_file,
    parse_duration,
    parse_policies,
)
from voipflow.enforcement.targets import load_city_prefixes, target_problems
from voipflow.streams.providers import load_providers

EXAMPLE = REPO / "examples" / "policies" / "p2p-voip.yaml"
CITIES = REPO / "data" / "cities" / "demo-cities.csv"

GOOD = """\
policies:
  - name: berlin-teams
    match:
      apps: [Teams]
      cities: [Berlin]
    condition:
      metric: call_seconds
      threshold: 600
      for: 3
    action: throttle
    rate_kbps: 256
    target: app_ports
    ttl: 30m
"""


def test_example_policies_validate() -> None:
    pf = load_policy_file(EXAMPLE)
    names = [p.name for p in pf.policies]
    assert names == [
        "berlin-whatsapp-shadow",
        "hamburg-zoom-throttle",
        "germany-voip-share-alert",
        "telegram-block-draft",
    ]
    assert target_problems(pf, load_providers(), load_city_prefixes(CITIES)) == []
    enabled = load_policies(EXAMPLE)
    assert [p.name for p in enabled] == names[:3]  # the disabled one is not evaluated


def test_good_policy_model() -> None:
    (p,) = parse_policies(GOOD).policies
    assert p.match.apps == ("teams",)  # app names are lower case like voip-usage.v1
    assert (p.condition.metric, p.condition.threshold, p.condition.for_windows) == (
        "call_seconds",
        600,
        3,
    )
    assert (p.action, p.rate_kbps, p.target, p.ttl_s, p.mode) == (
        "throttle",
        256,
        "app_ports",
        1800,
        "shadow",  # a policy drops nothing until the operator says enforce
    )
    assert p.match.matches("Berlin", "Berlin", "DE", "teams")
    assert not p.match.matches("Hamburg", "Hamburg", "DE", "teams")
    assert not p.match.matches("Berlin", "Berlin", "DE", "zoom")


BAD = [
    ("not yaml", "policies:\n  - name: a\n    match: [unclosed\n", 3, "not valid YAML"),
    ("empty", "# nothing\n", 1, "empty"),
    ("not a mapping", "- a\n- b\n", 1, "expected a mapping"),
    ("no policies", "policies: []\n", 1, "at least 1"),
    ("unknown metric", GOOD.replace("call_seconds", "calls"), 7, "condition.metric"),
    ("unknown key", GOOD.replace("    ttl: 30m", "    ttl: 30m\n    tll: 1h"), 14, "unknown key"),
    ("throttle without rate", GOOD.replace("    rate_kbps: 256\n", ""), 2, "rate_kbps"),
    ("rate on block", GOOD.replace("throttle", "block"), 2, "throttle only"),
    ("bad ttl", GOOD.replace("30m", "half an hour"), 13, "not a duration"),
    ("negative threshold", GOOD.replace("600", "-1"), 8, "greater than or equal"),
    ("zero windows", GOOD.replace("for: 3", "for: 0"), 9, "condition.for"),
    ("bad action", GOOD.replace("action: throttle", "action: drop"), 10, "action"),
    ("bad target", GOOD.replace("app_ports", "everything"), 12, "target"),
    ("bad mode", GOOD + "    mode: maybe\n", 14, "mode"),
    ("duplicate key", GOOD.replace("    ttl: 30m", "    ttl: 30m\n    ttl: 1h"), 14, "twice"),
    ("bad name", GOOD.replace("berlin-teams", "Berlin Teams!"), 2, "name"),
    ("share above one", GOOD.replace("call_seconds", "voip_share").replace("600", "5"), 7,
     "fraction"),
    ("duplicate name", GOOD + GOOD.split("\n", 1)[1], 14, "used twice"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file_is_refused_with_line_and_reason(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyFileError) as info:
        load_policy_file(path)
    err = info.value
    assert (err.path, err.line) == (path, line), str(err)
    assert words in err.reason
    assert str(err).startswith(f"{path}:{line}: ")


def test_targets_that_cannot_resolve_point_at_their_line() -> None:
    text = GOOD.replace("[Teams]", "[whatsapp]").replace("[Berlin]", "[Atlantis]")
    pf = parse_policies(text, "p.yaml")
    problems = target_problems(pf, load_providers(), load_city_prefixes(CITIES))
    assert [(e.line, e.reason.split(";")[0].split(":")[0]) for e in problems] == [
        (12, "app 'whatsapp' has no ports in the classifier's port tables"),
        (5, "city 'Atlantis' is not in the prefix table"),
    ]


def test_durations() -> None:
    assert [parse_duration(v) for v in (90, "90s", "30m", "2h", "7d", " 5 ")] == [
        90,
        90,
        1800,
        7200,
        604800,
        5,
    ]
    for bad in ("0m", "1w", "", True, -3):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_policy_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "hamburg-zoom-throttle: throttle 512 kbit/s app_ports" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("call_seconds", "calls"))
    assert main(["policy", "check", str(EXAMPLE), str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{bad}:7: policies.0.condition.metric")
