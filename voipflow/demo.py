"""``voipflow demo``: the whole pipeline on one machine, on simulated traffic.

Starts, in this order, and stops in reverse (also after Ctrl-C or a failed
start, see :mod:`voipflow.process`):

1. Kafka: ``VOIPFLOW_KAFKA_BOOTSTRAP`` if set (it must answer within 10 s);
   else a local broker that already runs (``voipflow kafka start``, state in
   ``<data_dir>/kafka``); else a broker of the demo's own on free ports with
   its state in ``<data_dir>/demo/kafka``, stopped at the end.
2. The pipeline's topics.
3. ClickHouse: migrations and the city table (the demo's process opens chdb
   only here and after the sink has stopped; the sink owns it in between).
4. ``voipflow collect``, ``voipflow worker`` and ``voipflow sink`` as child
   processes with the same settings plus the demo's (below) in their
   environment, logs in ``<data_dir>/demo/logs/``.
5. The simulator, in this process, toward the collector's UDP port.

When the simulator is done the demo waits, with deadlines, until the
collector has published everything, the worker has consumed it, every
window is closed (the worker's idle close lets event time follow the wall
clock once traffic stops) and the sink has committed both topics it reads;
then it stops the children and prints VoIP usage per city from ClickHouse
next to what the simulator sent (:mod:`voipflow.demo_report`).

Settings the demo gives its children unless the user set them: the
collector listens on a free UDP port of 127.0.0.1, metrics on free ports,
the worker uses the shipped demo city table with its home networks,
``--window-s`` as window, 20 s lateness and 2 s idle close. Everything else
(topics, groups, ClickHouse) is the user's.

Errors::

    DemoError              the demo could not run to the end; one line
    +-- DemoSettingError   a setting is wrong (names it); exit status 2
    voipflow.children.ChildError   a child failed to start or died
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from schemas.topics import KafkaConfig
from voipflow.children import ChildProcess, peak_rss_bytes
from voipflow.process import running
from voipflow.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEMO_CITIES = REPO / "data" / "cities" / "demo-cities.csv"
DEMO_HOME_NETWORKS = "10.0.0.0/8,2001:db8::/32"
#: Worker settings the demo uses unless the user set them (see ``--help``).
#: The simulator exports short flows (web, DNS) up to 15 s after they ended,
#: as routers do after their inactive timeout, plus up to 1 s in the export
#: cache: 20 s of lateness keeps them in their windows.
DEMO_LATENESS_S = 20
DEMO_IDLE_CLOSE_S = 2.0
#: Seconds the demo gives a configured broker or ClickHouse server to answer.
CONNECT_TIMEOUT_S = 10.0


class DemoError(Exception):
    """The demo could not run to the end; ``str()`` is one line."""


class DemoSettingError(DemoError):
    """A bad setting; ``str()`` names it."""


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 120.0
    rate: float = 1000.0
    window_s: int = 20
    seed: int = 1
    version: int = 10
    sampling: int = 1
    progress_s: float = 5.0
    json_out: Path | None = None


def _mask(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def _free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def demo_lock(demo_dir: Path) -> Iterator[None]:
    """One demo per data directory: a second one would fight over chdb and ports."""
    demo_dir.mkdir(parents=True, exist_ok=True)
    with open(demo_dir / "demo.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoSettingError(
                f"VOIPFLOW_DATA_DIR={demo_dir.parent}: another `voipflow demo` runs there; "
                "wait for it or use another data directory"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------- components


class DemoKafka:
    """The Kafka the demo uses: configured, already running locally, or its own."""

    name = "kafka"

    def __init__(self, kafka: KafkaConfig, data_dir: Path, say: Callable[[str], None]) -> None:
        self.kafka = kafka
        self.data_dir = data_dir
        self.say = say
        self.state_dir = data_dir / "demo" / "kafka"
        self.bootstrap = ""
        self.origin = ""
        self._broker: Any = None
        self._adopted = False

    def start(self) -> None:
        from voipflow.broker import (
            BrokerError,
            LocalBroker,
            LocalBrokerConfig,
            fetch_jars,
            running_state,
        )
        from voipflow.topics import KafkaAdminError, wait_for_broker

        try:
            if self.kafka.bootstrap.strip():
                wait_for_broker(self.kafka.bootstrap, CONNECT_TIMEOUT_S)
                self.bootstrap, self.origin = self.kafka.bootstrap, "VOIPFLOW_KAFKA_BOOTSTRAP"
                return
            user = running_state(self.data_dir / "kafka")
            if user is not None:
                wait_for_broker(user.bootstrap, 30.0)
                self.bootstrap = user.bootstrap
                self.origin = f"the local broker of `voipflow kafka start` (pid {user.pid})"
                return
            orphan = running_state(self.state_dir)
            if orphan is not None:  # an earlier demo was killed before it could stop it
                wait_for_broker(orphan.bootstrap, 30.0)
                self.bootstrap, self._adopted = orphan.bootstrap, True
                self.origin = f"the demo's broker left running earlier (pid {orphan.pid})"
                return
            libs = fetch_jars(progress=self.say)
            self.say(f"kafka: starting a local broker, state in {self.state_dir}")
            broker = LocalBroker(
                LocalBrokerConfig(
                    jar_dir=libs, state_dir=self.state_dir, port=0, controller_port=0, heap_mb=512
                )
            )
            broker.start(progress=lambda m: self.say(f"kafka: {m}"))
            self._broker = broker
            self.bootstrap = broker.bootstrap
            self.origin = f"local broker, started by the demo (pid {broker.pid})"
        except KafkaAdminError as exc:
            raise DemoSettingError(str(exc)) from exc
        except BrokerError as exc:
            raise DemoError(f"the local Kafka broker: {exc}") from exc

    @property
    def pid(self) -> int | None:
        return self._broker.pid if self._broker is not None else None

    def stop(self) -> None:
        from voipflow.broker import stop_recorded

        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        elif self._adopted:
            stop_recorded(self.state_dir)
            self._adopted = False


class PipelineTopics:
    """Creates the topics of collector, worker and sink (idempotent)."""

    name = "topics"

    def __init__(self, settings: Settings, kafka: DemoKafka) -> None:
        self.settings = settings
        self.kafka = kafka
        self.partitions: dict[str, int] = {}

    def names(self) -> dict[str, int]:
        from streams.app import partials_topic_name

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
        from voipflow.topics import KafkaAdminError, ensure_topics

        k = self.settings.kafka
        try:
            self.partitions = ensure_topics(
                self.kafka.bootstrap, self.names(), k.replication_factor
            )
        except KafkaAdminError as exc:
            raise DemoSettingError(str(exc)) from exc

    def stop(self) -> None:
        pass


def _clickhouse_error(settings: Settings, exc: Exception) -> DemoError:
    url = settings.clickhouse.url
    if url:
        return DemoSettingError(f"VOIPFLOW_CLICKHOUSE_URL={_mask(url)}: {exc}")
    return DemoSettingError(f"VOIPFLOW_DATA_DIR={settings.data_dir} (chdb): {exc}")


class ClickHouseSchema:
    """Applies the migrations and loads the city table, then lets go of ClickHouse."""

    name = "clickhouse"

    def __init__(self, settings: Settings, data_dir: Path, cities_csv: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.cities_csv = cities_csv
        self.applied = 0
        self.cities = 0
        self.where = ""

    def start(self) -> None:
        from dashboards import CityTableError
        from dashboards.cities import city_columns, read_cities
        from storage.clickhouse import ClickHouseError, connect
        from storage.clickhouse.migrations import Migrator, RenderOptions

        cfg = self.settings.clickhouse
        try:
            cities = read_cities(self.cities_csv)
        except CityTableError as exc:
            raise DemoSettingError(f"VOIPFLOW_WORKER_PREFIX_TABLE: {exc}") from exc
        try:
            ch = connect(cfg, self.data_dir)
            try:
                self.applied = len(
                    Migrator(ch, RenderOptions.from_config(cfg, ch.database)).migrate()
                )
                ch.insert("cities", city_columns(cities))
                self.cities = len(cities)
                self.where = f"{ch.kind} database {ch.database}" + (
                    "" if cfg.url else f" in {self.data_dir / 'clickhouse'}"
                )
            finally:
                ch.close()
        except ClickHouseError as exc:
            raise _clickhouse_error(self.settings, exc) from exc

    def stop(self) -> None:
        pass


class SimulatorThread:
    """The exporter simulator in a thread of this process."""

    name = "simulator"

    def __init__(self, config: Any) -> None:
        from voipflow.simulate.runner import Simulator

        self.sim = Simulator(config)
        self.latest: Any = None
        self.final: Any = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from voipflow.simulate.addresses import SimulatorDataError

        try:
            self.sim.start()
        except SimulatorDataError as exc:
            raise DemoSettingError(f"simulator: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.final = self.sim.run(self._progress, progress_every_s=1.0)
        except BaseException as exc:  # shown by the main thread
            self.error = exc

    def _progress(self, p: Any) -> None:
        self.latest = p

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def records(self) -> int:
        p = self.final or self.latest
        return int(p.records) if p is not None else 0

    def stop(self) -> None:
        self.sim.request_stop()
        if self._thread is not None:
            self._thread.join(30)
        self.sim.stop()  # closes the sockets, writes the truth file


# --------------------------------------------------------------------- demo


def _covers(networks: list[str], prefix: str) -> bool:
    net = ipaddress.ip_network(prefix, strict=False)
    for item in networks:
        home = ipaddress.ip_network(item, strict=False)
        if home.version == net.version and net.subnet_of(home):  # type: ignore[arg-type]
            return True
    return False


class Demo:
    """One run of ``voipflow demo``; :meth:`run` returns the exit status."""

    def __init__(self, settings: Settings, options: DemoOptions, out: TextIO) -> None:
        self.settings = settings
        self.opts = options
        self.out = out
        self.data_dir = Path(settings.data_dir).resolve()
        self.demo_dir = self.data_dir / "demo"
        self.log_dir = self.demo_dir / "logs"
        self.truth_path = self.demo_dir / "truth.json"
        self.t0 = time.monotonic()
        self._closing = False
        w = settings.worker
        self.cities_csv = Path(w.prefix_table) if w.prefix_table else DEMO_CITIES
        given = w.model_fields_set
        self.home_networks = w.home_networks if "home_networks" in given else DEMO_HOME_NETWORKS
        self.lateness_s = w.lateness_s if "lateness_s" in given else DEMO_LATENESS_S
        self.idle_close_s = w.idle_close_s if "idle_close_s" in given else DEMO_IDLE_CLOSE_S

    # -- output ----------------------------------------------------------------

    def say(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=self.out, flush=True)

    # -- plan ------------------------------------------------------------------

    def collector_listen(self) -> tuple[str, str]:
        """(listen setting, simulator target): the user's, or a free UDP port."""
        from collectors.config import split_listen

        if "listen" in self.settings.collector.model_fields_set:
            listen = self.settings.collector.listen
            host, port = split_listen(listen)[0]
            if host in ("0.0.0.0", ""):
                host = "127.0.0.1"
            elif host == "::":
                host = "::1"
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            return listen, target
        port = _free_udp_port()
        return f"127.0.0.1:{port}", f"127.0.0.1:{port}"

    def child_env(self, bootstrap: str, listen: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "VOIPFLOW_DATA_DIR": str(self.data_dir),
                "VOIPFLOW_KAFKA_BOOTSTRAP": bootstrap,
                # Each child picks a free port and says which (voipflow.endpoints).
                "VOIPFLOW_METRICS_LISTEN": "127.0.0.1:0",
                "VOIPFLOW_COLLECTOR_LISTEN": listen,
                "VOIPFLOW_WORKER_WINDOW_S": str(self.opts.window_s),
                "VOIPFLOW_WORKER_LATENESS_S": str(self.lateness_s),
                "VOIPFLOW_WORKER_IDLE_CLOSE_S": str(self.idle_close_s),
                "VOIPFLOW_WORKER_PREFIX_TABLE": str(self.cities_csv.resolve()),
                "VOIPFLOW_WORKER_HOME_NETWORKS": self.home_networks,
            }
        )
        return env

    def preflight(self, listen: str) -> None:
        """Cheap checks of the settings before anything starts (one line each)."""
        from collectors.config import split_listen
        from collectors.receiver import ReceiverError, check_free

        try:
            check_free(split_listen(listen))
        except ReceiverError as exc:
            raise DemoSettingError(f"VOIPFLOW_COLLECTOR_LISTEN={listen!r}: {exc.strerror}") from exc
        if self.settings.clickhouse.url:
            from storage.clickhouse import ClickHouseError, connect

            try:
                ch = connect(self.settings.clickhouse, self.data_dir)
                try:
                    ch.query("SELECT 1")
                finally:
                    ch.close()
            except ClickHouseError as exc:
                raise _clickhouse_error(self.settings, exc) from exc
        if not self.cities_csv.is_file():
            raise DemoSettingError(f"VOIPFLOW_WORKER_PREFIX_TABLE: no file {self.cities_csv}")

    def simulator_config(self, target: str) -> Any:
        from voipflow.simulate.config import SimulatorConfig

        homes = [s.strip() for s in self.home_networks.split(",") if s.strip()]
        v6 = [
            line.split(",", 1)[0]
            for line in self.cities_csv.read_text(encoding="utf-8").splitlines()[1:]
            if ":" in line.split(",", 1)[0]
        ]
        # Sessions over IPv6 only where the worker will see the subscriber side as home.
        ipv6_share = 0.25 if v6 and all(_covers(homes, p) for p in v6) else 0.0
        return SimulatorConfig(
            target=target,
            rate=self.opts.rate,
            duration_s=self.opts.duration_s,
            version=self.opts.version,
            sampling=self.opts.sampling,
            cities=self.cities_csv,
            seed=self.opts.seed,
            truth=self.truth_path,
            ipv6_share=ipv6_share,
        )

    # -- run -------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._closing:
            print("voipflow demo: already stopping, please wait", file=self.out, flush=True)
            return
        self._closing = True
        self.say(f"{signal.Signals(signum).name}: stopping everything that was started")
        raise KeyboardInterrupt

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with demo_lock(self.demo_dir):
                return self._run()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _run(self) -> int:
        from voipflow.demo_report import report
        from voipflow.demo_run import Pipeline

        s = self.settings
        listen, target = self.collector_listen()
        self.preflight(listen)
        sim_config = self.simulator_config(target)
        self.say(f"voipflow demo: state in {self.demo_dir}, logs in {self.log_dir}")
        kafka = DemoKafka(s.kafka, self.data_dir, self.say)
        topics = PipelineTopics(s, kafka)
        schema = ClickHouseSchema(s, self.data_dir, self.cities_csv)
        with running([kafka, topics, schema]):
            self.say(f"kafka: {kafka.bootstrap} ({kafka.origin})")
            self.say(
                f"topics: {len(topics.partitions)} ready ({', '.join(sorted(topics.partitions))})"
            )
            self.say(
                f"clickhouse: {schema.where}: {schema.applied} migrations applied, "
                f"{schema.cities} cities loaded"
            )
            env = self.child_env(kafka.bootstrap, listen)
            children = [
                ChildProcess(
                    name,
                    [name],
                    env=env,
                    log_file=self.log_dir / f"{name}.log",
                    data_dir=self.data_dir,
                )
                for name in ("collect", "worker", "sink")
            ]
            sim = SimulatorThread(sim_config)
            pipeline = Pipeline(self, kafka.bootstrap, children, sim)
            with running([*children, sim]):
                self.say(
                    f"started collector (udp {listen}), worker (window {self.opts.window_s} s, "
                    f"lateness {self.lateness_s} s), sink; simulator: "
                    f"{self.opts.rate:,.0f} flows/s for {self.opts.duration_s:.0f} s "
                    f"to {target}"
                )
                ok = pipeline.follow()
                self._closing = True
                self.say("stopping simulator, sink, worker, collector")
            figures = pipeline.figures
            figures["peak_rss"] = {c.name: c.peak_rss for c in children}
            figures["peak_rss"]["demo process"] = peak_rss_bytes(os.getpid())
            if kafka.pid is not None:
                figures["peak_rss"]["kafka"] = peak_rss_bytes(kafka.pid)
            good = report(self, sim, figures)
            if kafka.pid is not None:
                self.say("stopping the local Kafka broker")
        self.say(f"demo finished in {time.monotonic() - self.t0:.0f} s")
        return 0 if ok and good else 1
