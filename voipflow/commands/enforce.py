"""``voipflow enforce``: apply the rules in force on rules.v1 and report on rules-feedback.v1.

Runs until SIGINT/SIGTERM. Exit status: 0 stopped, 1 the point stopped on an
error it cannot ride out (the message says which), 2 bad settings or a
backend that cannot run here (no nft, no permission, no speaker).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from voipflow.enforcement.points.backend import Backend
from voipflow.enforcement.points.config import EnforceConfig
from voipflow.enforcement.points.desired import Network
from voipflow.enforcement.points.errors import BackendUnavailable, EnforceError
from voipflow.process import running, wait_for_signal
from voipflow.settings import Settings, SettingsError
from voipflow.topics import KafkaAdminError, ensure_topics, wait_for_broker

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=["nftables", "flowspec", "log"],
        help="the dataplane (default VOIPFLOW_ENFORCE_BACKEND)",
    )
    parser.add_argument(
        "--point-id", help="name of this point in feedback (default VOIPFLOW_ENFORCE_POINT_ID)"
    )


def build_backend(config: EnforceConfig, never_block: Sequence[Network] = ()) -> Backend:
    """The backend ``config.backend`` names, configured but not started."""
    if config.backend == "nftables":
        from voipflow.enforcement.points.nftables import NftBackend

        return NftBackend(config, never_block)
    if config.backend == "flowspec":
        from voipflow.enforcement.points.flowspec import FlowSpecBackend

        return FlowSpecBackend(config)
    from voipflow.enforcement.points.logbackend import LogBackend

    return LogBackend(config.log_output)


def _bootstrap(settings: Settings) -> str:
    if settings.kafka.bootstrap:
        return settings.kafka.bootstrap
    from voipflow.broker import BrokerError, resolve_bootstrap

    try:
        return resolve_bootstrap(settings.kafka, settings.data_dir)
    except BrokerError as exc:
        raise SettingsError(str(exc)) from exc


def run(args: argparse.Namespace, settings: Settings) -> int:
    from voipflow.endpoints import serve_metrics
    from voipflow.enforcement.points.metrics import EnforceMetrics
    from voipflow.enforcement.points.service import EnforcementPoint
    from voipflow.schemas.topics import kafka_client_options

    updates = {}
    if args.backend:
        updates["backend"] = args.backend
    if args.point_id:
        updates["point_id"] = args.point_id
    config = EnforceConfig.model_validate({**settings.enforce.model_dump(), **updates})
    bootstrap = _bootstrap(settings)
    try:
        wait_for_broker(bootstrap, timeout_s=30.0, security=settings.kafka)
        # rules.v1 is compacted: the latest version per rule is all a new point needs.
        ensure_topics(
            bootstrap,
            {
                settings.kafka.rules_topic: 1,
                settings.kafka.feedback_topic: settings.kafka.partitions,
            },
            settings.kafka.replication_factor,
            {settings.kafka.rules_topic: {"cleanup.policy": "compact"}},
            security=settings.kafka,
        )
    except KafkaAdminError as exc:
        print(f"voipflow enforce: {exc}", file=sys.stderr)
        return 2
    metrics = EnforceMetrics()
    # The same prefixes the evaluator's guardrails cut out of every rule.
    never_block = settings.guardrails.configured_networks()
    point = EnforcementPoint(
        config,
        build_backend(config, never_block),
        bootstrap=bootstrap,
        rules_topic=settings.kafka.rules_topic,
        feedback_topic=settings.kafka.feedback_topic,
        metrics=metrics,
        client_options=kafka_client_options(settings.kafka),
        never_block=never_block,
    )
    endpoint = serve_metrics(settings, "enforce", metrics.registry)
    log.info(
        "enforcement point starting",
        extra={"point": point.point, "backend": config.backend, "group": config.group_name()},
    )
    try:
        with running([point]):
            wait_for_signal(point.done)
    except BackendUnavailable as exc:
        print(f"voipflow enforce: backend {config.backend} cannot run: {exc}", file=sys.stderr)
        return 2
    except EnforceError as exc:
        print(f"voipflow enforce: stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        if endpoint is not None:
            endpoint.close()
    if point.failure is not None:
        print(f"voipflow enforce: stopped: {point.failure}", file=sys.stderr)
        return 1
    return 0
