"""Flow 5-tuples as 64-bit hashes: direction pairing and the ICE socket memory.

Vectorised helpers of the classifier and the aggregation: a record's 5-tuple
and its reverse hash with one function (splitmix64 over the address halves,
ports and protocol), so pairing the two directions of a conversation in a
batch is an ``argsort`` + ``searchsorted``; client sockets (address, port)
hash alike for the :class:`IceMemory`.
"""

from __future__ import annotations

import numpy as np

from schemas.flowbatch import FlowBatch, addr16_halves

__all__ = ["IceMemory", "endpoint_hashes", "mix64", "pair_directions", "tuple_hashes"]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def tuple_hashes(batch: FlowBatch) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each record's 5-tuple and of its reverse (same function)."""
    sh, sl = addr16_halves(batch["src_addr"])
    dh, dl = addr16_halves(batch["dst_addr"])
    sp = batch["src_port"].astype(np.uint64)
    dp = batch["dst_port"].astype(np.uint64)
    pr = batch["protocol"].astype(np.uint64)
    hs = mix64(sh ^ mix64(sl ^ mix64(sp)))
    hd = mix64(dh ^ mix64(dl ^ mix64(dp)))
    fwd = mix64(hs * np.uint64(3) + hd + mix64(pr))
    rev = mix64(hd * np.uint64(3) + hs + mix64(pr))
    return fwd, rev


def endpoint_hashes(batch: FlowBatch) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each record's (src address, port) and (dst address, port)."""
    sh, sl = addr16_halves(batch["src_addr"])
    dh, dl = addr16_halves(batch["dst_addr"])
    sp = batch["src_port"].astype(np.uint64)
    dp = batch["dst_port"].astype(np.uint64)
    return mix64(sh ^ mix64(sl ^ mix64(sp))), mix64(dh ^ mix64(dl ^ mix64(dp)))


class IceMemory:
    """Recently seen STUN/TURN client sockets (endpoint hash -> app, last seen).

    Bounded in size and age, so it follows a collector's batches without
    growing: a call's media often starts in a later export than its STUN.
    """

    def __init__(self, max_age_ms: int = 600_000, max_size: int = 200_000) -> None:
        self.max_age_ms = max_age_ms
        self.max_size = max_size
        self.hashes = np.zeros(0, dtype=np.uint64)  # sorted
        self.apps = np.zeros(0, dtype=np.uint8)
        self.seen_ms = np.zeros(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.hashes)

    def clear(self) -> None:
        self.__init__(self.max_age_ms, self.max_size)  # type: ignore[misc]

    def update(self, hashes: np.ndarray, apps: np.ndarray, seen_ms: np.ndarray) -> None:
        """Add sockets; for a socket given several times the strongest app (highest code
        of a provider app, else any) and the latest time are kept."""
        h = np.concatenate([self.hashes, hashes.astype(np.uint64)])
        a = np.concatenate([self.apps, apps.astype(np.uint8)])
        t = np.concatenate([self.seen_ms, seen_ms.astype(np.uint64)])
        if not len(h):
            return
        newest = t.max()
        keep = t + np.uint64(self.max_age_ms) >= newest
        h, a, t = h[keep], a[keep], t[keep]
        order = np.lexsort((t, a, h))  # by hash, then app, then time: last row wins
        h, a, t = h[order], a[order], t[order]
        last = np.ones(len(h), dtype=bool)
        last[:-1] = h[1:] != h[:-1]
        h, a, t = h[last], a[last], t[last]
        if len(h) > self.max_size:
            recent = np.argsort(t, kind="stable")[-self.max_size :]
            recent.sort()
            h, a, t = h[recent], a[recent], t[recent]
        self.hashes, self.apps, self.seen_ms = h, a, t

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """App code of each socket (+1), 0 where unknown."""
        out = np.zeros(len(hashes), dtype=np.int16)
        if not len(self.hashes) or not len(hashes):
            return out
        pos = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        hit = self.hashes[pos] == hashes
        out[hit] = self.apps[pos[hit]].astype(np.int16) + 1
        return out


def pair_directions(batch: FlowBatch) -> np.ndarray:
    """Index of the record carrying the reverse direction of each record, -1 if none.

    When a 5-tuple appears several times (flow split by timeouts), the first
    record of the reverse tuple in hash order is taken.
    """
    n = len(batch)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    fwd, rev = tuple_hashes(batch)
    order = np.argsort(fwd, kind="stable")
    sorted_fwd = fwd[order]
    pos = np.searchsorted(sorted_fwd, rev)
    pos_c = np.minimum(pos, n - 1)
    found = sorted_fwd[pos_c] == rev
    partner = np.where(found, order[pos_c], -1).astype(np.int64)
    partner[partner == np.arange(n)] = -1  # src == dst tuples pair with themselves
    return partner
