"""``voipflow worker``: the Faust worker that enriches, classifies and aggregates flows.

Creates the topics it uses if missing, then runs the Faust app of
:mod:`voipflow.streams.app` with the agents of :mod:`voipflow.streams.agents` until SIGINT or
SIGTERM. Start several (on one machine or many) with the same
``VOIPFLOW_WORKER_APP_ID``: they share the partitions as one consumer group,
and each city is owned by exactly one of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from voipflow.broker import BrokerError, resolve_bootstrap
from voipflow.settings import Settings
from voipflow.topics import KafkaAdminError, ensure_topics, raise_message_limits, wait_for_broker

if TYPE_CHECKING:
    from voipflow.schemas.topics import KafkaConfig
    from voipflow.streams.config import WorkerConfig
    from voipflow.streams.metrics import WorkerMetrics
    from voipflow.streams.stalls import StallWatch

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loglevel", default="warning", help="Faust's own log level (default: %(default)s)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from voipflow.streams.agents import install_agents
    from voipflow.streams.app import (
        WorkerSettingError,
        build_app,
        compression_codecs,
        partials_topic_name,
        window_message_limits,
    )
    from voipflow.streams.enrich import EnrichError
    from voipflow.streams.metrics import WorkerMetrics
    from voipflow.streams.pipeline import FlowPipeline
    from voipflow.streams.providers import ProviderError

    kafka, worker = settings.kafka, settings.worker
    try:
        bootstrap = resolve_bootstrap(kafka, settings.data_dir)
        wait_for_broker(bootstrap, timeout_s=kafka.connect_timeout_s, security=kafka)
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
            min_insync_replicas=kafka.min_insync_replicas,
            security=kafka,
        )
        # Window messages outgrow Kafka's default limit: new topics and old
        # ones (made before the limit was set, or by others) get it here.
        raise_message_limits(bootstrap, window_message_limits(kafka, worker), security=kafka)
    except (BrokerError, KafkaAdminError) as exc:
        print(f"voipflow worker: {exc}", file=sys.stderr)
        return 2
    from prometheus_client import REGISTRY

    from voipflow.endpoints import serve_metrics

    serve_metrics(settings, "worker")  # stops with the process
    # The registry the endpoint serves, beside the process metrics.
    try:
        arrow_codec = compression_codecs(kafka, worker)[1]
    except WorkerSettingError as exc:
        print(f"voipflow worker: bad setting: {exc}", file=sys.stderr)
        return 2
    pipeline = FlowPipeline(worker, WorkerMetrics(REGISTRY), arrow_codec)
    try:
        pipeline.start()
    except (EnrichError, ProviderError) as exc:
        print(f"voipflow worker: bad setting: {exc}", file=sys.stderr)
        return 2
    w = build_app(kafka, worker, bootstrap, settings.data_dir)
    watch = stall_watch(kafka, worker, bootstrap, pipeline.metrics)
    install_agents(w, worker, pipeline, watch.stalled if watch else frozenset)
    if watch is not None:
        watch.start()
    try:
        faust.Worker(w.app, loglevel=args.loglevel, quiet=True).execute_from_commandline()
    finally:
        if watch is not None:
            watch.stop()
        pipeline.stop()
    return 0


def stall_watch(
    kafka: KafkaConfig, worker: WorkerConfig, bootstrap: str, metrics: WorkerMetrics
) -> StallWatch | None:
    """The watch of stalled flows partitions (``None`` when turned off)."""
    from voipflow.schemas.topics import kafka_client_options
    from voipflow.streams.stalls import KafkaReader, StallTracker, StallWatch

    if worker.stall_poll_s <= 0:
        return None
    reader = KafkaReader(
        bootstrap, worker.app_id, kafka.flows_topic, kafka_client_options(kafka, "kafka-python")
    )
    return StallWatch(
        StallTracker(kafka.flows_topic, worker.stall_after_s, worker.stall_max_hold_s),
        reader,
        interval_s=worker.stall_poll_s,
        on_reading=lambda stalled: metrics.stalled_sources.set(len(stalled)),
        on_error=metrics.stall_watch_errors.inc,
    )
