"""The parts of the pipeline the demo starts: Kafka, the topics, the three children.

Each is a component of :func:`voipflow.process.running` (inert constructor,
``start()``, ``stop()``), so the demo starts them in order and stops them in
reverse, also after Ctrl-C or a failed start. ClickHouse's part is
:class:`voipflow.demo.database.ClickHouseSchema`, the simulator's
:class:`voipflow.demo.simulator.SimulatorThread`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from voipflow.broker import (
    BrokerError,
    LocalBroker,
    LocalBrokerConfig,
    fetch_jars,
    running_state,
    stop_recorded,
)
from voipflow.children import ChildProcess
from voipflow.demo.errors import DemoError, DemoSettingError
from voipflow.demo.options import DemoOptions
from voipflow.demo.plan import DemoPlan
from voipflow.demo.printer import Printer
from voipflow.settings import Settings
from voipflow.streams.app import partials_topic_name
from voipflow.topics import KafkaAdminError, ensure_topics, wait_for_broker

#: Seconds the demo gives a configured broker to answer.
CONNECT_TIMEOUT_S = 10.0
#: The children, in the order they start (and the reverse of their stop).
CHILDREN = ("collect", "worker", "sink")


class DemoKafka:
    """The Kafka the demo uses: configured, already running locally, or its own."""

    name = "kafka"

    def __init__(self, settings: Settings, data_dir: Path, printer: Printer) -> None:
        self.kafka = settings.kafka
        self.data_dir = data_dir
        self.printer = printer
        self.state_dir = data_dir / "demo" / "kafka"
        self.bootstrap = ""
        self.origin = ""
        self._broker: LocalBroker | None = None
        self._adopted = False

    def start(self) -> None:
        say = self.printer.say
        try:
            if self.kafka.bootstrap.strip():
                wait_for_broker(self.kafka.bootstrap, CONNECT_TIMEOUT_S, security=self.kafka)
                self.bootstrap, self.origin = self.kafka.bootstrap, "VOIPFLOW_KAFKA_BOOTSTRAP"
                return
            user = running_state(self.data_dir / "kafka")
            if user is not None:
                wait_for_broker(user.bootstrap, 30.0, security=self.kafka)
                self.bootstrap = user.bootstrap
                self.origin = f"the local broker of `voipflow kafka start` (pid {user.pid})"
                return
            orphan = running_state(self.state_dir)
            if orphan is not None:  # an earlier demo was killed before it could stop it
                wait_for_broker(orphan.bootstrap, 30.0, security=self.kafka)
                self.bootstrap, self._adopted = orphan.bootstrap, True
                self.origin = f"the demo's broker left running earlier (pid {orphan.pid})"
                return
            libs = fetch_jars(progress=say)
            say(f"kafka: starting a local broker, state in {self.state_dir}")
            broker = LocalBroker(
                LocalBrokerConfig(
                    jar_dir=libs, state_dir=self.state_dir, port=0, controller_port=0, heap_mb=512
                )
            )
            broker.start(progress=lambda m: say(f"kafka: {m}"))
            self._broker = broker
            self.bootstrap = broker.bootstrap
            self.origin = f"local broker, started by the demo (pid {broker.pid})"
        except KafkaAdminError as exc:
            raise DemoSettingError(str(exc)) from exc
        except BrokerError as exc:
            raise DemoError(f"the local Kafka broker: {exc}") from exc

    @property
    def pid(self) -> int | None:
        """The broker's process if the demo started it (and will stop it)."""
        return self._broker.pid if self._broker is not None else None

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        elif self._adopted:
            stop_recorded(self.state_dir)
            self._adopted = False


def create_topics(
    settings: Settings,
    bootstrap: str,
    topics: Mapping[str, int],
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, int]:
    """Create the missing ones of ``topics`` with the configured replication and security.

    Every topic component of the demo creates its topics this one way, so a
    broker that refuses them (too few brokers for the replication factor, an
    ACL) stops the demo as a setting error naming what to fix, not a traceback.
    """
    k = settings.kafka
    try:
        return ensure_topics(
            bootstrap,
            topics,
            k.replication_factor,
            configs,
            min_insync_replicas=k.min_insync_replicas,
            security=k,
        )
    except KafkaAdminError as exc:
        raise DemoSettingError(str(exc)) from exc


class PipelineTopics:
    """Creates the topics of collector, worker and sink (idempotent)."""

    name = "topics"

    def __init__(self, settings: Settings, kafka: DemoKafka) -> None:
        self.settings = settings
        self.kafka = kafka
        self.partitions: dict[str, int] = {}

    def names(self) -> dict[str, int]:
        k, s = self.settings.kafka, self.settings
        return {
            t: k.partitions
            for t in (
                k.flows_topic,
                k.voip_flows_topic,
                k.usage_topic,
                k.traffic_topic,
                k.health_topic,
                partials_topic_name(s.worker),
            )
        }

    def start(self) -> None:
        self.partitions = create_topics(self.settings, self.kafka.bootstrap, self.names())

    def stop(self) -> None:
        pass


def child_env(plan: DemoPlan, options: DemoOptions, bootstrap: str, listen: str) -> dict[str, str]:
    """The children's environment: the user's, plus the settings the demo fills in."""
    env = dict(os.environ)
    env.update(
        {
            "VOIPFLOW_DATA_DIR": str(plan.data_dir),
            "VOIPFLOW_KAFKA_BOOTSTRAP": bootstrap,
            # Each child picks a free port and says which (voipflow.endpoints).
            "VOIPFLOW_METRICS_LISTEN": "127.0.0.1:0",
            "VOIPFLOW_COLLECTOR_LISTEN": listen,
            "VOIPFLOW_WORKER_WINDOW_S": str(options.window_s),
            "VOIPFLOW_WORKER_LATENESS_S": str(plan.lateness_s),
            "VOIPFLOW_WORKER_IDLE_CLOSE_S": str(plan.idle_close_s),
            "VOIPFLOW_WORKER_PREFIX_TABLE": str(plan.cities_csv.resolve()),
            "VOIPFLOW_WORKER_HOME_NETWORKS": plan.home_networks,
        }
    )
    if plan.sql_listen:
        env["VOIPFLOW_CLICKHOUSE_HTTP_LISTEN"] = plan.sql_listen
    return env


def child_processes(plan: DemoPlan, env: dict[str, str]) -> list[ChildProcess]:
    """``voipflow collect``, ``worker`` and ``sink``, logs in ``<data_dir>/demo/logs``."""
    return [
        ChildProcess(
            name,
            [name],
            env=env,
            log_file=plan.log_dir / f"{name}.log",
            data_dir=plan.data_dir,
        )
        for name in CHILDREN
    ]
