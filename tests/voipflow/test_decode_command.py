"""``voipflow decode`` on committed exports: records on stdout, summary on stderr."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures.paths import REPO

DATA = REPO / "tests" / "collectors" / "data"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voipflow", "decode", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_jsonl_records_match_nfdump_count() -> None:
    name = "softflowd-ipfix-http-ipv6"
    doc = json.loads((DATA / f"{name}.json").read_text())
    res = run(str(DATA / f"{name}.pcap"), "--port", "2055")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == sum(n for _, n in doc["nfdump_rows"])
    assert any(":" in r["src_addr"] for r in rows)  # readable IPv6 text
    assert "records=" in res.stderr and "errors=0" in res.stderr


def test_json_array_and_other_ports_skipped() -> None:
    res = run(str(DATA / "softflowd-v5-whatsapp.pcap"), "--json", "--port", "9999")
    assert res.returncode == 0
    assert json.loads(res.stdout) == []


def test_not_a_capture() -> None:
    res = run(str(DATA / "softflowd-v5-whatsapp.json"))
    assert res.returncode == 1 and "not a pcap" in res.stderr
