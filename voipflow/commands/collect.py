"""``voipflow collect``: receive NetFlow/IPFIX, decode, publish flow batches.

Outputs (``--output``):

* ``kafka`` (default): flow batches to ``flows.v1`` and health reports to
  ``exporter-health.v1``; the topics are created at start if missing.
* ``jsonl:PATH`` / ``jsonl:-``: one JSON object per decoded record to a file
  or stdout instead of Kafka (looking at an exporter, differential tests).
  Runs one worker whatever ``collector.workers`` says, so lines never mix.
* ``null``: decode and discard (benchmarks).

Processes: with ``collector.workers`` = 1 everything runs in this process.
With more, this process is a supervisor: it checks the settings, creates the
topics, serves the Prometheus endpoint for all workers (prometheus_client's
multiprocess mode, see :mod:`voipflow.collectors.metrics`) and starts the workers,
each binding its own SO_REUSEPORT sockets. SIGTERM/SIGINT stop every worker
gracefully (the batch in progress is published, Kafka is flushed, templates
are saved); a worker that dies unexpectedly is started again.

Bad settings fail at start with one line naming the variable: a listen
address in use (``VOIPFLOW_COLLECTOR_LISTEN``), no broker
(``VOIPFLOW_KAFKA_BOOTSTRAP``), a metrics address in use
(``VOIPFLOW_METRICS_LISTEN``).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from voipflow.settings import Settings, SettingsError

log = logging.getLogger(__name__)

#: A worker that dies within this many seconds of its start is a start
#: failure (bad settings): the collector stops instead of restarting it.
START_GRACE_S = 5.0
EXIT_BAD_SETTING = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        default="kafka",
        metavar="KIND",
        help="kafka (default), jsonl:PATH, jsonl:- (stdout) or null (decode and discard)",
    )


@dataclass(frozen=True)
class OutputSpec:
    kind: str  # kafka | jsonl | null
    path: str = ""


def parse_output(text: str) -> OutputSpec:
    kind, _, path = text.partition(":")
    if kind == "kafka" and not path:
        return OutputSpec("kafka")
    if kind == "null" and not path:
        return OutputSpec("null")
    if kind == "jsonl" and path:
        return OutputSpec("jsonl", path)
    raise SettingsError(f"--output {text!r}: expected kafka, jsonl:PATH, jsonl:- or null")


# -- checks at start ----------------------------------------------------------


def _check_listen(settings: Settings) -> None:
    from voipflow.collectors.config import split_listen
    from voipflow.collectors.receiver import ReceiverError, check_free

    try:
        check_free(split_listen(settings.collector.listen))
    except ReceiverError as exc:
        raise SettingsError(
            f"VOIPFLOW_COLLECTOR_LISTEN={settings.collector.listen!r}: {exc.strerror}"
        ) from exc


def _prepare_kafka(settings: Settings) -> str:
    """Resolve the bootstrap servers, wait for the broker, create the topics."""
    from voipflow.broker import BrokerError, resolve_bootstrap
    from voipflow.topics import KafkaAdminError, ensure_topics, wait_for_broker

    k = settings.kafka
    try:
        bootstrap = resolve_bootstrap(k, settings.data_dir)
        wait_for_broker(bootstrap, timeout_s=k.connect_timeout_s, security=k)
        ensure_topics(
            bootstrap,
            {k.flows_topic: k.partitions, k.health_topic: k.partitions},
            k.replication_factor,
            min_insync_replicas=k.min_insync_replicas,
            security=k,
        )
    except (BrokerError, KafkaAdminError) as exc:
        raise SettingsError(str(exc)) from exc
    return bootstrap


def _serve_metrics(settings: Settings, registry: Any) -> Any:
    from voipflow.endpoints import serve_metrics

    return serve_metrics(settings, "collect", registry)


def compression_codecs(settings: Settings) -> tuple[str, str | None]:
    """(Kafka client compression, Arrow IPC compression) from the settings."""
    codec = settings.kafka.compression
    if settings.collector.compression_layer == "kafka" or codec == "none":
        return codec, None
    if codec not in ("lz4", "zstd"):
        raise SettingsError(
            f"VOIPFLOW_KAFKA_COMPRESSION={codec!r}: Arrow IPC compresses with lz4 or zstd only; "
            "choose one or set VOIPFLOW_COLLECTOR_COMPRESSION_LAYER=kafka"
        )
    return "none", codec


# -- one worker ---------------------------------------------------------------


def _build_collector(
    settings: Settings, spec: OutputSpec, bootstrap: str, worker: int, metrics: Any
) -> Any:
    from voipflow.allocator import keep_freed_memory
    from voipflow.collectors.outputs import JsonlOutput, KafkaOutput, NullOutput, Output
    from voipflow.collectors.publisher import Publisher, PublisherConfig
    from voipflow.collectors.service import Collector
    from voipflow.schemas.kafka_security import kafka_client_options

    # Each batch's arrays reuse the last one's pages (voipflow.allocator).
    keep_freed_memory()
    cfg = settings.collector
    kafka_codec, arrow_codec = compression_codecs(settings)
    output: Output
    if spec.kind == "jsonl":
        output = JsonlOutput(spec.path)
    elif spec.kind == "null":
        output = NullOutput()
    else:

        def latency(topic: str, seconds: float) -> None:
            metrics.kafka_send_seconds.labels(topic).observe(seconds)
            metrics.kafka_messages.labels(topic).inc()

        publisher = Publisher(
            PublisherConfig(
                bootstrap=bootstrap,
                compression=kafka_codec,
                buffer_max_bytes=cfg.buffer_max_bytes,
                inflight_max_bytes=cfg.inflight_max_bytes,
                max_message_bytes=cfg.max_message_bytes,
                delivery_timeout_ms=cfg.delivery_timeout_ms,
                retry_backoff_ms=cfg.retry_backoff_ms,
                retry_backoff_max_ms=cfg.retry_backoff_max_ms,
                client_id=f"voipflow-collector-{worker}",
                client_options=kafka_client_options(settings.kafka),
            ),
            on_latency=latency,
        )
        output = KafkaOutput(
            publisher,
            settings.kafka.flows_topic,
            settings.kafka.health_topic,
            max_message_bytes=cfg.max_message_bytes,
            max_records=cfg.batch_max_records,
            stop_timeout_s=cfg.stop_timeout_s,
            metrics=metrics,
            arrow_compression=arrow_codec,
        )
    return Collector(
        cfg,
        output,
        metrics=metrics,
        state_dir=Path(settings.data_dir) / "collector",
        worker=worker,
    )


def _run_collector(collector: Any, on_started: Callable[[], None] | None = None) -> int:
    """Start, loop until SIGTERM/SIGINT, stop gracefully; exit code.

    ``on_started`` runs once the sockets are bound and the output is up (the
    metrics endpoint starts there, so it answering means "ready").
    """
    from voipflow.collectors.publisher import PublisherError
    from voipflow.collectors.service import CollectorStartError

    def on_signal(_signum: int, _frame: object) -> None:
        collector.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        collector.start()
    except CollectorStartError as exc:
        print(f"voipflow collect: bad setting: VOIPFLOW_COLLECTOR_LISTEN: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    except PublisherError as exc:
        print(f"voipflow collect: bad setting: VOIPFLOW_KAFKA_BOOTSTRAP: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    log.info("collector started", extra={"worker": collector.worker, "pid": os.getpid()})
    try:
        if on_started is not None:
            on_started()
        collector.run()
    finally:
        collector.stop()
        log.info(
            "collector stopped",
            extra={
                "worker": collector.worker,
                "datagrams": collector.datagrams,
                "records": collector.records,
            },
        )
    return 0


def _worker_main(
    settings: Settings,
    spec: OutputSpec,
    bootstrap: str,
    worker: int,
    metrics_dir: str,
    ready: Any,
) -> None:
    """Entry point of a worker process (spawned)."""
    from voipflow.logs import setup_logging

    setup_logging(settings.log.level, settings.log.format, settings.log.rate_per_s)
    from voipflow.collectors.metrics import CollectorMetrics, use_multiprocess

    use_multiprocess(metrics_dir)
    metrics = CollectorMetrics()
    collector = _build_collector(settings, spec, bootstrap, worker, metrics)
    sys.exit(_run_collector(collector, ready.set))


# -- the command --------------------------------------------------------------


def run(args: argparse.Namespace, settings: Settings) -> int:
    spec = parse_output(args.output)
    compression_codecs(settings)  # a bad combination fails before anything starts
    _check_listen(settings)
    bootstrap = _prepare_kafka(settings) if spec.kind == "kafka" else ""
    workers = settings.collector.workers
    if spec.kind == "jsonl" and workers > 1:
        log.warning("jsonl output runs one worker", extra={"workers_configured": workers})
        workers = 1
    if workers == 1:
        from voipflow.collectors.metrics import CollectorMetrics

        metrics = CollectorMetrics()
        servers: list[Any] = []
        try:
            return _run_collector(
                _build_collector(settings, spec, bootstrap, 0, metrics),
                lambda: servers.append(_serve_metrics(settings, metrics.registry)),
            )
        finally:
            for server in servers:
                if server is not None:
                    server.close()
    return _supervise(settings, spec, bootstrap, workers)


def _supervise(settings: Settings, spec: OutputSpec, bootstrap: str, workers: int) -> int:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    metrics_dir = tempfile.mkdtemp(prefix="voipflow-collector-metrics-")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, BaseProcess] = {}
    started: dict[int, float] = {}
    ready: dict[int, Any] = {}

    def spawn(i: int) -> None:
        ready[i] = ctx.Event()
        p = ctx.Process(
            target=_worker_main,
            args=(settings, spec, bootstrap, i, metrics_dir, ready[i]),
            name=f"voipflow-collector-{i}",
        )
        p.start()
        procs[i] = p
        started[i] = time.monotonic()

    server = None
    code = 0
    try:
        for i in range(workers):
            spawn(i)
        # Serve metrics (the sign of readiness) once every worker has bound.
        deadline = time.monotonic() + 120
        while not all(e.is_set() for e in ready.values()):
            failed = [p for p in procs.values() if not p.is_alive()]
            if failed or stop.is_set() or time.monotonic() > deadline:
                code = (failed[0].exitcode or 1) if failed else 1
                log.error("workers did not start", extra={"exit": code})
                return code
            time.sleep(0.05)
        server = _serve_metrics(settings, registry)
        log.info("collector supervisor started", extra={"workers": workers})
        while not stop.wait(0.5):
            for i, p in list(procs.items()):
                if p.is_alive():
                    continue
                if p.pid is not None:
                    mark_process_dead(p.pid, metrics_dir)
                if time.monotonic() - started[i] < START_GRACE_S or p.exitcode == EXIT_BAD_SETTING:
                    code = p.exitcode or 1
                    log.error("worker failed at start", extra={"worker": i, "exit": p.exitcode})
                    stop.set()
                    break
                log.error("worker died, starting it again", extra={"worker": i, "exit": p.exitcode})
                spawn(i)
    finally:
        for p in procs.values():
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + settings.collector.stop_timeout_s + 10
        for p in procs.values():
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
        if server is not None:
            server.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return code
