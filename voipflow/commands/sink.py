"""``voipflow sink``: insert the pipeline's and the rules' topics into ClickHouse.

Runs until SIGINT/SIGTERM (or, with ``VOIPFLOW_SINK_EXIT_WHEN_IDLE_S``, until
nothing arrived for that long). Exit status: 0 stopped, 1 stopped by a
permanent ClickHouse error (the message says which table and why), 2 bad
settings.
"""

from __future__ import annotations

import argparse
import logging
import sys

from voipflow.process import running, wait_for_signal
from voipflow.settings import Settings, SettingsError
from voipflow.storage.clickhouse import ClickHouseError
from voipflow.storage.sink import Sink, SinkMetrics, SinkStopped
from voipflow.topics import KafkaAdminError, wait_for_broker

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending ClickHouse migrations before starting",
    )


def _bootstrap(settings: Settings) -> str:
    if settings.kafka.bootstrap:
        return settings.kafka.bootstrap
    try:
        from voipflow.broker import resolve_bootstrap
    except ImportError as exc:
        raise SettingsError(
            "VOIPFLOW_KAFKA_BOOTSTRAP is empty and no local broker is known; set it"
        ) from exc
    return str(resolve_bootstrap(settings.kafka, settings.data_dir))


def run(args: argparse.Namespace, settings: Settings) -> int:
    bootstrap = _bootstrap(settings)
    try:
        # An unreachable broker is a bad setting: one line, not a client retrying forever.
        wait_for_broker(
            bootstrap, timeout_s=settings.kafka.connect_timeout_s, security=settings.kafka
        )
    except KafkaAdminError as exc:
        print(f"voipflow sink: {exc}", file=sys.stderr)
        return 2
    if args.migrate:
        from voipflow.storage.clickhouse import connect
        from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions

        ch = connect(settings.clickhouse, settings.data_dir)
        try:
            Migrator(ch, RenderOptions.from_config(settings.clickhouse, ch.database)).migrate()
        except ClickHouseError as exc:
            print(f"voipflow sink: migration failed: {exc}", file=sys.stderr)
            return 1
        finally:
            ch.close()
    from prometheus_client import REGISTRY

    try:
        sink = Sink(
            settings.sink,
            settings.kafka,
            settings.clickhouse,
            settings.data_dir,
            bootstrap=bootstrap,
            # The registry the endpoint serves, beside the process metrics.
            metrics=SinkMetrics(REGISTRY),
        )
    except ValueError as exc:
        raise SettingsError(f"VOIPFLOW_SINK_TOPICS: {exc}") from exc
    k = settings.kafka
    if k.rules_topic in sink.specs:
        # rules.v1 must be compacted: created here if the sink is the first to
        # subscribe, before a broker's auto-creation makes it a plain topic
        from voipflow.schemas.topics import COMPACTED_TOPIC
        from voipflow.topics import ensure_topics

        try:
            ensure_topics(
                bootstrap,
                {k.rules_topic: k.partitions},
                k.replication_factor,
                {k.rules_topic: COMPACTED_TOPIC},
                security=k,
            )
        except KafkaAdminError as exc:
            print(f"voipflow sink: {exc}", file=sys.stderr)
            return 2
    from voipflow.endpoints import serve_metrics

    endpoint = serve_metrics(settings, "sink")
    from voipflow.storage.clickhouse.serve import HTTPServerError, sql_endpoint

    try:
        with running([sink, *sql_endpoint(settings.clickhouse, settings.data_dir, REGISTRY)]):
            wait_for_signal(sink.done)
    except (SinkStopped, ClickHouseError) as exc:
        print(f"voipflow sink: stopped: {exc}", file=sys.stderr)
        return 1
    except HTTPServerError as exc:
        raise SettingsError(str(exc)) from exc
    finally:
        if endpoint is not None:
            endpoint.close()
    if sink.failure is not None:
        print(f"voipflow sink: stopped: {sink.failure}", file=sys.stderr)
        return 1
    return 0
