"""``voipflow eval`` end to end on a few real captures: softflowd -> decoder -> classifier."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO


@pytest.mark.parametrize("flags", [["--version", "9"], ["--biflow"], ["--sampling", "10"]])
@pytest.mark.slow
def test_eval_prints_the_summary_last_and_writes_the_report(
    corpus_dir: Path, tmp_path: Path, flags: list[str]
) -> None:
    out = tmp_path / "report.json"
    captures = ["teams.pcap", "wa_voice.pcap", "dns-exf.pcap"]
    only = [arg for c in captures for arg in ("--only", c)]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "voipflow",
            "eval",
            "--pcaps",
            str(corpus_dir / "pcap"),
            "--labels",
            str(corpus_dir / "labels.csv"),
            "--json",
            str(out),
            *only,
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"precision=([\d.]+) recall=([\d.]+) f1=([\d.]+) flows=(\d+)", last)
    assert m, last
    assert "[3/3]" in proc.stderr  # progress
    report = json.loads(out.read_text())
    run = report["runs"][0]
    assert run["run"]["sampling"] == int(flags[1]) if flags[0] == "--sampling" else True
    assert set(run["per_capture"]) >= set(captures)
    assert run["per_record"]["records"] == int(m.group(4)) > 0
    # Real VoIP in these captures is found, and the DNS tunnel is not VoIP.
    assert run["per_record"]["tp"] > 0
    assert run["per_capture"]["dns-exf.pcap"]["fp_records"] == 0
    # The role verdict is scored beside the app verdict: the WhatsApp call's
    # STUN-labelled flows were called ice, media or relay, none of them
    # signalling; the DNS tunnel's records carry no role.
    roles = run["roles"]
    assert "media level" in proc.stdout
    assert roles["per_role"]["ice or media"]["right"] > 0
    assert "signalling" not in roles["per_role"]["ice or media"]["predicted"]
    assert set(roles["per_role"]["none"]["predicted"]) == {"not_voip"}
    if flags == ["--biflow"]:
        assert run["run"]["biflow"] and run["run"]["version"] == 10


@pytest.mark.slow
def test_eval_leave_one_app_out_split_and_calibration(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cache = tmp_path / "cache"
    captures = ["zoom.pcap", "wa_voice.pcap", "dns-exf.pcap"]
    only = [arg for c in captures for arg in ("--only", c)]
    cmd = [
        sys.executable,
        "-m",
        "voipflow",
        "eval",
        "--pcaps",
        str(corpus_dir / "pcap"),
        "--labels",
        str(corpus_dir / "labels.csv"),
        "--json",
        str(out),
        "--leave-one-app-out",
        "--split",
        "half",
        "--cache",
        str(cache),
        *only,
    ]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    run = json.loads(out.read_text())["runs"][0]
    loao = run["leave_one_app_out"]
    # Zoom's media ports and ranges find its calls; with them off, fewer or none.
    assert loao["zoom"]["found_all"] == run["per_app"]["zoom"]["detected"] > 0
    assert loao["zoom"]["found_left_out"] <= loao["zoom"]["found_all"]
    halves = run["split_half"]
    assert set(halves) == {"tune", "report"}
    assert sum(h["captures"] for h in halves.values()) == 3
    assert (
        run["calibration"]["records"]
        == run["per_record"]["records"] - run["per_record"]["records_unmatched"]
    )
    assert "leave one app out" in first.stdout
    # The second run reads the cached export and gives the same verdicts.
    assert any(cache.rglob("zoom.pcap.dgrams"))
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]
