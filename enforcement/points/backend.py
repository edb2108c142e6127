"""What a backend offers the reconciler: read installed state, change it in one batch.

A backend is stateless towards the reconciler: everything it reports comes
from the dataplane itself (``nft -j list table``, the speaker's RIB), which
is what makes restarts and hand edits visible. Backends name installed rules
by :attr:`~enforcement.points.desired.Rule.handle` and record the version and
:attr:`~enforcement.points.desired.Rule.digest` they installed, so the
reconciler can tell an unchanged rule from one to replace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from voipflow.enforcement.points.desired import Rule


@dataclass(slots=True)
class Installed:
    """One rule as found in the dataplane."""

    handle: str
    #: The id the backend recorded with it; None when it keeps none.
    rule_id: str | None
    version: int
    digest: str
    #: False when a part is missing or differs from what the rule needs.
    intact: bool = True
    #: What is wrong when not intact, in words.
    detail: str = ""
    #: Cumulative counters since the rule was installed, where the backend has them.
    packets: int | None = None
    bytes: int | None = None
    elements: int = 0
    #: What the backend needs to take the rule out again (its own record).
    parts: Any = None


@dataclass(slots=True)
class State:
    """The whole installed state of a backend."""

    rules: dict[str, Installed] = field(default_factory=dict)
    #: False when the backend's own frame (table, chains, guards) is missing or wrong.
    base_ok: bool = True
    base_detail: str = ""


@dataclass(slots=True)
class Batch:
    """Changes applied together, in one transaction where the backend has them."""

    remove: list[Installed] = field(default_factory=list)
    add: list[Rule] = field(default_factory=list)
    #: Rebuild the backend's frame first (it was missing or wrong).
    base: bool = False

    def __len__(self) -> int:
        return len(self.remove) + len(self.add) + int(self.base)


class Backend(Protocol):
    """The dataplane an enforcement point drives (nftables, FlowSpec, log)."""

    name: str

    def start(self) -> None:
        """Check the backend can run here; raise BackendUnavailable naming the fix."""

    def stop(self) -> None:
        """Release what start took (child processes); installed rules stay."""

    def installed(self, desired: Mapping[str, Rule], now_ms: int) -> State:
        """Read installed state; ``desired`` (by handle) lets it check rules' parts."""

    def apply(self, batch: Batch, now_ms: int) -> None:
        """Apply ``batch`` at once; on BackendError nothing of it is applied."""
