"""``voipflow worker``: the Faust worker that enriches, classifies and aggregates flows.

Creates the topics it uses if missing, then runs the Faust app of
:mod:`streams.app` with the agents of :mod:`streams.agents` until SIGINT or
SIGTERM. Start several (on one machine or many) with the same
``VOIPFLOW_WORKER_APP_ID``: they share the partitions as one consumer group,
and each city is owned by exactly one of them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from voipflow.broker import BrokerError, resolve_bootstrap
from voipflow.settings import Settings
from voipflow.topics import KafkaAdminError, ensure_topics, wait_for_broker

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loglevel", default="warning", help="Faust's own log level (default: %(default)s)"
    )


def _metrics(settings: Settings) -> None:
    listen = settings.metrics.listen.strip()
    if not listen:
        return
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    try:
        start_http_server(int(port) + 1 if int(port) else 0, addr=host or "127.0.0.1")
    except OSError as exc:
        log.warning("metrics endpoint not started", extra={"listen": listen, "error": str(exc)})


def run(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from streams.agents import install_agents
    from streams.app import build_app, partials_topic_name
    from streams.enrich import EnrichError
    from streams.pipeline import FlowPipeline
    from streams.providers import ProviderError

    kafka, worker = settings.kafka, settings.worker
    try:
        bootstrap = resolve_bootstrap(kafka, settings.data_dir)
        wait_for_broker(bootstrap, timeout_s=30.0)
        ensure_topics(
            bootstrap,
            {
                kafka.flows_topic: kafka.partitions,
                kafka.voip_flows_topic: kafka.partitions,
                kafka.usage_topic: kafka.partitions,
                kafka.traffic_topic: kafka.partitions,
                partials_topic_name(worker): kafka.partitions,
            },
            kafka.replication_factor,
        )
    except (BrokerError, KafkaAdminError) as exc:
        print(f"voipflow worker: {exc}", file=sys.stderr)
        return 2
    pipeline = FlowPipeline(worker)
    try:
        pipeline.start()
    except (EnrichError, ProviderError) as exc:
        print(f"voipflow worker: bad setting: {exc}", file=sys.stderr)
        return 2
    _metrics(settings)
    w = build_app(kafka, worker, bootstrap, settings.data_dir)
    install_agents(w, worker, pipeline)
    try:
        faust.Worker(w.app, loglevel=args.loglevel, quiet=True).execute_from_commandline()
    finally:
        pipeline.stop()
    return 0
