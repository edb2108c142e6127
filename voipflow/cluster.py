"""A local Kafka cluster of several KRaft nodes from the same jars, on loopback.

``voipflow kafka start --nodes 3`` runs three nodes, each broker and controller
(a quorum of three voters), with every internal topic on three replicas and
``min.insync.replicas=2`` as the brokers' default: one node can die and every
acks=all write still succeeds, as on a production cluster. Each node is a
:class:`~voipflow.broker.LocalBroker` in ``<state_dir>/node-<id>``; the
cluster's record is ``<state_dir>/cluster.json`` (node pids, ports, and the
bootstrap list of all nodes), which ``voipflow kafka status|stop`` and
:func:`~voipflow.broker.resolve_bootstrap` read.

All nodes are launched before any is waited for: a node is ready only once a
majority of the quorum answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from voipflow.broker import (
    CLUSTER_FILE,
    KAFKA_VERSION,
    BrokerStartError,
    ClusterState,
    LocalBroker,
    LocalBrokerConfig,
    NodeState,
    _is_broker_process,
    _terminate,
    cluster_id,
    jars_ready,
    read_cluster,
)
from voipflow.netutil import free_port

log = logging.getLogger(__name__)


def stop_cluster(state_dir: Path, timeout_s: float = 30.0) -> ClusterState | None:
    """Stop every node recorded in ``state_dir`` (from any process); None if none ran."""
    state = read_cluster(state_dir)
    if state is None:
        return None
    alive = state.alive()
    for node in alive:  # all at once: the last node of a quorum cannot stop alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGTERM)
    for node in alive:
        _terminate(node.pid, timeout_s, _gone(node.pid))
    (Path(state_dir) / CLUSTER_FILE).unlink(missing_ok=True)
    for node in state.nodes:
        (Path(node.state_dir) / "broker.json").unlink(missing_ok=True)
    return state if alive else None


def _gone(pid: int) -> Callable[[], bool]:
    return lambda: not _is_broker_process(pid)


class LocalCluster:
    """``nodes`` KRaft nodes (broker + controller each) on ``host``; ``start()``/``stop()``.

    ``kill(i)`` and ``restart(i)`` act on one node (by index) and keep its
    ports and data, for fault tests.
    """

    name = "kafka-cluster"

    def __init__(
        self,
        jar_dir: Path,
        state_dir: Path,
        nodes: int = 3,
        *,
        host: str = "127.0.0.1",
        heap_mb: int = 384,
        min_insync_replicas: int | None = None,
        ready_timeout_s: float = 180.0,
        version: str = KAFKA_VERSION,
    ) -> None:
        if nodes < 1:
            raise BrokerStartError("--nodes must be at least 1")
        self.jar_dir = Path(jar_dir)
        self.state_dir = Path(state_dir)
        self.host = host
        self.version = version
        self.size = nodes
        isr = min_insync_replicas if min_insync_replicas is not None else min(2, nodes)
        self.min_insync_replicas = isr
        self.heap_mb = heap_mb
        self.ready_timeout_s = ready_timeout_s
        self.brokers: list[LocalBroker] = []
        self.ready_after_s: float | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def start(self, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _msg: None)
        if not jars_ready(self.jar_dir):
            raise BrokerStartError(
                f"no Kafka jars in {self.jar_dir}: run `voipflow kafka fetch` first"
            )
        running = read_cluster(self.state_dir)
        if running is not None and running.alive():
            raise BrokerStartError(
                f"a cluster already runs from {self.state_dir} at {running.bootstrap}: "
                "`voipflow kafka stop` first"
            )
        ports = self._ports()
        voters = ",".join(f"{i + 1}@{self.host}:{c}" for i, (_, c) in enumerate(ports))
        cid = self._cluster_id()
        self.brokers = [
            LocalBroker(
                LocalBrokerConfig(
                    jar_dir=self.jar_dir,
                    state_dir=self.state_dir / f"node-{i + 1}",
                    host=self.host,
                    port=port,
                    controller_port=controller,
                    heap_mb=self.heap_mb,
                    ready_timeout_s=self.ready_timeout_s,
                    node_id=i + 1,
                    voters=voters,
                    cluster_id=cid,
                    internal_replication=self.size,
                    min_insync_replicas=self.min_insync_replicas,
                ),
                version=self.version,
            )
            for i, (port, controller) in enumerate(ports)
        ]
        started = time.monotonic()
        try:
            for broker in self.brokers:
                broker.launch()
            for broker in self.brokers:
                broker.wait_ready(say)
        except BaseException:
            self.stop()
            raise
        self.ready_after_s = time.monotonic() - started
        self._write_state()
        log.info("kafka cluster ready", extra={"bootstrap": self.bootstrap, "nodes": self.size})

    def _ports(self) -> list[tuple[int, int]]:
        """Client and controller ports of every node: recorded ones on a restart of the
        same state folder (the quorum's addresses are in the nodes' metadata)."""
        old = read_cluster(self.state_dir)
        if old is not None and len(old.nodes) == self.size:
            return [
                (int(n.bootstrap.rpartition(":")[2]), int(n.controller.rpartition(":")[2]))
                for n in old.nodes
            ]
        taken: set[int] = set()
        ports = []
        for _ in range(self.size):
            pair = []
            for _ in range(2):
                port = free_port("tcp", self.host)
                while port in taken:
                    port = free_port("tcp", self.host)
                taken.add(port)
                pair.append(port)
            ports.append((pair[0], pair[1]))
        return ports

    def _cluster_id(self) -> str:
        meta = self.state_dir / "node-1" / "data" / "meta.properties"
        if meta.is_file():
            for line in meta.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "cluster.id" and value.strip():
                    return value.strip()
        return cluster_id()

    def _write_state(self) -> None:
        nodes = [
            NodeState(
                node_id=b.config.node_id,
                pid=b.pid or 0,
                bootstrap=b.bootstrap,
                controller=f"{self.host}:{b.controller_port}",
                state_dir=str(b.state_dir),
                log_file=str(b.log_file),
            )
            for b in self.brokers
        ]
        state = ClusterState(
            bootstrap=self.bootstrap, version=self.version, nodes=nodes, started_at=time.time()
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / (CLUSTER_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=1))
        tmp.replace(self.state_dir / CLUSTER_FILE)

    # -- faults ---------------------------------------------------------------

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (0-based) and reap it."""
        broker = self.brokers[index]
        proc = broker._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, index: int, progress: Callable[[str], None] | None = None) -> None:
        """Start node ``index`` again on its ports and data; return once it is ready."""
        broker = self.brokers[index]
        broker.launch()
        broker.wait_ready(progress)
        self._write_state()

    # -- stop -----------------------------------------------------------------

    def stop(self) -> None:
        for broker in self.brokers:  # all at once: the last node of a quorum cannot stop alone
            proc = broker._proc
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for broker in self.brokers:
            broker.stop()
        (self.state_dir / CLUSTER_FILE).unlink(missing_ok=True)
