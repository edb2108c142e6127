"""``voipflow enforce``: help, and bad settings that stop it at start naming the variable."""

from __future__ import annotations

import os

import pytest

from voipflow.cli import main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("VOIPFLOW_"):
            monkeypatch.delenv(var)


def test_help_names_the_backends(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["enforce", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "nftables" in out and "flowspec" in out


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("VOIPFLOW_ENFORCE_NEVER_BLOCK", "10.0.0.1/8"),
        ("VOIPFLOW_ENFORCE_NFT_TABLE", "bad name"),
        ("VOIPFLOW_ENFORCE_BGP_PEER", "router.example:179"),
        ("VOIPFLOW_ENFORCE_BACKEND", "iptables"),
        ("VOIPFLOW_ENFORCE_MAX_RULES", "-1"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_variable(
    var: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(var, value)
    assert main(["enforce"]) == 2
    assert var in capsys.readouterr().err
