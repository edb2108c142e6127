"""What the policy, ledger and rules commands share: the Kafka address, the run loop."""

from __future__ import annotations

import threading
from typing import Protocol

from voipflow.process import running, wait_for_signal
from voipflow.settings import Settings, SettingsError
from voipflow.topics import ensure_topics


def bootstrap(settings: Settings) -> str:
    """The Kafka bootstrap servers: the setting, else the local broker's address."""
    if settings.kafka.bootstrap:
        return settings.kafka.bootstrap
    try:
        from voipflow.broker import resolve_bootstrap
    except ImportError as exc:
        raise SettingsError(
            "VOIPFLOW_KAFKA_BOOTSTRAP is empty and no local broker is known; set it"
        ) from exc
    return str(resolve_bootstrap(settings.kafka, settings.data_dir))


class TopicsComponent(Protocol):
    """A process of :mod:`voipflow.enforcement` as the commands run it."""

    name: str
    done: threading.Event
    failure: BaseException | None

    def topics(self) -> tuple[dict[str, int], dict[str, dict[str, str]]]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


def run_until_stopped(proc: TopicsComponent, settings: Settings, servers: str, command: str) -> int:
    """Create ``proc``'s topics, run it until SIGINT/SIGTERM (or idle); the exit code."""
    topics, configs = proc.topics()
    k = settings.kafka
    ensure_topics(
        servers,
        topics,
        k.replication_factor,
        configs,
        min_insync_replicas=k.min_insync_replicas,
        security=k,
    )
    with running([proc]):
        wait_for_signal(proc.done)
    if proc.failure is not None:
        print(f"voipflow {command}: stopped: {proc.failure}", flush=True)
        return 1
    return 0
