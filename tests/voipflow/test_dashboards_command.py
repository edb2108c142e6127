"""``voipflow dashboards``: build and check, city coordinates into chdb, push.

``build`` and ``cities`` run for real (subprocesses, chdb in a temp data
directory). ``push`` needs a Grafana server, and none can run on this
machine: it is tested against a small HTTP server in this module that stands
in for Grafana's API (it records requests and answers like Grafana's folder
and dashboard endpoints). That checks the requests grafana-client sends
(paths, token, payload), not Grafana's handling of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.paths import REPO
from voipflow.commands.dashboards import push
from voipflow.dashboards.build import DASHBOARD_DIR, DASHBOARDS, render


def voipflow(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    if data_dir is not None:
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
def test_build_check_and_out(tmp_path: Path) -> None:
    res = voipflow("dashboards", "build", "--check")
    assert res.returncode == 0, res.stderr
    res = voipflow("dashboards", "build", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    for name in DASHBOARDS:
        assert (tmp_path / name).read_text() == (DASHBOARD_DIR / name).read_text()
    (tmp_path / "rules.json").write_text("{}")
    res = voipflow("dashboards", "build", "--check", "--out", str(tmp_path))
    assert res.returncode == 1 and "rules.json" in res.stderr


@pytest.mark.slow
def test_cities_loads_one_row_per_city(tmp_path: Path) -> None:
    csv = tmp_path / "prefixes.csv"
    csv.write_text(
        "prefix,city,region,country,lat,lon\n"
        "10.1.0.0/16,Berlin,Berlin,DE,52.52,13.405\n"
        "2001:db8:1::/48,Berlin,Berlin,DE,52.52,13.405\n"
        '10.2.0.0/16,"L\'Aquila",Abruzzo,IT,42.3498,13.3995\n'
        "10.3.0.0/16,Unplaced,Somewhere,ZZ,,\n"
    )
    data = tmp_path / "data"
    res = voipflow("dashboards", "cities", "--file", str(csv), data_dir=data)
    assert res.returncode == 1 and "voipflow db migrate" in res.stderr
    assert voipflow("db", "migrate", data_dir=data).returncode == 0
    res = voipflow("dashboards", "cities", "--file", str(csv), data_dir=data)
    assert res.returncode == 0, res.stderr
    assert "2 cities loaded" in res.stdout
    q = voipflow(
        "db", "query", "SELECT city, region, country, lat, lon FROM cities ORDER BY city",
        "--format", "json", data_dir=data,
    )  # fmt: skip
    rows = [json.loads(line) for line in q.stdout.splitlines()]
    assert rows == [
        {"city": "Berlin", "region": "Berlin", "country": "DE", "lat": 52.52, "lon": 13.405},
        {"city": "L'Aquila", "region": "Abruzzo", "country": "IT", "lat": 42.3498, "lon": 13.3995},
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("prefix,city,lat,lon\n10.0.0.0/8,X,1,2\n", "no column region, country"),
        ("prefix,city,region,country,lat,lon\n10.0.0.0/8,X,R,C,91,2\n", ":2: lat 91.0 outside"),
        (
            "prefix,city,region,country,lat,lon\n10.0.0.0/8,X,R,C,1,2\n10.1.0.0/16,X,R,C,1,3\n",
            ":3: X at 1.0,3.0 but at 1.0,2.0",
        ),
        (
            "prefix,city,region,country,lat,lon\n10.0.0.0/8,X,R,C,north,2\n",
            "'north' is not a number",
        ),
    ],
)
def test_cities_refuses_bad_tables(tmp_path: Path, body: str, message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(body)
    res = voipflow("dashboards", "cities", "--file", str(csv), data_dir=tmp_path / "data")
    assert res.returncode == 1
    assert message in res.stderr


class FakeGrafana(BaseHTTPRequestHandler):
    """Grafana's folder and dashboard endpoints, as far as push uses them."""

    requests: list[dict[str, Any]]
    folders: set[str]

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        rec = {
            "method": self.command,
            "path": self.path,
            "auth": self.headers.get("Authorization"),
            "body": body,
        }
        self.server.requests.append(rec)  # type: ignore[attr-defined]
        return rec

    def do_GET(self) -> None:
        rec = self._record()
        uid = rec["path"].rsplit("/", 1)[-1]
        if rec["path"].startswith("/api/folders/") and uid in self.server.folders:  # type: ignore[attr-defined]
            self._send(200, {"uid": uid, "title": "VoIP"})
        else:
            self._send(404, {"message": "folder not found"})

    def do_POST(self) -> None:
        rec = self._record()
        if rec["path"] == "/api/folders":
            self.server.folders.add(rec["body"]["uid"])  # type: ignore[attr-defined]
            self._send(200, {"uid": rec["body"]["uid"], "title": rec["body"]["title"]})
        elif rec["path"] == "/api/dashboards/db":
            uid = rec["body"]["dashboard"]["uid"]
            self._send(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x", "version": 1})
        else:
            self._send(404, {"message": "not found"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def grafana() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrafana)
    server.requests = []  # type: ignore[attr-defined]
    server.folders = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_push_creates_the_folder_once_and_uploads_every_dashboard(grafana: Any) -> None:
    url = f"http://127.0.0.1:{grafana.server_address[1]}"
    dashboards = {n: json.loads(t) for n, t in render().items()}
    urls = push(url, "tok3n", dashboards)
    assert urls == [f"/d/{d['uid']}/x" for d in dashboards.values()]
    reqs = grafana.requests
    assert [(r["method"], r["path"]) for r in reqs[:2]] == [
        ("GET", "/api/folders/voipflow"),
        ("POST", "/api/folders"),
    ]
    assert reqs[1]["body"] == {"title": "VoIP", "uid": "voipflow"}
    uploads = [r for r in reqs if r["path"] == "/api/dashboards/db"]
    assert {r["body"]["dashboard"]["uid"] for r in uploads} == {
        d["uid"] for d in dashboards.values()
    }
    for r in uploads:
        assert r["auth"] == "Bearer tok3n"
        assert r["body"]["folderUid"] == "voipflow" and r["body"]["overwrite"] is True
        assert "id" not in r["body"]["dashboard"]
        assert r["body"]["dashboard"]["panels"]
    grafana.requests.clear()
    res = voipflow("dashboards", "push", "--url", url, "--token", "tok3n")
    assert res.returncode == 0, res.stderr
    assert [r["path"] for r in grafana.requests].count("/api/folders") == 0  # folder exists now
    assert len([r for r in grafana.requests if r["path"] == "/api/dashboards/db"]) == len(
        DASHBOARDS
    )
    assert f"{url}/d/voipflow-usage/x" in res.stdout


def test_push_to_nothing_fails_with_one_line(grafana: Any) -> None:
    port = grafana.server_address[1]
    grafana.shutdown()
    grafana.server_close()
    res = voipflow(
        "dashboards", "push", "--url", f"http://127.0.0.1:{port}", "--token", "t", "--timeout", "2"
    )
    assert res.returncode == 1
    assert f"127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr


def test_the_shipped_demo_prefix_table_gives_every_city_once() -> None:
    from voipflow.dashboards.cities import read_cities

    path = REPO / "data" / "cities" / "demo-cities.csv"
    lines = path.read_text().splitlines()[1:]
    cities = read_cities(path)
    assert [c.city for c in cities] == sorted({line.split(",")[1] for line in lines})
    berlin = next(c for c in cities if c.city == "Berlin")
    assert (berlin.country, berlin.lat, berlin.lon) == ("DE", 52.52, 13.405)
