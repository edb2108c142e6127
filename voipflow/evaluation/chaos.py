"""Failures as figures: the whole pipeline under load while its parts die.

:class:`ChaosRun` starts, on a running three-node :class:`~voipflow.cluster.LocalCluster`,
``voipflow collect``, one or two ``voipflow worker`` and ``voipflow sink``
(chdb; with a ClickHouse outage among the faults also a second sink group
writing to Debian's clickhouse-server through the native path), sends a
:class:`~voipflow.evaluation.chaos_load.ChaosLoad` over UDP and injects the
faults of :data:`FAULTS` on a schedule. A part that dies is started again
after :attr:`ChaosOptions.pause_s`, as a service manager would. When the load
has ended and every group has caught up, the sinks stop and the run counts,
against the sender's record (every flow is a VoIP flow with its own id):
flows in ``traffic.v1`` (first copy per exporter, window and domain, as the
sink keeps them), rows and distinct flows in ``flows_voip``, usage rows and
the flows they count, and from those the flows lost and duplicated. UDP sent
while the collector's socket was closed is matched, flow by flow, with the
datagrams (and their IPFIX sequence numbers) sent in that interval and
reported apart. Peak lag is the sum of every group's uncommitted messages;
recovery runs from the first fault until that lag is back to what it was
before the faults, after the last part came back.

``benchmarks/chaos.py`` prints the table; a test runs a short form.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from voipflow.children import ChildError, ChildProcess
from voipflow.cluster import LocalCluster
from voipflow.evaluation.chaos_load import ChaosLoad, Sender, city_networks
from voipflow.evaluation.chaos_store import (
    Disk,
    LagProbe,
    NativeStore,
    migrate_chdb,
    read_chdb,
    read_traffic,
)
from voipflow.logs import tail
from voipflow.netutil import free_port
from voipflow.topics import ensure_topics

#: The faults, in the order of issue 12.
FAULTS = ("broker", "controller", "worker", "sink", "clickhouse", "collector", "disk")
REPO = Path(__file__).resolve().parents[2]
CITIES = REPO / "data" / "cities" / "demo-cities.csv"
HOME = "10.0.0.0/8"


@dataclass
class ChaosOptions:
    rate: int = 1000  #: flows per second
    seconds: int = 60  #: load duration
    exporters: int = 4
    partitions: int = 4
    window_s: int = 5
    outage_s: float = 60.0  #: ClickHouse outage
    down_s: float = 20.0  #: a killed broker, controller or worker, or the full disk
    pause_s: float = 5.0  #: a dead sink or a stopped collector before its restart
    sink_kill_after_inserts: int = 25
    drain_s: float = 600.0
    #: The worker's lateness and idle close: a part that stops the flow of
    #: records for longer than their sum makes late records (counted, lost to
    #: the windows); after the load they are also how long the last windows wait.
    lateness_s: int = 30
    idle_close_s: float = 15.0

    @property
    def quiet_s(self) -> float:
        """Seconds with every lag at zero before the run counts: the last windows
        close (idle close, then lateness) and the sink inserts them."""
        return self.idle_close_s + self.lateness_s + 10.0


@dataclass
class Row:
    """One line of the table."""

    fault: str
    sent: int = 0
    udp_lost: int = 0
    #: what the restarted collector itself counted as lost by sequence (-1: not read)
    collector_seq_lost: int = -1
    traffic_flows: int = 0
    traffic_voip: int = 0
    flows_voip_rows: int = 0
    flows_voip_distinct: int = 0
    usage_rows: int = 0
    usage_flows: int = -1  #: -1: not measured (no usage table)
    native_rows: int = -1
    native_distinct: int = -1
    lost: int = 0
    duplicated: int = 0
    recovery_s: float | None = None
    peak_lag: int = 0
    drained: bool = False
    events: list[str] = field(default_factory=list)


def controller_index(cluster: LocalCluster) -> int:
    """Index of the node that leads the KRaft quorum now (from its quorum-state file)."""
    for path in sorted(cluster.state_dir.glob("node-*/**/quorum-state")):
        with contextlib.suppress(OSError, ValueError):
            leader = int(json.loads(path.read_text()).get("leaderId", -1))
            if leader > 0:
                return leader - 1
    raise RuntimeError(f"no quorum-state with a leader under {cluster.state_dir}")


class Kafka(Protocol):
    """Where the run's topics live: a :class:`LocalCluster` for the broker and
    controller faults, any broker otherwise."""

    @property
    def bootstrap(self) -> str: ...


class ChaosRun:
    """One run of the load with ``faults`` (names of :data:`FAULTS`)."""

    def __init__(
        self,
        cluster: Kafka,
        workdir: Path,
        faults: list[str],
        options: ChaosOptions,
        clickhouse: Any = None,
        say: Callable[[str], None] = print,
    ) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}: choose from {FAULTS}")
        self.cluster, self.faults, self.o, self.say = cluster, faults, options, say
        self.server = clickhouse
        size = int(getattr(cluster, "size", 1))
        #: Three replicas and two in sync on the cluster; one on a single broker.
        self.replication, self.min_insync = min(3, size), min(2, size)
        self.dir = workdir
        self.tag = uuid.uuid4().hex[:8]
        self.row = Row("+".join(faults) or "none")
        self.children: dict[str, ChildProcess] = {}
        self.lock = threading.Lock()
        self.t0 = 0.0
        self.fault_start: float | None = None
        self.last_back = 0.0
        self.closed: list[tuple[float, float]] = []  # collector socket closed [from, to)
        self.lag: list[tuple[float, int]] = []
        self.group_lag: dict[str, int] = {}  # the last sample's lag per group
        self.disk: Disk | None = None
        self.native: NativeStore | None = None
        self._threads: list[threading.Thread] = []
        self.stop_sampling = threading.Event()
        self.server_down = False
        self.launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-launcher")

    # -- set-up ---------------------------------------------------------------

    def topic(self, name: str) -> str:
        return f"chaos-{self.tag}-{name}"

    def base_env(self, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
        env.update(
            VOIPFLOW_DATA_DIR=str(data_dir),
            VOIPFLOW_KAFKA_BOOTSTRAP=self.cluster.bootstrap,
            VOIPFLOW_KAFKA_PARTITIONS=str(self.o.partitions),
            VOIPFLOW_KAFKA_REPLICATION_FACTOR=str(self.replication),
            VOIPFLOW_KAFKA_MIN_INSYNC_REPLICAS=str(self.min_insync),
            VOIPFLOW_KAFKA_FLOWS_TOPIC=self.topic("flows"),
            VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC=self.topic("voip-flows"),
            VOIPFLOW_KAFKA_USAGE_TOPIC=self.topic("usage"),
            VOIPFLOW_KAFKA_TRAFFIC_TOPIC=self.topic("traffic"),
            VOIPFLOW_KAFKA_HEALTH_TOPIC=self.topic("health"),
            VOIPFLOW_METRICS_LISTEN="127.0.0.1:0",
            VOIPFLOW_WORKER_APP_ID=f"chaos-{self.tag}",
            VOIPFLOW_WORKER_WINDOW_S=str(self.o.window_s),
            VOIPFLOW_WORKER_LATENESS_S=str(self.o.lateness_s),
            VOIPFLOW_WORKER_IDLE_CLOSE_S=str(self.o.idle_close_s),
            VOIPFLOW_WORKER_PREFIX_TABLE=str(CITIES),
            VOIPFLOW_WORKER_HOME_NETWORKS=HOME,
            VOIPFLOW_SINK_GROUP_ID=f"chaos-{self.tag}-sink",
            VOIPFLOW_SINK_TOPICS=",".join(
                self.topic(t) for t in ("voip-flows", "usage", "traffic")
            ),
            VOIPFLOW_SINK_STATS_INTERVAL_S="0",
            VOIPFLOW_COLLECTOR_TEMPLATE_SAVE_INTERVAL_S="2",
        )
        return env

    def child(self, key: str, extra: dict[str, str] | None = None) -> ChildProcess:
        """A new child process for ``key`` (collect, worker-1, worker-2, sink, sink-native)."""
        command = key.split("-")[0]
        data_dir = self.dir / key
        env = self.base_env(data_dir)
        if key == "collect":
            env["VOIPFLOW_COLLECTOR_LISTEN"] = f"127.0.0.1:{self.udp_port}"
            env["VOIPFLOW_COLLECTOR_WORKERS"] = "1"
        if key == "sink-native":
            assert self.native is not None
            env.update(self.native.env())
            env["VOIPFLOW_SINK_GROUP_ID"] = f"chaos-{self.tag}-native"
        env.update(extra or {})
        return ChildProcess(
            command,
            [command],
            env=env,
            log_file=self.dir / "logs" / f"{key}.log",
            data_dir=data_dir,
        )

    def start_child(self, key: str, extra: dict[str, str] | None = None) -> None:
        """Start ``key`` from the launcher thread: children get SIGTERM when the thread
        that started them ends (``PR_SET_PDEATHSIG``), so that thread lives for the run."""
        self.launcher.submit(self._start_child, key, extra).result()

    def _start_child(self, key: str, extra: dict[str, str] | None) -> None:
        proc = self.child(key, extra)
        proc.start()
        with self.lock:
            self.children[key] = proc

    def setup(self) -> None:
        self.udp_port = free_port("udp", "127.0.0.1")
        names = ("flows", "voip-flows", "usage", "traffic", "health")
        topics = {self.topic(n): self.o.partitions for n in names}
        topics[f"chaos-{self.tag}-city-partials"] = self.o.partitions
        ensure_topics(
            self.cluster.bootstrap, topics, self.replication, min_insync_replicas=self.min_insync
        )
        sink_dir = self.dir / "sink"
        if "disk" in self.faults:
            self.disk = Disk(sink_dir / "clickhouse", size_mb=256)
            self.disk.mount()

        migrate_chdb(self.base_env(sink_dir), sink_dir, CITIES)
        if "clickhouse" in self.faults:
            if self.server is None:
                raise RuntimeError("a ClickHouse outage needs a clickhouse-server")
            self.native = NativeStore(self.server, self.topic("voip-flows"))
            self.native.create()
        self.start_child("collect")
        self.start_child("worker-1")
        if "worker" in self.faults:
            self.start_child("worker-2")
        kill_after = {}
        if "sink" in self.faults:
            kill_after = {
                "VOIPFLOW_SINK_FAULT_KILL_AFTER_INSERTS": str(self.o.sink_kill_after_inserts)
            }
        self.start_child("sink", kill_after)
        if self.native is not None:
            self.start_child("sink-native")

    # -- faults ---------------------------------------------------------------

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds into the load, fault) — one at a third of the load, or spread out."""
        if len(self.faults) == 1:
            return [(self.o.seconds / 3, self.faults[0])]
        step = self.o.seconds * 0.6 / max(1, len(self.faults))
        return [(self.o.seconds * 0.15 + i * step, f) for i, f in enumerate(self.faults)]

    def event(self, text: str) -> None:
        line = f"t={time.monotonic() - self.t0:6.1f} s: {text}"
        self.row.events.append(line)
        self.say(line)

    def later(self, delay: float, action: Callable[[], None]) -> None:
        def run() -> None:
            time.sleep(delay)
            action()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def restart(self, key: str) -> None:
        self.start_child(key)
        self.back(key)

    def free_disk(self) -> None:
        if self.disk is not None:
            self.disk.clear()
        self.back("disk space")

    def back(self, what: str) -> None:
        self.last_back = max(self.last_back, time.monotonic())
        self.event(f"{what} back")

    def inject(self, fault: str) -> None:
        now = time.monotonic()
        self.fault_start = self.fault_start or now
        o = self.o
        if fault in ("broker", "controller"):
            if not isinstance(self.cluster, LocalCluster):
                raise ValueError(f"the {fault} fault needs a LocalCluster")
            cluster = self.cluster
            leader = controller_index(cluster)
            index = leader if fault == "controller" else (leader + 1) % cluster.size
            cluster.kill(index)
            self.event(
                f"SIGKILL node {index + 1} ({'controller' if fault == 'controller' else 'broker'})"
            )

            def restart_node() -> None:
                cluster.restart(index)
                self.back(f"node {index + 1}")

            self.later(o.down_s, restart_node)
        elif fault == "worker":
            proc = self.children["worker-2"]
            pid = proc.pid
            proc.kill()  # an expected death: the restart below, not supervise's
            self.event(f"SIGKILL worker-2 (pid {pid}); worker-1 goes on")
            self.later(o.down_s, lambda: self.restart("worker-2"))
        elif fault == "sink":
            self.event(
                f"the sink dies at its insert number {o.sink_kill_after_inserts} "
                "(VOIPFLOW_SINK_FAULT_KILL_AFTER_INSERTS), between insert and commit"
            )
        elif fault == "clickhouse":
            self.server_down = True
            self.server.stop()
            self.event(f"clickhouse-server stopped for {o.outage_s:.0f} s")

            def restart_server() -> None:
                self.server.start()
                self.server_down = False
                self.back("clickhouse-server")

            self.later(o.outage_s, restart_server)
        elif fault == "collector":
            proc = self.children["collect"]
            began = time.monotonic()
            proc.stop()
            self.event("collector stopped (SIGTERM)")

            def reopen() -> None:
                self.start_child("collect")
                self.closed.append((began, time.monotonic()))
                down = time.monotonic() - began
                self.event(f"collector listening again {down:.1f} s after its stop began")
                self.back("collector")

            self.later(o.pause_s, reopen)
        elif fault == "disk":
            assert self.disk is not None
            self.disk.fill()
            self.event(f"sink's chdb disk full ({self.disk.free_mb():.1f} MB free)")
            self.later(o.down_s, self.free_disk)

    def supervise(self) -> None:
        """Restart a child that died (the sink after its injected kill, anything else)."""
        if self.native is not None and not self.server_down and not self.server.running:
            self.event("clickhouse-server died outside the outage; starting it again")
            self.server.start()
        with self.lock:
            items = list(self.children.items())
        for key, proc in items:
            try:
                proc.check()
            except ChildError as exc:
                with self.lock:
                    if self.children.get(key) is not proc:
                        continue
                    proc._stopping = True  # reaped: a new one takes its place
                    self.children[key] = self.child(key)  # placeholder, started below
                self.event(f"{key} died ({exc}); restarting in {self.o.pause_s:.0f} s")
                self.later(self.o.pause_s, functools.partial(self.restart, key))

    # -- lag --------------------------------------------------------------------

    def groups(self) -> list[tuple[str, list[str]]]:
        out = [(f"chaos-{self.tag}", [self.topic("flows")])]
        sink_topics = [self.topic(t) for t in ("voip-flows", "usage", "traffic")]
        out.append((f"chaos-{self.tag}-sink", sink_topics))
        if self.native is not None:
            out.append((f"chaos-{self.tag}-native", [self.topic("voip-flows")]))
        return out

    def sample_lag(self) -> None:
        """Every group's lag every half second (a thread: a dead broker may block a call)."""
        probe: LagProbe | None = None
        while not self.stop_sampling.is_set():
            try:
                probe = probe or LagProbe(self.cluster.bootstrap)
                per_group = {g: probe.lag(g, t) for g, t in self.groups()}
                with self.lock:
                    self.lag.append((time.monotonic(), sum(per_group.values())))
                    self.group_lag = per_group
            except Exception:  # a broker is down: a new probe, and sample again
                if probe is not None:
                    probe.close()
                probe = None
            self.stop_sampling.wait(0.5)
        if probe is not None:
            probe.close()

    def last_lag(self, since: float) -> int | None:
        with self.lock:
            return self.lag[-1][1] if self.lag and self.lag[-1][0] >= since else None

    # -- the run ----------------------------------------------------------------

    def run(self) -> Row:
        self.dir.mkdir(parents=True, exist_ok=True)
        sampler = threading.Thread(target=self.sample_lag, daemon=True)
        try:
            self.setup()
            load = ChaosLoad(city_networks(CITIES), self.o.rate, self.o.seconds, self.o.exporters)
            sender = Sender(load, self.udp_port)
            plan = self.schedule()
            self.t0 = time.monotonic()
            sampler.start()
            thread = threading.Thread(target=sender.run, daemon=True)
            thread.start()
            quiet_since = 0.0
            while True:
                now = time.monotonic()
                while plan and now - self.t0 >= plan[0][0]:
                    self.inject(plan.pop(0)[1])
                self.supervise()
                busy = thread.is_alive() or plan or any(t.is_alive() for t in self._threads)
                lag = self.last_lag(now - 2)
                if busy or lag != 0:
                    quiet_since = 0.0
                elif not quiet_since:
                    quiet_since = now
                elif now - quiet_since > self.o.quiet_s:
                    self.row.drained = True
                    break
                if now - self.t0 > self.o.seconds + self.o.drain_s:
                    with self.lock:
                        behind = ", ".join(f"{g} {n}" for g, n in self.group_lag.items())
                    self.event(f"NOT DRAINED: gave up waiting; last lag per group: {behind}")
                    self.note_warnings()
                    break
                time.sleep(0.5)
            self.event("drained" if self.row.drained else "stopping")
            return self.tally(load, sender)
        finally:
            self.stop_sampling.set()
            self.teardown()

    def note_warnings(self, per_child: int = 5) -> None:
        """Each running child's last warnings and errors as events: what a run
        that did not drain shows of why, since the logs go with its folder."""
        with self.lock:
            procs = dict(self.children)
        for key, proc in sorted(procs.items()):
            lines = [
                line
                for line in tail(proc.log_file, 400).splitlines()
                if any(level in line for level in ("WARNING", "ERROR", "CRITICAL", "Traceback"))
            ]
            for line in lines[-per_child:]:
                self.event(f"{key} log: {line[:300]}")

    def teardown(self) -> None:
        with self.lock:
            procs = list(self.children.values())
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.stop()
        if self.server is not None and not self.server.running:
            self.server.start()
        if self.disk is not None:
            self.disk.clear()
            self.disk.unmount()
        self.launcher.shutdown(wait=True)

    def tally(self, load: ChaosLoad, sender: Sender) -> Row:
        row = self.row
        # The restarted collector's own count of what it missed (the
        # exporters' sequence numbers against what it saved at its stop),
        # read before it stops.
        seq_lost = self.children["collect"].metrics().get("voipflow_collector_sequence_lost_total")
        # What the workers running now counted as late (a killed worker's
        # counts went with it).
        late = [0.0, 0.0]
        for key in ("worker-1", "worker-2"):
            proc = self.children.get(key)
            m = proc.metrics() if proc is not None else {}
            late[0] += m.get("voipflow_worker_late_records_total", 0.0)
            late[1] += m.get("voipflow_worker_late_traffic_records_total", 0.0)
        for proc in list(self.children.values()):
            proc.stop()
        self.event(
            f"the workers counted {late[0]:.0f} late usage and {late[1]:.0f} late traffic records"
        )
        if self.closed:
            row.collector_seq_lost = int(seq_lost or 0)
            self.event(
                f"the restarted collector counted {row.collector_seq_lost} flows lost by sequence"
            )
        row.sent = sender.flows_sent()
        row.traffic_flows, row.traffic_voip = read_traffic(
            self.cluster.bootstrap, self.topic("traffic")
        )
        ids, row.usage_rows, row.usage_flows = read_chdb(
            self.base_env(self.dir / "sink"), self.dir / "sink", load
        )
        row.flows_voip_rows = len(ids)
        seen = np.unique(ids[ids >= 0])
        row.flows_voip_distinct = len(seen)
        missing = np.setdiff1d(np.arange(load.next_id), seen)
        explained = self.explain(missing, sender)
        row.udp_lost = explained
        expect = row.sent - explained
        stages = [row.flows_voip_distinct, row.traffic_flows, row.usage_flows]
        if self.native is not None:
            if not self.server.running:  # noted: it should have been up since its restart
                self.event("clickhouse-server was found stopped at the count; starting it")
                self.server.start()
            nids = self.native.ids(load)
            row.native_rows, row.native_distinct = len(nids), len(np.unique(nids[nids >= 0]))
            stages.append(row.native_distinct)
            row.duplicated += row.native_rows - row.native_distinct
        row.lost = max(0, *(expect - s for s in stages))
        row.duplicated += (row.flows_voip_rows - row.flows_voip_distinct) + sum(
            max(0, s - expect) for s in (row.traffic_flows, row.usage_flows)
        )
        row.peak_lag = max((v for _, v in self.lag), default=0)
        row.recovery_s = self.recovery()
        return row

    def explain(self, missing: np.ndarray, sender: Sender) -> int:
        """Missing flows that were sent while the collector's socket was closed."""
        if not self.closed or not len(missing):
            return 0
        total = 0
        for began, reopened in self.closed:
            window = sender.sent_between(began, reopened)
            for e, (seq, flows, n) in sorted(window.items()):
                self.event(
                    f"exporter {e + 1}: {n} datagrams, {flows} flows sent while the collector "
                    f"was down (IPFIX sequence {seq} .. {seq + flows - 1})"
                )
            in_window = [d for d in sender.sent if began <= d.sent_at < reopened]
            lo = np.array([d.first_id for d in in_window], dtype=np.int64)
            hi = lo + np.array([d.flows for d in in_window], dtype=np.int64)
            hit = np.zeros(len(missing), dtype=bool)
            for a, b in zip(lo, hi, strict=True):
                hit |= (missing >= a) & (missing < b)
            total += int(hit.sum())
        return total

    def recovery(self) -> float | None:
        if self.fault_start is None:
            return None
        before = [v for t, v in self.lag if t < self.fault_start]
        normal = max(before[len(before) // 2 :], default=0)
        after = max(self.fault_start, self.last_back)
        for t, v in self.lag:
            if t >= after and v <= normal:
                return t - self.fault_start
        return None
