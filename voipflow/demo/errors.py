"""The demo's errors, in a leaf module so that every part can raise them.

::

    DemoError              the demo could not run to the end; one line
    +-- DemoSettingError   a setting is wrong (names it); exit status 2

A child that fails to start or dies raises :class:`voipflow.children.ChildError`
instead, which carries the end of its log.
"""

from __future__ import annotations


class DemoError(Exception):
    """The demo could not run to the end; ``str()`` is one line."""


class DemoSettingError(DemoError):
    """A bad setting; ``str()`` names it."""
