"""The house: one distribution name, and the layers the README draws.

The top-level folders (collectors/, streams/, storage/, schemas/,
dashboards/, enforcement/) are installed as ``voipflow.<folder>`` through the
links in ``voipflow/``, so installing voipflow adds one name to site-packages.
These checks read the code's own imports (``ast``), so a new import that breaks
a layer fails here, not in a reviewer's head.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO

ROOMS = ("collectors", "streams", "storage", "schemas", "dashboards", "enforcement")

#: room -> rooms it may import (besides itself). ``voipflow`` (the command
#: line and wiring) may import every room; no room imports ``voipflow``'s own
#: modules.
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "collectors": {"schemas"},
    "streams": {"schemas"},
    "storage": {"schemas"},
    # the evidence bits and roles of voip-flows are named in its contract
    "dashboards": {"schemas", "storage"},
    "enforcement": {"schemas", "storage", "streams"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "voipflow":
                names.update(f"voipflow.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def _room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "voipflow":
        return parts[0] if parts[0] in ROOMS else None
    if len(parts) > 1 and parts[1] in ROOMS:
        return parts[1]
    return "voipflow"


def _sources() -> list[Path]:
    files: list[Path] = []
    for room in (*ROOMS, "voipflow", "tests", "benchmarks"):
        base = REPO / room
        if base.is_dir():
            files += [
                p for p in base.rglob("*.py") if not p.is_symlink() and ".venv" not in p.parts
            ]
    return [p for p in files if not any(part.startswith(".") for part in p.relative_to(REPO).parts)]


def test_only_the_voipflow_name_is_installed() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["voipflow*"]
    for room in ROOMS:
        link = REPO / "voipflow" / room
        if (REPO / room).is_dir():
            assert link.is_symlink(), f"voipflow/{room} should link to ../{room}"
            assert link.resolve() == (REPO / room).resolve()


def test_no_module_imports_a_room_by_its_bare_name() -> None:
    bare = sorted(
        f"{p.relative_to(REPO)}: {name}"
        for p in _sources()
        for name in _imports(p)
        if name.split(".")[0] in ROOMS
    )
    assert not bare, "import these as voipflow.<room>:\n" + "\n".join(bare)


@pytest.mark.parametrize("room", [r for r in ROOMS if (REPO / r).is_dir()])
def test_a_room_imports_only_the_rooms_below_it(room: str) -> None:
    wrong = sorted(
        f"{p.relative_to(REPO)}: {name}"
        for p in (REPO / room).rglob("*.py")
        for name in _imports(p)
        if (other := _room_of(name)) not in (None, room) and other not in ALLOWED[room]
    )
    assert not wrong, f"{room} may import only {sorted(ALLOWED[room])}:\n" + "\n".join(wrong)


def test_tests_and_benchmarks_do_not_import_each_other() -> None:
    crossed = sorted(
        f"{p.relative_to(REPO)}: {name}"
        for top, other in (("tests", "benchmarks"), ("benchmarks", "tests"))
        for p in (REPO / top).rglob("*.py")
        for name in _imports(p)
        if name.split(".")[0] == other
    )
    assert not crossed, "\n".join(crossed)


def _test_modules_imported(path: Path) -> set[str]:
    """The ``test_*`` modules of tests/ that ``path`` imports, itself excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(REPO).parent.parts
    candidates: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            candidates.add(module)
            candidates.update(f"{module}.{alias.name}" for alias in node.names)
    own = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return {
        name
        for name in candidates
        if name.split(".")[0] == "tests"
        and name.rsplit(".", 1)[-1].startswith("test_")
        and name != own
        and REPO.joinpath(*name.split(".")).with_suffix(".py").is_file()
    }


#: Imports of test files still allowed, each with why. The HTTP client test
#: runs every panel test's own scenarios and checks over HTTP; those case
#: tables (data, scenarios, checks, the ``ch`` fixture) move out of the panel
#: test files into support modules once the dashboard work on them settles.
ALLOWED_TEST_IMPORTS: dict[str, set[str]] = {
    "tests/storage/clickhouse/test_http_clients.py": {
        "tests.dashboards.test_health_panels",
        "tests.dashboards.test_rules_panels",
        "tests.dashboards.test_usage_panels",
    },
}


def test_tests_share_helpers_through_support_modules_not_test_files() -> None:
    """A helper two test files use lives in a support module (``helpers.py``,
    ``*_support.py``, ``fixtures/``): a test file is what pytest runs, not a
    library; importing one runs its module-level set-up and ties its tests'
    internals to another file's."""
    found = {
        str(p.relative_to(REPO)): _test_modules_imported(p) for p in (REPO / "tests").rglob("*.py")
    }
    shared = sorted(
        f"{path}: {name}"
        for path, names in found.items()
        for name in names - ALLOWED_TEST_IMPORTS.get(path, set())
    )
    assert not shared, "move what these import into a support module:\n" + "\n".join(shared)
    stale = sorted(
        f"{path}: {name}"
        for path, names in ALLOWED_TEST_IMPORTS.items()
        for name in names - found.get(path, set())
    )
    assert not stale, "no longer imported, drop from ALLOWED_TEST_IMPORTS:\n" + "\n".join(stale)
