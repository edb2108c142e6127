"""``voipflow enforce``: help, and bad settings that stop it at start naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

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
        ("VOIPFLOW_GUARDRAILS_NEVER_BLOCK", "10.0.0.300/8"),
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


@pytest.mark.parametrize("command", [["enforce"], ["policy", "run"]])
def test_the_replaced_never_block_setting_fails_at_start_naming_the_new_one(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One setting for the evaluator and the points: the old one is an error,
    # in the environment and in the config file, never accepted beside it.
    monkeypatch.setenv("VOIPFLOW_ENFORCE_NEVER_BLOCK", "192.0.2.0/24")
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "VOIPFLOW_ENFORCE_NEVER_BLOCK was replaced by VOIPFLOW_GUARDRAILS_NEVER_BLOCK" in err

    monkeypatch.delenv("VOIPFLOW_ENFORCE_NEVER_BLOCK")
    cfg = tmp_path / "voipflow.toml"
    cfg.write_text('[enforce]\nnever_block = "192.0.2.0/24"\n')
    monkeypatch.setenv("VOIPFLOW_CONFIG", str(cfg))
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"[enforce] never_block in {cfg}" in err
    assert "VOIPFLOW_GUARDRAILS_NEVER_BLOCK" in err
