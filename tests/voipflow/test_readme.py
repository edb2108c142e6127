"""The README's settings reference is the one the settings models generate."""

from __future__ import annotations

import importlib.util

from tests.fixtures.paths import REPO


def test_settings_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "readme_settings", REPO / "scripts/readme_settings.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = (REPO / "README.md").read_text()
    assert mod.START in readme and mod.END in readme
    assert mod.render(readme) == readme, (
        "README settings table is stale: run .venv/bin/python scripts/readme_settings.py"
    )


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci/run").read_text()
