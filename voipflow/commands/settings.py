"""``voipflow settings``: every setting, its environment variable and value."""

from __future__ import annotations

import argparse
import json

from pydantic import BaseModel

from voipflow.settings import ENV_PREFIX, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    rows = []
    for name, value in settings:
        if isinstance(value, BaseModel):
            for sub, subval in value:
                rows.append((f"{ENV_PREFIX}{name.upper()}_{sub.upper()}", subval))
        else:
            rows.append((f"{ENV_PREFIX}{name.upper()}", value))
    if args.json:
        print(json.dumps({k: v for k, v in rows}, default=str, indent=2))
    else:
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
    return 0
