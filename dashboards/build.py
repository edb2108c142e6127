"""Generate the Grafana dashboards: ``python dashboards/build.py [--check]``.

Writes one JSON file per dashboard next to this module (sorted keys, two-space
indent, newline at the end) so that ``git diff`` shows exactly what a change
to the definitions does. ``--check`` writes nothing and exits 1 when a
committed file differs from the generator's output (a test does the same).
``voipflow dashboards build`` is the same through the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python dashboards/build.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voipflow.dashboards import StaleDashboards, health, rules, usage
from voipflow.dashboards.rollups import Retention

#: Where the JSON files live (mounted into Grafana by docker-compose.yml).
DASHBOARD_DIR = Path(__file__).resolve().parent

#: File name -> builder. Usage panels also take the tables' retention.
DASHBOARDS: dict[str, Callable[[Retention], dict[str, Any]]] = {
    "voip-usage.json": usage.build,
    "rules.json": lambda _r: rules.build(),
    "pipeline-health.json": lambda _r: health.build(),
}


def render(retention: Retention | None = None) -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    r = retention or Retention()
    return {
        name: json.dumps(build(r), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def stale(directory: Path = DASHBOARD_DIR, retention: Retention | None = None) -> list[str]:
    """Names of the files in ``directory`` that are missing or differ from the output."""
    out = []
    for name, text in render(retention).items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return out


def check(directory: Path = DASHBOARD_DIR, retention: Retention | None = None) -> None:
    """Raise :class:`StaleDashboards` when a file is missing or out of date."""
    names = stale(directory, retention)
    if names:
        raise StaleDashboards(
            f"out of date in {directory}: {', '.join(names)} "
            "(run `python -m voipflow.dashboards.build` and commit the result)"
        )


def write(directory: Path = DASHBOARD_DIR, retention: Retention | None = None) -> list[Path]:
    """Write every dashboard into ``directory``; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render(retention).items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def load(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """The dashboards as committed: file name -> parsed JSON."""
    return {name: json.loads((directory / name).read_text(encoding="utf-8")) for name in DASHBOARDS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voipflow.dashboards.build", description=__doc__
    )
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 if stale")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        try:
            check(args.out)
        except StaleDashboards as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{len(DASHBOARDS)} dashboards up to date in {args.out}")
        return 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
