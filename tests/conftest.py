"""Test-suite wiring: every module in tests/fixtures/ is a pytest plugin.

Real services are started once per session by those fixtures (a Kafka broker
from jars, a Debian clickhouse-server) and chdb runs in-process; nothing is
mocked.
"""

from __future__ import annotations

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)
