"""``voipflow ledger``: follow every rule from publication to expiry.

Consumes rules.v1 and rules-feedback.v1 in its consumer group
(``VOIPFLOW_LEDGER_GROUP_ID``), publishes each state change on
rule-events.v1, republishes rules no enforcement point acknowledged within
``VOIPFLOW_LEDGER_FEEDBACK_TIMEOUT_S``, tombstones expired rules and
escalates failures (:mod:`voipflow.enforcement.ledger_process`). Exit status: 0
stopped, 1 stopped by an error, 2 bad settings or no broker.
"""

from __future__ import annotations

import argparse
import sys

from voipflow.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options: everything is in VOIPFLOW_LEDGER_* settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    from voipflow.commands._enforcement import bootstrap, run_until_stopped
    from voipflow.endpoints import serve_metrics
    from voipflow.enforcement.ledger_process import LedgerProcess
    from voipflow.topics import KafkaAdminError, wait_for_broker

    servers = bootstrap(settings)
    try:
        wait_for_broker(
            servers, timeout_s=settings.kafka.connect_timeout_s, security=settings.kafka
        )
    except KafkaAdminError as exc:
        print(f"voipflow ledger: {exc}", file=sys.stderr)
        return 2
    endpoint = serve_metrics(settings, "ledger")
    try:
        proc = LedgerProcess(settings.ledger, settings.kafka, servers)
        return run_until_stopped(proc, settings, servers, "ledger")
    finally:
        if endpoint is not None:
            endpoint.close()
