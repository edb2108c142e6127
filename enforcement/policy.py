"""Operator policies: the YAML files, their model, and loading with file:line errors.

A policy file holds a list of policies under ``policies:`` (see
``examples/policies/``). Each policy says

* what it **matches**: apps, cities / regions / countries (empty: all), and
  the exporters whose routers a rule should be applied at;
* **when** it fires: ``condition: {metric, threshold, for}`` -- the metric of
  a voip-usage.v1 window (``call_seconds``, ``subscribers``, ``bytes``,
  ``flows``, ``voip_share``) above the threshold in N consecutive windows of
  one city and app;
* its **action** (``monitor``, ``alert``, ``throttle`` with ``rate_kbps``,
  ``block``), its **target** (``provider_ranges``, ``observed_peers``,
  ``app_ports``, ``subscriber_prefixes``), its **ttl** and its **mode**
  (``enforce`` or ``shadow``; shadow is the default, so a new policy counts
  what it would hit before it drops anything).

Why line numbers: an operator who reloads a policy at night must see at once
which line is wrong. The file is composed into YAML nodes (which keep their
marks), turned into plain values while every value's line is noted under its
path, and validated with pydantic; a validation error's location is mapped
back to the line of the deepest path that exists in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from voipflow.enforcement.errors import PolicyFileError

METRICS = ("call_seconds", "subscribers", "bytes", "flows", "voip_share")
ACTIONS = ("monitor", "alert", "throttle", "block")
TARGETS = ("provider_ranges", "observed_peers", "app_ports", "subscriber_prefixes")
MODES = ("enforce", "shadow")
#: Actions that change traffic: the guardrails check their targets.
TRAFFIC_ACTIONS = ("throttle", "block")

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


def parse_duration(value: Any) -> int:
    """Seconds of ``90``, ``"90s"``, ``"30m"``, ``"2h"`` or ``"7d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m, 2h or 1d")
    if isinstance(value, int):
        seconds = value
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a duration; write e.g. 90s, 30m, 2h or 1d")
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Match(_Strict):
    #: Apps of voip-usage.v1 (lower case); empty: every app.
    apps: tuple[str, ...] = ()
    cities: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    #: Exporters (routers) whose traffic the rule is meant for; usage windows
    #: do not carry exporters, so this narrows where a rule applies, not when.
    exporters: tuple[str, ...] = ()

    @field_validator("apps")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(a.strip().lower() for a in v)

    def matches(self, city: str, region: str, country: str, app: str) -> bool:
        """Whether a usage window of this city and app is in scope."""
        return (
            (not self.apps or app in self.apps)
            and (not self.cities or city in self.cities)
            and (not self.regions or region in self.regions)
            and (not self.countries or country in self.countries)
        )


class Condition(_Strict):
    metric: Literal["call_seconds", "subscribers", "bytes", "flows", "voip_share"]
    #: The window's metric must be strictly above this.
    threshold: float = Field(ge=0)
    #: ... in this many consecutive windows of one city and app.
    for_windows: int = Field(1, ge=1, le=1440, alias="for")

    @model_validator(mode="after")
    def _share(self) -> Condition:
        if self.metric == "voip_share" and self.threshold >= 1:
            raise ValueError("voip_share is a fraction 0..1; a threshold >= 1 never fires")
        return self

    def describe(self) -> str:
        return f"{self.metric} > {self.threshold:g} for {self.for_windows} windows"

    def holds(self, metrics: dict[str, Any]) -> bool:
        return float(metrics.get(self.metric, 0)) > self.threshold


class Policy(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    enabled: bool = True
    match: Match = Match()
    condition: Condition
    action: Literal["monitor", "alert", "throttle", "block"]
    #: Throttle only: kilobits per second the matched traffic is limited to.
    rate_kbps: int | None = Field(None, ge=1)
    target: Literal["provider_ranges", "observed_peers", "app_ports", "subscriber_prefixes"]
    #: How long a rule lives after the window that last renewed it.
    ttl_s: int = Field(alias="ttl")
    mode: Literal["enforce", "shadow"] = "shadow"

    @field_validator("ttl_s", mode="before")
    @classmethod
    def _ttl(cls, v: Any) -> int:
        return parse_duration(v)

    @model_validator(mode="after")
    def _rate(self) -> Policy:
        if self.action == "throttle" and self.rate_kbps is None:
            raise ValueError("a throttle needs rate_kbps (kilobits per second)")
        if self.action != "throttle" and self.rate_kbps is not None:
            raise ValueError(f"rate_kbps is for throttle only, not {self.action}")
        return self


class PolicyFile(_Strict):
    policies: tuple[Policy, ...] = Field(min_length=1)
    _source: Path = PrivateAttr(default=Path("<policy>"))
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> Path:
        return self._source

    def line_of(self, *loc: str | int) -> int:
        """Line (1-based) of a place in the file, e.g. ``line_of("policies", 0, "target")``."""
        return _Lines(self._lines).of(loc)

    def error(self, reason: str, *loc: str | int) -> PolicyFileError:
        """A :class:`PolicyFileError` pointing at ``loc`` in this file."""
        return PolicyFileError(self._source, self.line_of(*loc), reason)


# -- YAML with lines ---------------------------------------------------------

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class _Lines:
    lines: dict[Path_, int]

    def of(self, loc: Iterable[str | int]) -> int:
        """Line of the deepest existing prefix of ``loc`` (1-based)."""
        key = tuple(loc)
        while key and key not in self.lines:
            key = key[:-1]
        return self.lines.get(key, 1)


def _plain(node: yaml.Node, path: Path_, lines: dict[Path_, int], source: Path) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _plain(key_node, (*path, "\0key"), {}, source)
            if not isinstance(key, str | int | float | bool):
                raise PolicyFileError(source, key_node.start_mark.line + 1, "keys must be text")
            key = str(key)
            if key in out:
                raise PolicyFileError(
                    source, key_node.start_mark.line + 1, f"{key!r} is given twice"
                )
            out[key] = _plain(value_node, (*path, key), lines, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v, (*path, i), lines, source) for i, v in enumerate(node.value)]
    # a scalar: the safe constructor gives it its type (int, float, bool, null, str)
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise PolicyFileError(source, lines[path], f"bad value: {exc}") from exc


def _compose(text: str, source: Path) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        # The context (where the unclosed list or key began) is where a person
        # looks; the problem mark is often the end of the file.
        mark = exc.context_mark or exc.problem_mark
        line = mark.line + 1 if mark is not None else 1
        what = f"{exc.context}: {exc.problem}" if exc.context else str(exc.problem or exc)
        raise PolicyFileError(source, line, f"not valid YAML: {what}") from exc
    except yaml.YAMLError as exc:
        raise PolicyFileError(source, 1, f"not valid YAML: {exc}") from exc


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "file"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key (check the spelling; see examples/policies/)"
    if err["type"] == "missing":
        return f"{loc}: missing"
    return f"{loc}: {msg}"


def parse_policies(text: str, source: Path | str = "<policy>") -> PolicyFile:
    """Parse one policy file's text; raise :class:`PolicyFileError` naming file and line."""
    source = Path(source)
    node = _compose(text, source)
    if node is None:
        raise PolicyFileError(source, 1, "the file is empty; expected 'policies:' with a list")
    lines: dict[Path_, int] = {}
    data = _plain(node, (), lines, source)
    if not isinstance(data, dict):
        raise PolicyFileError(source, lines[()], "expected a mapping with 'policies:'")
    try:
        model = PolicyFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise PolicyFileError(source, _Lines(lines).of(err["loc"]), _describe(err)) from exc
    model._source = source
    model._lines = lines
    seen: dict[str, int] = {}
    for i, p in enumerate(model.policies):
        if p.name in seen:
            raise model.error(
                f"policy name {p.name!r} is used twice (first on line {seen[p.name]})",
                "policies",
                i,
                "name",
            )
        seen[p.name] = model.line_of("policies", i, "name")
    return model


def load_policy_file(path: Path | str) -> PolicyFile:
    """Read and validate one policy file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError(path, 1, f"cannot be read: {exc}") from exc
    return parse_policies(text, path)


def policy_files(path: Path | str) -> list[Path]:
    """A file, or the ``*.yaml``/``*.yml`` files of a folder, sorted."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
    return [path]


def load_policies(path: Path | str) -> list[Policy]:
    """Every enabled policy of a file or folder; names must be unique across files."""
    out: list[Policy] = []
    where: dict[str, Path] = {}
    for f in policy_files(path):
        for p in load_policy_file(f).policies:
            if p.name in where:
                raise PolicyFileError(f, 1, f"policy {p.name!r} is also defined in {where[p.name]}")
            where[p.name] = f
            if p.enabled:
                out.append(p)
    return out
