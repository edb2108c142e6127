"""Flows exported in slices (call media, video), one direction each: the leg pool.

A leg is one direction of a long flow. Routers export such flows every
active timeout, each record covering the slice since the previous one; the
pool holds the legs as columns so that finding the due slices of a step is
one comparison over an array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LEG_FIELDS: dict[str, Any] = {
    "sub": np.uint32,
    "call": np.int64,
    "app": np.uint8,
    "up": np.bool_,
    "v6": np.bool_,
    "peer": "S16",
    "sub_port": np.uint16,
    "peer_port": np.uint16,
    "proto": np.uint8,
    "tos": np.uint8,
    "media": np.bool_,
    "pps": np.float64,
    "size": np.float64,
    "fixed_packets": np.int64,
    "fixed_bytes": np.int64,
    "start": np.int64,
    "end": np.int64,
    "slice_start": np.int64,
    "due": np.int64,
    "counted": np.bool_,
}


NEVER = np.iinfo(np.int64).max


class LegPool:
    """One direction of the flows exported in slices, as growable columns.

    Appends go into spare capacity (doubling when full) and finished legs are
    only marked (their ``due`` set to never) until a third of the pool is
    dead, so a step does not copy the whole pool.
    """

    def __init__(self) -> None:
        self._cols = {k: np.empty(1024, dtype=v) for k, v in LEG_FIELDS.items()}
        self.n = 0
        self.dead = 0
        self._staged: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return self.n - self.dead

    @property
    def f(self) -> dict[str, np.ndarray]:
        """The used part of every column (views: writes go to the pool)."""
        return {k: v[: self.n] for k, v in self._cols.items()}

    def add(self, legs: dict[str, np.ndarray]) -> None:
        """Stage legs; :meth:`commit` appends everything staged."""
        if len(legs["due"]):
            self._staged.append(legs)

    def commit(self) -> None:
        if not self._staged:
            return
        k = sum(len(p["due"]) for p in self._staged)
        cap = len(self._cols["due"])
        if self.n + k > cap:
            while self.n + k > cap:
                cap *= 2
            for name, col in self._cols.items():
                grown = np.empty(cap, dtype=col.dtype)
                grown[: self.n] = col[: self.n]
                self._cols[name] = grown
        for name, col in self._cols.items():
            col[self.n : self.n + k] = np.concatenate([p[name] for p in self._staged])
        self.n += k
        self._staged = []

    def drop(self, idx: np.ndarray) -> None:
        """Forget the legs at ``idx`` (indexes into the used part)."""
        self._cols["due"][idx] = NEVER
        self.dead += len(idx)
        if self.dead * 3 > self.n:
            keep = np.flatnonzero(self._cols["due"][: self.n] != NEVER)
            for col in self._cols.values():
                col[: len(keep)] = col[keep]
            self.n, self.dead = len(keep), 0


def make_legs(**cols: Any) -> dict[str, np.ndarray]:
    """Leg columns for ``len(cols["sub"])`` legs; scalars are broadcast, the rest 0."""
    n = len(cols["sub"])
    legs = {k: np.zeros(n, dtype=v) for k, v in LEG_FIELDS.items()}
    for k, v in cols.items():
        legs[k][:] = v
    return legs


def aligned(start: np.ndarray, t0: int, timeout: int) -> np.ndarray:
    """Start of the slice in progress at ``t0`` (slices before it were exported)."""
    done = np.maximum(0, t0 - start) // timeout
    return start + done * timeout
