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
    """Mark tests that use the session's Kafka broker or clickhouse-server (even indirectly),
    and put the long files first."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marks in _SERVICE_MARKS.items():
            if fixture in used:
                for mark in marks:
                    if item.get_closest_marker(mark) is None:
                        item.add_marker(getattr(pytest.mark, mark))
    long_files_first(config, items)


#: The test files that take minutes each (whole pipelines, demos, a three-node
#: cluster, kill-and-restart runs), longest first, from the parallel run's
#: durations. ``make test`` hands whole files to two pytest processes in
#: collection order; starting these first lets both processes end together
#: instead of one running a long file alone at the end. A file missing from
#: the list only runs in its usual place.
LONG_FILES = (
    "tests/voipflow/test_demo.py",
    "tests/voipflow/test_chaos_short.py",
    "tests/test_kafka_secure.py",
    "tests/voipflow/test_broker.py",
    "tests/voipflow/test_demo_policy.py",
    "tests/collectors/test_collect.py",
    "tests/storage/test_sink_recovery.py",
    "tests/enforcement/test_evaluator_kafka.py",
    "tests/streams/test_worker_kafka.py",
    "tests/streams/test_generalisation.py",
    "tests/storage/test_assignment.py",
    "tests/collectors/test_differential.py",
    "tests/enforcement/test_ledger_kafka.py",
    "tests/voipflow/test_cluster.py",
)


def long_files_first(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the long files first (a stable sort: the order inside a file is kept)."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    root = config.rootpath

    def key(item: pytest.Item) -> int:
        try:
            rel = item.path.relative_to(root).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(rel, len(rank))

    items.sort(key=key)
