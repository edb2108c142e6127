"""The keyed agent's table values, decoded once instead of on every message.

The city and exporter states live in a Faust table as JSON bytes (the
changelog carries them, and a worker that takes a key over restores them from
it). Decoding a state on every partial cost the keyed agent as much as
applying the partial. :class:`DecodedStates` keeps, per key, the bytes object
the agent last wrote and the dict it encoded: when the table still holds that
very object (identity, not equality), the dict is its value.

Safety: :meth:`DecodedStates.take` removes the entry it returns, and only
:meth:`DecodedStates.written` puts one back, after the agent wrote the table.
A message whose handling failed, was a re-delivery or crashed the agent
mutated a dict that is then no longer cached, so the next message decodes
the table's bytes again. A value restored from the changelog (after a
rebalance) is a new bytes object and is decoded too.
"""

from __future__ import annotations

import json
from typing import Any

from voipflow.streams.aggregate import encode_state


class DecodedStates:
    """Per key, the last bytes written to the table and the state they encode."""

    def __init__(self) -> None:
        self._by_key: dict[str, tuple[bytes, dict[str, Any]]] = {}

    def take(self, key: str, raw: bytes | None) -> dict[str, Any] | None:
        """The state ``raw`` encodes (None for no value), the caller's to mutate.

        Raises ``ValueError`` for bytes that are not JSON.
        """
        hit = self._by_key.pop(key, None)
        if hit is not None and hit[0] is raw:
            return hit[1]
        if not raw:
            return None
        state: dict[str, Any] = json.loads(raw)
        return state

    def peek(self, key: str, raw: bytes) -> Any:
        """The value ``raw`` encodes, read-only (the cached dict when it is the same bytes)."""
        hit = self._by_key.get(key)
        if hit is not None and hit[0] is raw:
            return hit[1]
        return json.loads(raw)

    def written(self, key: str, state: dict[str, Any]) -> bytes:
        """Encode ``state`` for the table and remember both; returns the bytes to write."""
        raw = encode_state(state)
        self._by_key[key] = (raw, state)
        return raw

    def __len__(self) -> int:
        return len(self._by_key)


class PendingStates:
    """States the keyed agent changed but has not written to the table yet, and the
    events (not yet acked) that changed them.

    Writing a state costs its whole JSON (tens of KB for a busy city) in the
    changelog; a burst of partials for one key is written once. The events
    are acked only after the write (:meth:`DecodedStates.written`, then the
    changelog record, which every commit waits for), so an offset is never
    committed past a state change that is not in the changelog.
    """

    def __init__(self) -> None:
        self._states: dict[str, tuple[dict[str, Any], int]] = {}
        #: Events handled since the last write, in order, to ack after it.
        self.events: list[Any] = []
        self._since = 0.0

    def get(self, key: str) -> dict[str, Any] | None:
        """The key's unwritten state (None: the table holds its latest)."""
        hit = self._states.get(key)
        return hit[0] if hit is not None else None

    def put(self, key: str, state: dict[str, Any], partition: int) -> None:
        """Remember ``state`` to write to changelog ``partition`` (its input's partition)."""
        self._states[key] = (state, partition)

    def add_event(self, event: Any, now: float) -> None:
        if not self.events:
            self._since = now
        self.events.append(event)

    def age(self, now: float) -> float:
        """Seconds since the oldest event not yet acked (0 for none)."""
        return now - self._since if self.events else 0.0

    def items(self) -> list[tuple[str, dict[str, Any], int]]:
        return [(key, state, part) for key, (state, part) in self._states.items()]

    def clear(self) -> None:
        self._states.clear()
        self.events.clear()
