"""``voipflow settings``: every setting, its environment variable and value.

``--markdown`` prints the reference table of the README (variable, default,
meaning), built from the settings models and their ``#:`` comments so the
documentation cannot drift from the code.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re

from pydantic import BaseModel

from voipflow.settings import ENV_PREFIX, Settings

_FIELD = re.compile(r"^\s+(\w+)\s*:")


def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the ``#:`` comment lines just above its declaration."""
    docs: dict[str, str] = {}
    pending: list[str] = []
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            m = _FIELD.match(line)
            if m and m.group(1) in cls.model_fields and pending:
                docs[m.group(1)] = " ".join(pending)
            if stripped:
                pending = []
    return docs


def reference_rows() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, in declaration order."""
    rows = [(f"{ENV_PREFIX}CONFIG", "", "TOML config file; the environment overrides it.")]
    top_docs = field_docs(Settings)
    defaults = Settings.model_construct()
    for name in Settings.model_fields:
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            docs = field_docs(type(value))
            for sub in type(value).model_fields:
                rows.append(
                    (
                        f"{ENV_PREFIX}{name.upper()}_{sub.upper()}",
                        _show(getattr(value, sub)),
                        docs.get(sub, ""),
                    )
                )
        else:
            rows.append((f"{ENV_PREFIX}{name.upper()}", _show(value), top_docs.get(name, "")))
    return rows


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def _masked(value: object) -> object:
    """A URL's password (``scheme://user:password@host``) as ``***``; secrets mask themselves."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


def _show(value: object) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def markdown_table() -> str:
    out = ["| variable | default | meaning |", "|---|---|---|"]
    for var, default, doc in reference_rows():
        default_md = f"`{default}`" if default != "" else ""
        doc = doc.replace("``", "`").replace("|", "/")
        out.append(f"| `{var}` | {default_md} | {doc} |")
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print current values as JSON")
    group.add_argument(
        "--markdown", action="store_true", help="print the reference table (defaults, meaning)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    rows = []
    for name, value in settings:
        if isinstance(value, BaseModel):
            for sub, subval in value:
                rows.append((f"{ENV_PREFIX}{name.upper()}_{sub.upper()}", _masked(subval)))
        else:
            rows.append((f"{ENV_PREFIX}{name.upper()}", value))
    if args.json:
        print(json.dumps(dict(rows), default=str, indent=2))
    else:
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
    return 0
