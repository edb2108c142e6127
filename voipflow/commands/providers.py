"""``voipflow providers list|refresh``: the VoIP provider address ranges the classifier uses.

``refresh`` fetches each provider's list again from the origin named in its
file's header (see ``data/providers/README.md``) and rewrites the file with
today's date; a provider whose origin fails, or has none, keeps its file.
Running workers pick the new files up at their next start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voipflow.settings import Settings
from voipflow.streams.providers import DEFAULT_DIR, ProviderError, load_providers, refresh_provider


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "refresh"))
    parser.add_argument(
        "--dir",
        type=Path,
        help="provider range folder (default: VOIPFLOW_WORKER_PROVIDER_DIR "
        "or the shipped data/providers)",
    )
    parser.add_argument("--only", action="append", metavar="NAME", help="only these providers")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per fetch")


def run(args: argparse.Namespace, settings: Settings) -> int:
    folder = args.dir or settings.worker.provider_dir or DEFAULT_DIR
    try:
        ranges = load_providers(folder)
    except ProviderError as exc:
        print(f"voipflow providers: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for prov in ranges.providers:
        if args.only and prov.name not in args.only:
            continue
        path = folder / f"{prov.name}.txt"
        if args.action == "list":
            mode = "media" if prov.media_only else "yes" if prov.voip else "no"
            print(
                f"{prov.name:<24} app={prov.app:<10} voip={mode:<5} "
                f"prefixes={len(prov.prefixes):<5} date={prov.header.get('date', '?')} "
                f"origin={prov.header.get('origin', 'none')}"
            )
            continue
        try:
            before, after = refresh_provider(path, timeout_s=args.timeout)
        except ProviderError as exc:
            failed += 1
            print(f"{prov.name}: kept ({exc})", file=sys.stderr)
            continue
        print(f"{prov.name}: {before} -> {after} prefixes")
    return 1 if failed and args.action == "refresh" else 0
