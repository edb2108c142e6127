"""The sink's exception tree.

Errors::

    SinkError
     +-- SinkStopped     a permanent ClickHouse error stopped the sink

(:class:`voipflow.storage.sink.tables.BadMessage` is not an error of the sink: a bad
message is counted and skipped, the sink keeps going.)
"""

from __future__ import annotations


class SinkError(Exception):
    """Base class of sink errors."""


class SinkStopped(SinkError):
    """A permanent error stopped the sink; ``str()`` says which table and why."""
