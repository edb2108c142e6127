"""``voipflow policy check FILE...|run``: operator policies.

``check`` validates policy files (YAML, see ``examples/policies/``) and their
targets against the provider ranges, the classifier's port tables and the
prefix table; a bad file is refused with ``file:line: reason`` and exit code 1.
``run`` starts the policy evaluator: it consumes voip-usage.v1 in its consumer
group and publishes rules on rules.v1 (:mod:`voipflow.enforcement.evaluator_process`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voipflow.enforcement.errors import EnforcementError, PolicyFileError
from voipflow.settings import Settings, SettingsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    chk = sub.add_parser("check", help="validate policy files; file:line: reason on errors")
    chk.add_argument("files", nargs="+", type=Path, metavar="FILE", help="policy file or folder")
    sub.add_parser(
        "run", help="run the policy evaluator (voip-usage.v1 -> rules.v1), VOIPFLOW_EVALUATOR_*"
    )


def _check(files: list[Path], settings: Settings) -> int:
    from voipflow.enforcement.policy import load_policy_file, policy_files
    from voipflow.enforcement.targets import load_city_prefixes, target_problems
    from voipflow.streams.providers import ProviderError, load_providers

    try:
        providers = load_providers(settings.worker.provider_dir)
    except ProviderError as exc:
        print(f"voipflow policy: {exc}", file=sys.stderr)
        return 2
    table = settings.evaluator.prefix_table or settings.worker.prefix_table
    try:
        cities = load_city_prefixes(table)
    except EnforcementError as exc:
        print(f"voipflow policy: {exc}", file=sys.stderr)
        return 2
    bad = 0
    for arg in files:
        for path in policy_files(arg):
            try:
                pf = load_policy_file(path)
            except PolicyFileError as exc:
                print(str(exc), file=sys.stderr)
                bad += 1
                continue
            problems = target_problems(pf, providers, cities)
            for err in problems:
                print(str(err), file=sys.stderr)
            bad += bool(problems)
            if not problems:
                for p in pf.policies:
                    state = "" if p.enabled else " (disabled)"
                    rate = f" {p.rate_kbps} kbit/s" if p.rate_kbps else ""
                    print(
                        f"{path}: {p.name}: {p.action}{rate} {p.target} when "
                        f"{p.condition.describe()}, ttl {p.ttl_s} s, {p.mode}{state}"
                    )
    return 1 if bad else 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.policy_command == "check":
        return _check(args.files, settings)
    if settings.evaluator.policies is None:
        raise SettingsError(
            "VOIPFLOW_EVALUATOR_POLICIES is empty: set it to a policy file or folder"
        )
    from voipflow.commands._enforcement import bootstrap, run_until_stopped
    from voipflow.endpoints import serve_metrics
    from voipflow.enforcement.evaluator_process import EvaluatorProcess, EvaluatorSetup
    from voipflow.topics import KafkaAdminError, wait_for_broker

    servers = bootstrap(settings)
    try:
        wait_for_broker(
            servers, timeout_s=settings.kafka.connect_timeout_s, security=settings.kafka
        )
    except KafkaAdminError as exc:
        print(f"voipflow policy run: {exc}", file=sys.stderr)
        return 2
    setup = EvaluatorSetup(
        settings.evaluator,
        settings.guardrails,
        settings.kafka,
        settings.worker.provider_dir,
        settings.worker.prefix_table,
    )
    endpoint = serve_metrics(settings, "evaluator")
    try:
        proc = EvaluatorProcess(setup, servers)
        return run_until_stopped(proc, settings, servers, "policy run")
    except EnforcementError as exc:
        print(f"voipflow policy run: {exc}", file=sys.stderr)
        return 2
    finally:
        if endpoint is not None:
            endpoint.close()
