"""The provisioning variant for a Grafana that reads a one-box voipflow over HTTP.

Grafana cannot run here (see tests/dashboards/grafana_sim.py), so this checks
the files: the same data source uid and plugin as the server variant, the
plugin's HTTP protocol, every ``${VAR}`` documented in docs/dashboards.md,
and the same dashboards provider.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.fixtures.paths import REPO

ROOT = REPO
SERVER = ROOT / "dashboards" / "provisioning"
EMBEDDED = ROOT / "dashboards" / "provisioning-embedded"


def _source(folder: Path) -> dict:
    (source,) = yaml.safe_load((folder / "datasources" / "clickhouse.yaml").read_text())[
        "datasources"
    ]
    return source


def test_same_data_source_over_http() -> None:
    server, embedded = _source(SERVER), _source(EMBEDDED)
    assert (embedded["uid"], embedded["type"]) == (server["uid"], server["type"])
    assert embedded["jsonData"]["protocol"] == "http"
    assert set(embedded["secureJsonData"]) == {"password"}


def test_every_variable_is_documented() -> None:
    text = (EMBEDDED / "datasources" / "clickhouse.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)\}", text))
    # The server variant's names (plus the port), none that voipflow would read.
    assert used == {
        "CLICKHOUSE_HOST",
        "CLICKHOUSE_HTTP_PORT",
        "CLICKHOUSE_USER",
        "CLICKHOUSE_PASSWORD",
        "CLICKHOUSE_DB",
    }
    doc = (ROOT / "docs" / "dashboards.md").read_text()
    assert all(v in doc for v in used)


def test_same_dashboards_provider() -> None:
    name = "dashboards/voipflow.yaml"
    assert yaml.safe_load((EMBEDDED / name).read_text()) == yaml.safe_load(
        (SERVER / name).read_text()
    )
