"""``voipflow kafka fetch|start|stop|status``: a local Apache Kafka broker, no Docker.

``fetch`` assembles the broker's jars from Maven Central into ``.cache/kafka``
(once; reused). ``start`` runs one KRaft node on 127.0.0.1 with its state in
``<data_dir>/kafka`` and returns when it is ready, leaving it running
(``--foreground`` keeps it attached until Ctrl-C); ``--nodes 3`` runs a
three-node cluster instead (:mod:`voipflow.cluster`). Other voipflow commands find
it there when ``VOIPFLOW_KAFKA_BOOTSTRAP`` is empty. ``status`` tells whether
the Kafka that voipflow would use answers; ``stop`` stops the local broker.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from voipflow.broker import (
    DEFAULT_CACHE_DIR,
    KAFKA_VERSION,
    BrokerError,
    LocalBroker,
    LocalBrokerConfig,
    _is_broker_process,
    fetch_jars,
    resolve_bootstrap,
    running_state,
    stop_recorded,
)
from voipflow.cluster import LocalCluster, read_cluster, stop_cluster
from voipflow.process import wait_for_signal
from voipflow.settings import Settings
from voipflow.topics import KafkaAdminError, wait_for_broker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common_jars(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--cache-dir",
            type=Path,
            default=DEFAULT_CACHE_DIR,
            help="where jars are kept (default: %(default)s)",
        )
        p.add_argument(
            "--kafka-version", default=KAFKA_VERSION, help="Kafka release (default: %(default)s)"
        )

    fetch = sub.add_parser("fetch", help="download the broker's jars from Maven Central (once)")
    common_jars(fetch)

    start = sub.add_parser("start", help="start a local single-node broker and wait until ready")
    common_jars(start)
    start.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    start.add_argument(
        "--port", type=int, default=9092, help="client port; 0 picks a free one (default: 9092)"
    )
    start.add_argument(
        "--controller-port",
        type=int,
        default=9093,
        help="KRaft controller port; 0 picks a free one (default: 9093)",
    )
    start.add_argument(
        "--heap-mb",
        type=int,
        default=None,
        help="maximum JVM heap per node (default: 768, 384 per node of a cluster)",
    )
    start.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="KRaft nodes (broker and controller each) on free ports; 3 makes a cluster "
        "with min.insync.replicas=2 (set VOIPFLOW_KAFKA_REPLICATION_FACTOR=3 and "
        "VOIPFLOW_KAFKA_MIN_INSYNC_REPLICAS=2 for voipflow's topics) (default: 1)",
    )
    start.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for readiness (default: 90)"
    )
    start.add_argument(
        "--foreground", action="store_true", help="stay attached; Ctrl-C stops the broker"
    )

    stop = sub.add_parser("stop", help="stop the local broker started by `voipflow kafka start`")
    stop.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before SIGKILL (default: 30)"
    )

    status = sub.add_parser("status", help="is the local broker running, does Kafka answer")
    status.add_argument("--json", action="store_true", help="print as JSON")
    status.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for an answer (default: 5)"
    )


def _progress(msg: str) -> None:
    print(f"kafka: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    state_dir = Path(settings.data_dir) / "kafka"
    try:
        if args.action == "fetch":
            libs = fetch_jars(args.cache_dir, args.kafka_version, progress=_progress)
            print(f"Kafka {args.kafka_version} jars ready in {libs}")
            return 0
        if args.action == "start":
            return _start(args, state_dir)
        if args.action == "stop":
            cluster = stop_cluster(state_dir, args.timeout)
            if cluster is not None:
                print(f"stopped the local cluster at {cluster.bootstrap}")
                return 0
            state = stop_recorded(state_dir, args.timeout)
            if state is None:
                print(f"no local broker running in {state_dir}")
            else:
                print(f"stopped the local broker at {state.bootstrap} (pid {state.pid})")
            return 0
        return _status(args, settings, state_dir)
    except (BrokerError, KafkaAdminError) as exc:
        print(f"voipflow kafka {args.action}: {exc}", file=sys.stderr)
        return 1


def _start_cluster(args: argparse.Namespace, state_dir: Path, libs: Path) -> int:
    if args.foreground:
        raise BrokerError("--foreground runs one node; start a cluster without it")
    cluster = LocalCluster(
        libs,
        state_dir,
        args.nodes,
        host=args.host,
        heap_mb=args.heap_mb or 384,
        ready_timeout_s=max(args.timeout, 180.0),
        version=args.kafka_version,
    )
    _progress(f"starting {args.nodes} Kafka {args.kafka_version} nodes (state in {state_dir})")
    cluster.start(progress=_progress)
    print(
        f"Kafka {cluster.version} cluster of {args.nodes} nodes ready at {cluster.bootstrap} "
        f"in {cluster.ready_after_s:.1f} s (min.insync.replicas={cluster.min_insync_replicas})",
        flush=True,
    )
    print(
        f"topics voipflow creates: set VOIPFLOW_KAFKA_REPLICATION_FACTOR={args.nodes} "
        f"VOIPFLOW_KAFKA_MIN_INSYNC_REPLICAS={cluster.min_insync_replicas}"
    )
    print("stop it with: voipflow kafka stop")
    return 0


def _start(args: argparse.Namespace, state_dir: Path) -> int:
    libs = fetch_jars(args.cache_dir, args.kafka_version, progress=_progress)
    if args.nodes < 1:
        raise BrokerError("--nodes must be at least 1")
    if args.nodes > 1:
        return _start_cluster(args, state_dir, libs)
    cluster = read_cluster(state_dir)
    if cluster is not None and cluster.alive():
        raise BrokerError(
            f"a cluster already runs from {state_dir} at {cluster.bootstrap}: "
            "`voipflow kafka stop` first"
        )
    broker = LocalBroker(
        LocalBrokerConfig(
            jar_dir=libs,
            state_dir=state_dir,
            host=args.host,
            port=args.port,
            controller_port=args.controller_port,
            heap_mb=args.heap_mb or 768,
            ready_timeout_s=args.timeout,
        ),
        version=args.kafka_version,
    )
    _progress(f"starting Kafka {args.kafka_version} (state in {state_dir})")
    broker.start(progress=_progress)
    print(
        f"Kafka {broker.version} ready at {broker.bootstrap} (pid {broker.pid}) "
        f"in {broker.ready_after_s:.1f} s; log: {broker.log_file}",
        flush=True,
    )
    if not args.foreground:
        print("stop it with: voipflow kafka stop")
        return 0
    stop = threading.Event()
    exited: list[int] = []

    def watch() -> None:
        exited.append(broker.wait())
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    signum = 0
    try:
        signum = wait_for_signal(stop)
    finally:
        if signum or not exited:
            _progress("stopping")
        broker.stop()  # also clears the state file if the broker died on its own
    if not signum:
        status = exited[0] if exited else -1
        print(f"voipflow kafka start: the broker exited with status {status}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace, settings: Settings, state_dir: Path) -> int:
    local = running_state(state_dir)
    out: dict[str, object] = {"local": None, "bootstrap": None, "reachable": False, "error": None}
    cluster = read_cluster(state_dir)
    if cluster is not None:
        alive = {n.pid for n in cluster.alive()}
        out["cluster"] = {
            "bootstrap": cluster.bootstrap,
            "version": cluster.version,
            "nodes": [
                {"node_id": n.node_id, "pid": n.pid, "bootstrap": n.bootstrap, "up": n.pid in alive}
                for n in cluster.nodes
            ],
        }
    if local is not None:
        out["local"] = {
            "pid": local.pid,
            "bootstrap": local.bootstrap,
            "version": local.version,
            "uptime_s": round(time.time() - local.started_at, 1),
            "log_file": local.log_file,
        }
    try:
        bootstrap = resolve_bootstrap(settings.kafka, settings.data_dir)
        out["bootstrap"] = bootstrap
        wait_for_broker(bootstrap, args.timeout, security=settings.kafka)
        out["reachable"] = True
    except (BrokerError, KafkaAdminError) as exc:
        out["error"] = str(exc)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        if cluster is not None:
            up = sum(1 for n in cluster.nodes if _is_broker_process(n.pid))
            print(
                f"local cluster: Kafka {cluster.version}, {up} of {len(cluster.nodes)} nodes up, "
                f"bootstrap {cluster.bootstrap}"
            )
            for n in cluster.nodes:
                state = "up" if _is_broker_process(n.pid) else "DOWN"
                print(f"  node {n.node_id}: {n.bootstrap} pid {n.pid} {state}, log {n.log_file}")
        elif local is None:
            print(f"local broker: not running (state in {state_dir})")
        else:
            print(
                f"local broker: Kafka {local.version} at {local.bootstrap}, pid {local.pid}, "
                f"up {time.time() - local.started_at:.0f} s, log {local.log_file}"
            )
        if out["reachable"]:
            source = "VOIPFLOW_KAFKA_BOOTSTRAP" if settings.kafka.bootstrap else "local broker"
            print(f"kafka: {out['bootstrap']} answers ({source})")
    if out["error"]:
        print(f"voipflow kafka status: {out['error']}", file=sys.stderr)
        return 1
    return 0
