"""The exception tree of the enforcement points (drawn in the package docstring)."""

from __future__ import annotations


class EnforceError(Exception):
    """Anything the enforcement points raise."""


class RefusedRule(EnforceError):
    """A rule the point will not install; ``reason`` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BackendError(EnforceError):
    """The backend could not read or change its installed state."""


class BackendUnavailable(BackendError):
    """The backend cannot run here at all; the point stops at start with this message."""
