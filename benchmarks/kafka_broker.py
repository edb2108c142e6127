"""The Kafka broker a benchmark measures against: the configured one, or its own.

Benchmarks that need a broker use ``VOIPFLOW_KAFKA_BOOTSTRAP`` when it is set
(a broker someone already runs, e.g. on another host) and otherwise start a
throw-away local broker on free ports in the benchmark's work directory, so
that a figure never depends on a broker left behind by another run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def bench_bootstrap(workdir: Path) -> Iterator[str]:
    """Yield the bootstrap address to measure against; a broker started here is stopped on exit."""
    bootstrap = os.environ.get("VOIPFLOW_KAFKA_BOOTSTRAP", "")
    if bootstrap:
        yield bootstrap
        return
    # Imported here: the broker module fetches jars and is not needed when a
    # broker is configured.
    from voipflow.broker import LocalBroker, LocalBrokerConfig, fetch_jars

    broker = LocalBroker(
        LocalBrokerConfig(
            jar_dir=fetch_jars(), state_dir=workdir / "kafka", port=0, controller_port=0
        )
    )
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
