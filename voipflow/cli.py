"""The ``voipflow`` command: one entry point, one subcommand per job.

Each subcommand lives in ``voipflow/commands/<name>.py`` with two functions:
``add_arguments(parser)`` and ``run(args, settings) -> int``. Modules are
imported only when their command runs, so ``--help`` stays fast and a broken
optional dependency only breaks its own command.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from voipflow.settings import SettingsError, load_settings

#: name -> (module, one-line help). The order is the order of ``--help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("voipflow.commands.demo", "run the whole pipeline locally on simulated traffic"),
    "collect": ("voipflow.commands.collect", "receive NetFlow/IPFIX and publish flow batches"),
    "worker": ("voipflow.commands.worker", "run the Faust worker: enrich, classify, aggregate"),
    "sink": ("voipflow.commands.sink", "insert pipeline topics into ClickHouse"),
    "enforce": ("voipflow.commands.enforce", "apply rules.v1 with nftables, BGP FlowSpec or a log"),
    "simulate": ("voipflow.commands.simulate", "send realistic NetFlow/IPFIX for a set of cities"),
    "decode": ("voipflow.commands.decode", "decode NetFlow/IPFIX export packets in a pcap"),
    "eval": ("voipflow.commands.eval", "measure classification against labelled captures"),
    "policy": ("voipflow.commands.policy", "operator policies: check files, run the evaluator"),
    "rules": ("voipflow.commands.rules", "rules: list, show one, simulate a policy on history"),
    "ledger": ("voipflow.commands.ledger", "run the rule ledger: rules and feedback -> events"),
    "providers": ("voipflow.commands.providers", "list or refresh the VoIP provider ranges"),
    "kafka": ("voipflow.commands.kafka", "run a local Kafka broker (start|stop|status)"),
    "db": ("voipflow.commands.db", "ClickHouse: migrate, status, query"),
    "dashboards": ("voipflow.commands.dashboards", "Grafana dashboards: build, cities, push"),
    "report": ("voipflow.commands.report", "write an HTML (and PDF) report of VoIP usage"),
    "settings": ("voipflow.commands.settings", "show every setting, its variable and value"),
}


def _available() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = (module, text)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voipflow",
        description="VoIP flow analytics: NetFlow/IPFIX -> Kafka -> Faust -> ClickHouse.",
        epilog="Settings come from VOIPFLOW_* variables and --config FILE.toml; "
        "`voipflow settings` lists them.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file (VOIPFLOW_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, text) in _available().items():
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"voipflow: bad setting: {exc}", file=sys.stderr)
        return 2
    from voipflow.logs import setup_logging

    setup_logging(settings.log.level, settings.log.format, settings.log.rate_per_s)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args, settings) or 0)
    except SettingsError as exc:
        print(f"voipflow {args.command}: bad setting: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
