"""Provider range files: the shipped data loads; refresh against a local HTTP server."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voipflow.schemas.flowbatch import text_to_addr16
from voipflow.streams.providers import (
    ProviderFetchError,
    load_providers,
    read_provider,
    refresh_provider,
)


def test_shipped_ranges_have_source_date_and_origin() -> None:
    ranges = load_providers()
    assert {"teams", "whatsapp", "zoom", "meet", "telegram"} <= set(ranges.apps)
    for p in ranges.providers:
        assert p.prefixes, p.name
        for key in ("source", "date", "origin"):
            assert p.header.get(key), f"{p.name}: no {key}"
        dt.date.fromisoformat(p.header["date"])
    got = ranges.table.lookup(
        np.array([text_to_addr16(a) for a in ("52.113.1.1", "8.8.8.8")], dtype="S16")
    )
    assert ranges.providers[int(got[0])].app == "teams"
    assert got[1] == -1


ANSWERS: dict[str, bytes] = {}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = ANSWERS.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _file(tmp_path: Path, origin: str) -> Path:
    path = tmp_path / "acme.txt"
    path.write_text(
        "# provider: acme\n# app: zoom\n# voip: yes\n# source: test\n"
        f"# date: 2020-01-01\n# origin: {origin}\n192.0.2.0/24\n"
    )
    return path


def test_refresh_cidr_list_and_zip(tmp_path: Path, http_base: str) -> None:
    ANSWERS["/list.txt"] = b"# comment\n198.51.100.0/24\n2001:db8::/32\nnot-a-prefix\n"
    path = _file(tmp_path, f"cidr {http_base}/list.txt")
    before, after = refresh_provider(path, today=dt.date(2026, 1, 2))
    assert (before, after) == (1, 2)
    prov = read_provider(path)
    assert prov.prefixes == ["198.51.100.0/24", "2001:db8::/32"]
    assert prov.header["date"] == "2026-01-02"
    assert prov.header["source"] == "test"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/ips.txt", "203.0.113.0/24\n")
    ANSWERS["/list.zip"] = buf.getvalue()
    path = _file(tmp_path, f"cidr {http_base}/list.zip")
    refresh_provider(path)
    assert read_provider(path).prefixes == ["203.0.113.0/24"]


def test_refresh_ripestat_and_ms365(tmp_path: Path, http_base: str) -> None:
    for asn, pfx in (("AS1", "192.0.2.0/25"), ("AS2", "2001:db8:1::/48")):
        ANSWERS[f"/ripe?resource={asn}"] = json.dumps(
            {"data": {"prefixes": [{"prefix": pfx}]}}
        ).encode()
    path = _file(tmp_path, "ripestat AS1 AS2")
    refresh_provider(path, ripestat_url=http_base + "/ripe?resource={asn}")
    assert read_provider(path).prefixes == ["192.0.2.0/25", "2001:db8:1::/48"]
    ANSWERS["/ms"] = json.dumps(
        [
            {"serviceArea": "Skype", "ips": ["52.112.0.0/14", "2603:1063::/38"]},
            {"serviceArea": "Exchange", "ips": ["40.96.0.0/13"]},
        ]
    ).encode()
    path = _file(tmp_path, f"ms365 {http_base}/ms Skype")
    refresh_provider(path)
    assert read_provider(path).prefixes == ["52.112.0.0/14", "2603:1063::/38"]


def test_failed_or_empty_refresh_leaves_the_file(tmp_path: Path, http_base: str) -> None:
    path = _file(tmp_path, f"cidr {http_base}/missing")
    text = path.read_text()
    with pytest.raises(ProviderFetchError):
        refresh_provider(path, timeout_s=5)
    ANSWERS["/empty"] = b"# nothing\n"
    path = _file(tmp_path, f"cidr {http_base}/empty")
    with pytest.raises(ProviderFetchError, match="no prefixes"):
        refresh_provider(path)
    path = _file(tmp_path, "none")
    with pytest.raises(ProviderFetchError, match="by hand"):
        refresh_provider(path)
    assert path.read_text() == text.replace(f"cidr {http_base}/missing", "none")
