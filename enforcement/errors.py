"""The exception tree of the enforcement package.

Errors::

    EnforcementError            anything of this package
     +-- PolicyError            a policy that cannot be used
     |    +-- PolicyFileError   a policy file that does not parse or validate;
     |                          carries file, line and reason
     +-- TargetError            a target that cannot be resolved (an app
                                without ports, a city without prefixes)
"""

from __future__ import annotations

from pathlib import Path


class EnforcementError(Exception):
    """Base class of the enforcement package's errors."""


class PolicyError(EnforcementError):
    """A policy that cannot be used."""


class PolicyFileError(PolicyError):
    """A policy file that does not parse or validate: ``file:line: reason``."""

    def __init__(self, path: Path | str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = Path(path)
        self.line = line
        self.reason = reason


class TargetError(EnforcementError):
    """A target that cannot be resolved into prefixes and ports."""
