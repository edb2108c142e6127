"""``voipflow enforce``: help, and bad settings that stop it at start naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.enforcement.points.netns import REPO


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "voipflow", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_names_the_backends() -> None:
    res = _run("enforce", "--help")
    assert res.returncode == 0
    assert "nftables" in res.stdout and "flowspec" in res.stdout


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("VOIPFLOW_ENFORCE_NEVER_BLOCK", "10.0.0.1/8"),
        ("VOIPFLOW_ENFORCE_NFT_TABLE", "bad name"),
        ("VOIPFLOW_ENFORCE_BGP_PEER", "router.example:179"),
        ("VOIPFLOW_ENFORCE_BACKEND", "iptables"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_variable(var: str, value: str) -> None:
    res = _run("enforce", **{var: value})
    assert res.returncode == 2
    assert var in res.stderr, res.stderr
