"""Flow 5-tuples as 64-bit hashes: direction pairing, sibling look-ups, socket memories.

Vectorised helpers of the classifier and the aggregation. :func:`flow_hashes`
hashes each address once (splitmix64 over its halves), each endpoint as
address x port and each 5-tuple and its reverse with one function, so:

* pairing the two directions of a conversation is ``argsort`` + ``searchsorted``;
* the RTCP flow next to an RTP flow (both ports + 1) is one more mix per side
  (:func:`shifted_conversation`) and a sorted membership test;
* client sockets (address, port) and host pairs key the :class:`IceMemory`
  (STUN sockets, signalling peers) across batches.

The hashes live only in memory (no state keeps them), so their definition may
change between versions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voipflow.schemas.flowbatch import FlowBatch, addr16_halves

__all__ = [
    "FlowHashes",
    "IceMemory",
    "flow_hashes",
    "in_sorted",
    "mix64",
    "pair_directions",
    "shifted_conversation",
]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


#: splitmix64 of every port number and protocol, so a 5-tuple hash costs one
#: mix per endpoint and a port-shifted variant (RTCP next to RTP) one more.
_PORT_MIX = mix64(np.arange(65537, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))
_PROTO_MIX = mix64(np.arange(256, dtype=np.uint64) + np.uint64(0x632BE59BD9B4E019))


@dataclass(slots=True)
class FlowHashes:
    """64-bit hashes of a batch's addresses, endpoints and 5-tuples (one pass)."""

    src_addr: np.ndarray  # address alone
    dst_addr: np.ndarray
    src_ep: np.ndarray  # (address, port)
    dst_ep: np.ndarray
    fwd: np.ndarray  # 5-tuple as recorded
    rev: np.ndarray  # the reverse 5-tuple, hashed alike
    proto_mix: np.ndarray

    @property
    def conversation(self) -> np.ndarray:
        """Direction-free 5-tuple key (same for a record and its reverse)."""
        out: np.ndarray = np.minimum(self.fwd, self.rev)
        return out

    def host_pair(self, sel: np.ndarray) -> np.ndarray:
        """Direction-free key of the two addresses, ports ignored, for the
        records of the boolean ``sel`` (zeros elsewhere)."""
        sa, da = self.src_addr[sel], self.dst_addr[sel]
        key = mix64(np.minimum(sa, da) * np.uint64(3) + np.maximum(sa, da))
        out = np.zeros(len(self.src_addr), dtype=np.uint64)
        out[sel] = key
        return out


def _tuple(src_ep: np.ndarray, dst_ep: np.ndarray, proto_mix: np.ndarray) -> np.ndarray:
    out: np.ndarray = mix64(src_ep * np.uint64(3) + dst_ep + proto_mix)
    return out


def flow_hashes(batch: FlowBatch) -> FlowHashes:
    """All hashes the classifier uses, computed once per batch."""
    sh, sl = addr16_halves(batch["src_addr"])
    dh, dl = addr16_halves(batch["dst_addr"])
    sa = mix64(sh ^ mix64(sl))
    da = mix64(dh ^ mix64(dl))
    se = mix64(sa ^ _PORT_MIX[batch["src_port"]])
    de = mix64(da ^ _PORT_MIX[batch["dst_port"]])
    pm = _PROTO_MIX[batch["protocol"]]
    return FlowHashes(sa, da, se, de, _tuple(se, de, pm), _tuple(de, se, pm), pm)


def shifted_conversation(
    h: FlowHashes, sel: np.ndarray, src_port: np.ndarray, dst_port: np.ndarray, delta: int
) -> np.ndarray:
    """Direction-free 5-tuple keys of the selected records with both ports + ``delta``."""
    sp = src_port[sel].astype(np.int64) + delta
    dp = dst_port[sel].astype(np.int64) + delta
    se = mix64(h.src_addr[sel] ^ _PORT_MIX[np.clip(sp, 0, 65536)])
    de = mix64(h.dst_addr[sel] ^ _PORT_MIX[np.clip(dp, 0, 65536)])
    pm = h.proto_mix[sel]
    out: np.ndarray = np.minimum(_tuple(se, de, pm), _tuple(de, se, pm))
    return out


def in_sorted(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Membership of ``keys`` in an ascending uint64 array."""
    if not len(sorted_set) or not len(keys):
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, keys), len(sorted_set) - 1)
    out: np.ndarray = sorted_set[pos] == keys
    return out


#: The smallest membership filter of an :class:`IceMemory`: 4,096 one-byte slots.
FILTER_MIN_BITS = 12


class IceMemory:
    """Recently seen STUN/TURN client sockets (endpoint hash -> app, last seen).

    Bounded in size and age, so it follows a collector's batches without
    growing: a call's media often starts in a later export than its STUN.
    An entry idle for more than ``max_age_ms`` (behind the newest time the
    memory has seen) is forgotten. Past ``max_size`` live entries the least
    recently seen are forgotten, down to 7/8 of it.

    Two sorted levels, as a log-structured merge keeps them: a batch's new
    entries go into a small recent level, which is merged into the main
    level once it holds an eighth as many. Inserting into one sorted array
    of up to a million entries copied all of it on every batch (and a pass
    over it aged entries out): in a busy exporter's stream that was about a
    third of the worker's profile samples. Idle entries are now forgotten lazily: a lookup
    does not see them, an update of one starts it afresh, and they are
    dropped when the levels merge or the memory reaches ``max_size``. So
    every lookup answers exactly what a memory that dropped them at once
    would answer.
    """

    def __init__(self, max_age_ms: int = 600_000, max_size: int = 200_000) -> None:
        self.max_age_ms = max_age_ms
        self.max_size = max_size
        self._levels = [_Level(), _Level()]  # main, recent; no hash in both
        self._newest: int | None = None  # the newest time seen (ms)
        # The last update's sockets that are idle by their time (a batch
        # reaching back further than the age): live until the next update.
        self._stale = np.zeros(0, dtype=np.uint64)
        # A membership filter in front of the sorted arrays: one flag per slot
        # of the hash's top bits, set for every hash the memory holds (and
        # possibly for some it forgot). Most looked-up sockets are not in the
        # memory, and a flag read is far cheaper than a binary search of a
        # large array (a cache miss per step); only flagged keys are searched.
        # It grows with the memory, keeping about 8 slots per entry (at most
        # 1 in 8 misses is searched in vain), so an exporter with a small
        # memory has a small filter that stays in cache.
        self._max_slots = 1 << max(FILTER_MIN_BITS, int(8 * max(max_size, 1) - 1).bit_length())
        self._set_filter(1 << FILTER_MIN_BITS)

    @property
    def _main(self) -> _Level:
        return self._levels[0]

    @property
    def _recent(self) -> _Level:
        return self._levels[1]

    def __len__(self) -> int:
        """Live entries (idle ones not counted)."""
        return sum(int(np.count_nonzero(self._live(lv.hashes, lv.seen_ms))) for lv in self._levels)

    @property
    def hashes(self) -> np.ndarray:
        """The live entries' hashes, ascending."""
        out: np.ndarray = np.sort(
            np.concatenate([lv.hashes[self._live(lv.hashes, lv.seen_ms)] for lv in self._levels])
        )
        return out

    def clear(self) -> None:
        self.__init__(self.max_age_ms, self.max_size)  # type: ignore[misc]

    @property
    def nbytes(self) -> int:
        """Bytes the memory holds: its arrays (idle entries not yet dropped
        included) and its filter."""
        return int(sum(lv.nbytes for lv in self._levels) + self._filter.nbytes)

    @property
    def filter_slots(self) -> int:
        """Slots of the membership filter."""
        return len(self._filter)

    def _live(self, hashes: np.ndarray, seen_ms: np.ndarray) -> np.ndarray:
        """True where an entry (``hashes``, last seen at ``seen_ms``) is not idle
        past the age, or was given by the last update."""
        if self._newest is None:
            return np.zeros(len(seen_ms), dtype=bool)
        out: np.ndarray = seen_ms + np.uint64(self.max_age_ms) >= np.uint64(self._newest)
        if len(self._stale):
            out |= in_sorted(hashes, self._stale)
        return out

    def _physical(self) -> int:
        return len(self._main.hashes) + len(self._recent.hashes)

    def _set_filter(self, slots: int) -> None:
        """A filter of ``slots`` flags (a power of two), set from the memory."""
        self._shift = np.uint64(64 - slots.bit_length() + 1)
        self._filter = np.zeros(slots, dtype=bool)
        for lv in self._levels:
            self._filter[lv.hashes >> self._shift] = True
        self._forgotten = 0  # entries dropped since the filter was rebuilt

    def _forgot(self, n: int) -> None:
        """``n`` entries were dropped; the filter is rebuilt once the dropped
        outnumber half of those kept (until then their flags only cost a
        search in vain)."""
        self._forgotten += n
        if self._forgotten * 2 > self._physical():
            self._set_filter(len(self._filter))

    def _merge(self) -> None:
        """Merge the recent level into the main one, dropping idle entries."""
        main, recent = self._main, self._recent
        if len(recent.hashes):
            main.insert(np.searchsorted(main.hashes, recent.hashes), recent)
            self._levels[1] = _Level()
        live = self._live(main.hashes, main.seen_ms)
        if not live.all():
            self._levels[0] = main.take(live)
            self._forgot(len(live) - int(np.count_nonzero(live)))

    def update(self, hashes: np.ndarray, apps: np.ndarray, seen_ms: np.ndarray) -> None:
        """Add sockets; for a socket given several times (or already known) the
        strongest app (highest code of a provider app, else any) and the latest
        time are kept.
        """
        if not len(hashes):
            return
        h = hashes.astype(np.uint64)
        a = apps.astype(np.uint8)
        t = seen_ms.astype(np.uint64)
        if len(h) > 1:  # one entry per hash: the highest app, the latest time
            order = np.argsort(h)
            h, a, t = h[order], a[order], t[order]
            starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
            if len(starts) < len(h):
                a = np.maximum.reduceat(a, starts)
                t = np.maximum.reduceat(t, starts)
                h = h[starts]
        newest = int(t.max())
        self._newest = newest if self._newest is None else max(self._newest, newest)
        self._stale = np.zeros(0, dtype=np.uint64)  # the last update's are idle now
        batch_h, batch_t = h, t  # sorted; the times kept are found below
        # Known sockets: the stronger app and the later time; an idle one
        # (forgotten, not yet dropped) starts afresh from this batch. This
        # batch's sockets all stay, so a batch's own context never depends on
        # how old its records are.
        for lv in self._levels:
            if not len(lv.hashes) or not len(h):
                continue
            pos = np.minimum(np.searchsorted(lv.hashes, h), len(lv.hashes) - 1)
            hit = lv.hashes[pos] == h
            if not hit.any():
                continue
            at = pos[hit]
            idle = ~self._live(h[hit], lv.seen_ms[at])
            lv.apps[at] = np.where(idle, a[hit], np.maximum(lv.apps[at], a[hit]))
            lv.seen_ms[at] = np.where(idle, t[hit], np.maximum(lv.seen_ms[at], t[hit]))
            if int(batch_t.min()) + self.max_age_ms < newest:
                batch_t = batch_t.copy()
                batch_t[in_sorted(batch_h, h[hit])] = lv.seen_ms[at]
            new = ~hit
            h, a, t = h[new], a[new], t[new]
        if len(h):
            recent = self._recent
            recent.insert(np.searchsorted(recent.hashes, h), _Level(h, a, t))
        # This batch's sockets all stay until the next update, however old.
        self._stale = batch_h[batch_t + np.uint64(self.max_age_ms) < np.uint64(newest)]
        slots = len(self._filter)
        if self._physical() * 8 > slots and slots < self._max_slots:
            while self._physical() * 8 > slots and slots < self._max_slots:
                slots *= 4
            self._set_filter(min(slots, self._max_slots))
        else:
            self._filter[h >> self._shift] = True
        if len(self._recent.hashes) > max(len(self._main.hashes) // 8, RECENT_MIN):
            self._merge()
        if self._physical() > self.max_size:
            self._merge()
            main = self._main
            if len(main.hashes) > self.max_size:
                # Down to 7/8 of the bound, the least recently seen first:
                # finding them is a pass over the whole memory, paid once per
                # several batches rather than on every batch once the memory
                # is full (a sort of it per batch was two thirds of the flow
                # step then).
                drop = len(main.hashes) - (self.max_size - self.max_size // 8)
                keep = np.ones(len(main.hashes), dtype=bool)
                keep[np.argpartition(main.seen_ms, drop - 1)[:drop]] = False
                self._levels[0] = main.take(keep)
                self._forgot(drop)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """App code of each socket (+1), 0 where unknown."""
        out = np.zeros(len(hashes), dtype=np.int16)
        if not self._physical() or not len(hashes):
            return out
        hashes = hashes.astype(np.uint64, copy=False)
        rows = np.flatnonzero(self._filter[hashes >> self._shift])
        keys = hashes[rows]
        for lv in self._levels:  # a hash is in one level at most
            if not len(lv.hashes) or not len(keys):
                continue
            pos = np.minimum(np.searchsorted(lv.hashes, keys), len(lv.hashes) - 1)
            hit = lv.hashes[pos] == keys
            at = pos[hit]
            app = lv.apps[at].astype(np.int16) + 1
            out[rows[hit]] = np.where(self._live(keys[hit], lv.seen_ms[at]), app, 0)
            miss = ~hit
            rows, keys = rows[miss], keys[miss]
        return out


#: The recent level of an :class:`IceMemory` is merged into the main one once
#: it holds more than an eighth of the main level's entries, and this many.
RECENT_MIN = 4096


class _Level:
    """One sorted level of an :class:`IceMemory`: hashes ascending, their app
    codes and last-seen times."""

    __slots__ = ("apps", "hashes", "seen_ms")

    def __init__(
        self,
        hashes: np.ndarray | None = None,
        apps: np.ndarray | None = None,
        seen_ms: np.ndarray | None = None,
    ) -> None:
        self.hashes = hashes if hashes is not None else np.zeros(0, dtype=np.uint64)
        self.apps = apps if apps is not None else np.zeros(0, dtype=np.uint8)
        self.seen_ms = seen_ms if seen_ms is not None else np.zeros(0, dtype=np.uint64)

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.apps.nbytes + self.seen_ms.nbytes)

    def insert(self, at: np.ndarray, other: _Level) -> None:
        """Insert ``other``'s entries (none of them here) before positions ``at``."""
        if not len(self.hashes):
            self.hashes, self.apps, self.seen_ms = other.hashes, other.apps, other.seen_ms
            return
        self.hashes = np.insert(self.hashes, at, other.hashes)
        self.apps = np.insert(self.apps, at, other.apps)
        self.seen_ms = np.insert(self.seen_ms, at, other.seen_ms)

    def take(self, keep: np.ndarray) -> _Level:
        return _Level(self.hashes[keep], self.apps[keep], self.seen_ms[keep])


def pair_directions(batch: FlowBatch, hashes: FlowHashes | None = None) -> np.ndarray:
    """Index of the record carrying the reverse direction of each record, -1 if none.

    When a 5-tuple appears several times (flow split by timeouts), the first
    record of the reverse tuple (lowest index) is taken. A tuple that is its
    own reverse (same endpoint both sides) is not paired.

    One sort of the direction-free key puts both directions of a
    conversation next to each other; a record's partner is the lowest-index
    record of its run with the other direction. (A search of each reverse
    hash in the sorted forward hashes costs a cache miss per step.)
    """
    n = len(batch)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    h = hashes if hashes is not None else flow_hashes(batch)
    fwd, rev = h.fwd, h.rev
    conv = np.minimum(fwd, rev)
    order = np.argsort(conv)
    key = conv[order]
    # Direction: 0 where the record's own hash is the key, 1 where its reverse is.
    upper = fwd[order] != key
    own = fwd[order] == rev[order]  # its own reverse: no direction, never paired
    run_start = np.r_[True, key[1:] != key[:-1]]
    run = np.cumsum(run_start) - 1
    starts = np.flatnonzero(run_start)
    # The lowest record index of each direction in each run (n where none).
    lowest = [
        np.minimum.reduceat(np.where(side & ~own, order, n), starts)[run]
        for side in (~upper, upper)
    ]
    # A record's partner: the lowest of the other direction in its run.
    other = np.where(upper, lowest[0], lowest[1])
    partner = np.full(n, -1, dtype=np.int64)
    found = (other < n) & ~own
    partner[order[found]] = other[found]
    return partner
