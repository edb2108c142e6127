"""Rewrite the settings reference in README.md from the settings models.

Run after adding or changing a setting: ``.venv/bin/python scripts/readme_settings.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voipflow.commands.settings import markdown_table

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def render(readme: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{markdown_table()}\n{END}{tail}"


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "README.md"
    path.write_text(render(path.read_text()))
