"""Test-suite wiring: every module in tests/fixtures/ is a pytest plugin.

Real services are started once per session by those fixtures (a Kafka broker
from jars, a Debian clickhouse-server) and chdb runs in-process; nothing is
mocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)

#: Fixtures whose tests need a service process: they are marked without
#: listing them by hand, so ``-m "not kafka and not slow"`` (``make check``)
#: never starts one.
_SERVICE_MARKS = {
    "kafka_broker": ("kafka", "slow"),
    "secure_kafka": ("kafka", "slow"),
    "clickhouse_server": ("slow",),
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use the session's Kafka broker or clickhouse-server (even indirectly)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marks in _SERVICE_MARKS.items():
            if fixture in used:
                for mark in marks:
                    if item.get_closest_marker(mark) is None:
                        item.add_marker(getattr(pytest.mark, mark))
