"""``voipflow report`` as an operator runs it: a subprocess on its own chdb directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO


def _voipflow(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env["VOIPFLOW_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "voipflow", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_report_and_pdf_from_a_fresh_database(tmp_path: Path) -> None:
    assert _voipflow(tmp_path, "db", "migrate").returncode == 0
    out, pdf = tmp_path / "out" / "report.html", tmp_path / "out" / "report.pdf"
    res = _voipflow(
        tmp_path, "report", "--since", "2d", "--city", "Berlin,Paris", "--out", str(out),
        "--pdf", str(pdf),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"report: {out}" in res.stdout and f"pdf: {pdf}" in res.stdout
    html = out.read_text()
    assert "No VoIP seen in this range." in html and "cities: Berlin, Paris" in html
    assert pdf.read_bytes().startswith(b"%PDF-")


def test_bad_range_is_refused_before_connecting(tmp_path: Path) -> None:
    res = _voipflow(tmp_path, "report", "--since", "last week", "--out", str(tmp_path / "r.html"))
    assert res.returncode == 2
    assert "7d, 36h" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r.html").exists()
    res = _voipflow(tmp_path, "report", "--since", "1d", "--until", "2d", "--out", "x.html")
    assert res.returncode == 2 and "must be before" in res.stderr


@pytest.mark.slow
def test_missing_tables_say_what_to_do(tmp_path: Path) -> None:
    res = _voipflow(tmp_path, "report", "--out", str(tmp_path / "r.html"))
    assert res.returncode == 1
    assert "voipflow db migrate" in res.stderr and "Traceback" not in res.stderr
