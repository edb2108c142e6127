"""Aggregation per city x app x tumbling window: pure functions, mergeable partials.

Two steps, so that one worker owns a city while batches arrive anywhere:

1. :func:`batch_partials` turns one enriched, classified flow batch into
   per-city *partials*: for each (window, app) the flows, packets and bytes
   (sampling corrected), the distinct subscriber hashes and the estimated
   call-seconds, plus an ``ALL`` row per window with every home record of the
   city (VoIP or not) for the VoIP share (its sums only: no subscriber hashes,
   which nothing reads and which made a busy city's state, re-encoded and
   written to the changelog on every partial, grow with all its subscribers).
   Vectorised: one ``numpy.unique`` over a combined (city, window, app) key
   and ``bincount`` sums.
2. :func:`apply_partial` merges a partial into the city's state (a JSON-able
   dict kept in a Faust table) and :func:`close_windows` turns the windows the
   city's event-time watermark has passed (plus the lateness allowance) into
   ``voip-usage.v1`` messages.

Idempotence: a partial carries the source position (topic, partition, offset)
of the flow batch it came from; the state keeps, per source partition, the
last offset applied, and a partial at or below it is a re-delivery and is
skipped. Windows close on event time only, so totals do not depend on how fast
or in which worker records were processed: on the event time of the city's
slowest source partition heard recently (:func:`closing_watermark`), so that a
partition stalled by a worker failover does not find its windows closed.

Call-seconds: media records count their duration. A record is media by its
statistics, whatever its ports: VoIP over UDP with voice- or video-sized
packets at a media packet rate, lasting (the classifier's ``VOICE_SIZE`` /
``VIDEO_SIZE``, ``MEDIA_RATE`` and ``LONG`` evidence, sampling corrected).
Relayed media on STUN/TURN ports (WhatsApp, Teams, Meet) is media; the STUN
connectivity checks on those ports (a few small packets) are not, and
neither is anything on a signalling port (SIP, H.323, ...), which carries
no media. The two directions of one conversation (paired in the batch, or one
RFC 5103 biflow record) count once, with the longer duration.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voipflow.schemas.flowbatch import FlowBatch, addr16_halves
from voipflow.schemas.usage import SCHEMA_NAME as USAGE_SCHEMA
from voipflow.streams.classify import Classification, Evidence
from voipflow.streams.enrich import Enrichment
from voipflow.streams.flowpairs import mix64
from voipflow.streams.grouping import group_codes

#: Pseudo-app of the rows that sum every home record of a city (VoIP or not).
ALL = "_all"
STATE_VERSION = 1


def subscriber_hash(addrs: np.ndarray) -> np.ndarray:
    """64-bit hash of 16-byte subscriber addresses (stable across processes)."""
    hi, lo = addr16_halves(np.asarray(addrs, dtype="S16"))
    out: np.ndarray = mix64(hi ^ mix64(lo ^ np.uint64(0x9E3779B97F4A7C15)))
    return out


@dataclass(slots=True)
class AppWindow:
    """Sums of one app (or ALL) in one window of one city; ``subscribers`` sorted
    and distinct (as :func:`batch_partials` makes them)."""

    flows: int = 0
    packets: int = 0
    bytes: int = 0
    call_seconds: float = 0.0
    subscribers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    def to_json(self) -> list[Any]:
        return [
            self.flows,
            self.packets,
            self.bytes,
            round(self.call_seconds, 3),
            pack_hashes(self.subscribers, distinct=True),
        ]


def pack_hashes(hashes: np.ndarray, distinct: bool = False) -> str:
    """Sorted distinct uint64 hashes as base64 of little-endian bytes (compact in JSON).

    ``distinct``: the hashes are sorted and distinct already (skips a sort).
    """
    arr = np.asarray(hashes, dtype=np.uint64)
    if not distinct:
        arr = np.unique(arr)
    return _base64_hashes(arr).decode("ascii")


def _base64_hashes(distinct: np.ndarray) -> bytes:
    """:func:`pack_hashes` of hashes already sorted and distinct, as ASCII bytes."""
    return base64.b64encode(distinct.astype("<u8", copy=False).tobytes())


class HashUnion:
    """Subscriber hashes of a state in memory: the union of sorted distinct arrays,
    taken once when it is read (:meth:`array`), not once per partial merged."""

    __slots__ = ("_packed", "parts")

    def __init__(self, *parts: np.ndarray) -> None:
        self.parts = list(parts)
        self._packed: bytes | None = None

    def add(self, hashes: np.ndarray) -> None:
        self.parts.append(hashes)
        self._packed = None

    def packed(self) -> bytes:
        """:func:`pack_hashes` of the union, as ASCII bytes; kept until the next
        :meth:`add`, so a window that got no hashes since the state was last
        written is not packed again."""
        if self._packed is None:
            self._packed = _base64_hashes(self.array())
        return self._packed

    def array(self) -> np.ndarray:
        """The sorted distinct hashes (every part is sorted and distinct).

        The first part is the state's, often thousands of hashes; the others
        come from partials, a few each. They are inserted into the first by
        binary search, which costs a copy of it, where ``numpy.unique`` over
        everything would hash or sort it all again.
        """
        if len(self.parts) == 1:
            return self.parts[0]
        if not self.parts:
            self.parts = [np.zeros(0, np.uint64)]
            return self.parts[0]
        base, rest = self.parts[0], self.parts[1:]
        add = rest[0] if len(rest) == 1 else np.unique(np.concatenate(rest))
        at = np.searchsorted(base, add)
        known = at < len(base)
        known[known] = base[at[known]] == add[known]
        self.parts = [np.insert(base, at[~known], add[~known])]
        return self.parts[0]


def unpack_hashes(text: str | HashUnion) -> np.ndarray:
    """Inverse of :func:`pack_hashes` (or the hashes a state in memory holds)."""
    if isinstance(text, HashUnion):
        return text.array()
    return np.frombuffer(base64.b64decode(text), dtype="<u8").astype(np.uint64)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, HashUnion):
        return obj.packed().decode("ascii")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


#: Stands for a hash set while the rest of a state is encoded as JSON.
_HASHES_SLOT = "\x00hashes\x00"
_HASHES_SLOT_JSON = json.dumps(_HASHES_SLOT).encode()


def encode_state(state: dict[str, Any]) -> bytes:
    """A city or exporter state as the table's JSON bytes.

    In memory, a city state's subscriber hashes are a :class:`HashUnion` once
    merged (:func:`apply_partial`): a burst of partials for one city unpacks,
    merges and packs them once, not once per partial. Here they become base64
    again: each set is packed once per change (:meth:`HashUnion.packed`) and
    spliced into the JSON text, as base64 needs no escaping. A busy city's
    sets are hundreds of KB; encoding them as JSON strings scanned and copied
    them on every write of the state, twice a second.
    """
    packed: list[bytes] = []

    def slot(obj: Any) -> Any:
        if isinstance(obj, HashUnion):
            packed.append(obj.packed())
            return _HASHES_SLOT
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    text = json.dumps(state, separators=(",", ":"), default=slot).encode()
    if not packed:
        return text
    pieces = text.split(_HASHES_SLOT_JSON)
    if len(pieces) != len(packed) + 1:  # a name holds the slot's text too
        return json.dumps(state, separators=(",", ":"), default=_json_default).encode()
    out = [pieces[0]]
    for hashes, rest in zip(packed, pieces[1:], strict=True):
        out += [b'"', hashes, b'"', rest]
    return b"".join(out)


@dataclass(slots=True)
class CityPartial:
    """What one flow batch adds to one city."""

    city: str
    region: str
    country: str
    max_end_ms: int
    windows: dict[int, dict[str, AppWindow]]

    def to_json(self, source: str, offset: int) -> dict[str, Any]:
        return {
            "src": source,
            "off": int(offset),
            "city": self.city,
            "region": self.region,
            "country": self.country,
            "max_ms": int(self.max_end_ms),
            "win": {
                str(w): {app: aw.to_json() for app, aw in apps.items()}
                for w, apps in self.windows.items()
            },
        }


def media_call_seconds(
    batch: FlowBatch, result: Classification, apps_media: np.ndarray | None = None
) -> np.ndarray:
    """Per record: seconds of call it stands for (0 for non-media or the shorter twin)."""
    n = len(batch)
    dur = (
        np.maximum(
            batch["flow_end_ms"].astype(np.int64) - batch["flow_start_ms"].astype(np.int64), 0
        )
        / 1000.0
    )
    ev = result.evidence
    # Only flows whose role carries the call's media (media, relay: the role
    # verdict, streams/roles.py) count, and only as streams: a few-packet
    # tail of a call cut off by the exporter adds no call of its own.
    stream = np.uint32(Evidence.UDP | Evidence.MEDIA_RATE | Evidence.LONG)
    media = result.is_voip & result.carries_media() & ((ev & stream) == stream)
    if apps_media is not None:
        media &= apps_media
    partner = result.partner
    has = partner >= 0
    safe = np.where(has, partner, 0)
    twin_media = has & media[safe]
    longer = np.where(twin_media, np.maximum(dur, dur[safe]), dur)
    # Of a media pair, only the record with the lower index counts the pair.
    counts = media & (~twin_media | (np.arange(n) < safe))
    return np.where(counts, longer, 0.0)


def unique_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The distinct (a, b) pairs as rows of an (n, 2) uint64 array, sorted by a
    then b: what ``np.unique(np.stack([a, b]).T, axis=0)`` returns, at a
    fraction of its cost (that compares whole rows as opaque items; a
    two-key lexsort and a look at neighbours is most of the worker's
    aggregation time otherwise)."""
    order = np.lexsort((b, a))
    sa, sb = a[order], b[order]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
    return np.stack([sa[keep], sb[keep]], axis=1)


def batch_partials(
    batch: FlowBatch,
    enr: Enrichment,
    result: Classification,
    city_names: list[tuple[str, str, str]],
    window_s: int,
) -> dict[str, CityPartial]:
    """Per-city partial aggregates of one batch (records with no home side are left out)."""
    home = np.flatnonzero(enr.home & (enr.city_id >= 0))
    if not len(home):
        return {}
    w_ms = np.int64(window_s * 1000)
    end = batch["flow_end_ms"].astype(np.int64)[home]
    window = (end // w_ms) * w_ms
    city = enr.city_id[home].astype(np.int64)
    rate = np.maximum(batch["sampling_rate"].astype(np.int64), 1)[home]
    pk = batch["packets"].astype(np.int64)[home] * rate
    by = batch["bytes"].astype(np.int64)[home] * rate
    # RFC 5103 biflows carry the other direction too: it is the same subscriber's traffic.
    pk += batch["reverse_packets"].astype(np.int64)[home] * rate
    by += batch["reverse_bytes"].astype(np.int64)[home] * rate
    calls = media_call_seconds(batch, result)[home]
    subs = subscriber_hash(enr.subscriber_addr[home])
    voip = result.is_voip[home]
    app_code = result.app_code[home].astype(np.int64)
    n_apps = len(result.apps) + 1
    all_code = len(result.apps)  # one past the last app: the ALL rows

    # Rows: every home record once as ALL, every VoIP record again under its app.
    r_city = np.concatenate([city, city[voip]])
    r_win = np.concatenate([window, window[voip]])
    r_app = np.concatenate([np.full(len(city), all_code), app_code[voip]])
    r_pk = np.concatenate([pk, pk[voip]])
    r_by = np.concatenate([by, by[voip]])
    r_calls = np.concatenate([np.zeros(len(city)), calls[voip]])

    w_min = r_win.min()
    w_idx = (r_win - w_min) // w_ms
    n_w = int(w_idx.max()) + 1
    key = (r_city * n_w + w_idx) * n_apps + r_app
    uniq, inv = group_codes(key)
    flows = np.bincount(inv, minlength=len(uniq))
    pks = np.bincount(inv, weights=r_pk, minlength=len(uniq))
    bys = np.bincount(inv, weights=r_by, minlength=len(uniq))
    cs = np.bincount(inv, weights=r_calls, minlength=len(uniq))
    # Distinct subscribers per VoIP group: unique (group, hash) pairs, then
    # split. The ALL rows carry none: only their bytes are read (the VoIP
    # share), and their hashes were most of a city state's size and of the
    # keyed agent's time (merged and re-encoded on every partial).
    n_home = len(city)
    pair = unique_pairs(inv[n_home:].astype(np.uint64), subs[voip].astype(np.uint64, copy=False))
    bounds = np.searchsorted(pair[:, 0], np.arange(len(uniq) + 1, dtype=np.uint64))

    g_app = uniq % n_apps
    g_cw = uniq // n_apps
    g_city = g_cw // n_w
    g_win = (g_cw % n_w) * w_ms + w_min
    city_end = np.full(int(city.max()) + 1, -1, dtype=np.int64)
    np.maximum.at(city_end, city, end)
    out: dict[str, CityPartial] = {}
    app_names = [*result.apps, ALL]  # all_code names the ALL rows
    # Per group, not per record (cities x windows x apps), over Python ints
    # taken in one conversion per column rather than numpy scalars one by one.
    hashes = pair[:, 1]
    for cid, win, code, n_flows, n_pk, n_by, secs, lo, hi in zip(
        g_city.tolist(),
        g_win.tolist(),
        g_app.tolist(),
        flows.tolist(),
        np.rint(pks).astype(np.int64).tolist(),
        np.rint(bys).astype(np.int64).tolist(),
        cs.tolist(),
        bounds[:-1].tolist(),
        bounds[1:].tolist(),
        strict=True,
    ):
        name, region, country = city_names[cid]
        part = out.get(name)
        if part is None:
            part = out[name] = CityPartial(name, region, country, int(city_end[cid]), {})
        part.windows.setdefault(win, {})[app_names[code]] = AppWindow(
            n_flows,
            n_pk,
            n_by,
            secs,
            hashes[lo:hi],  # no hashes for ALL
        )
    return out


# -- city state (the Faust table value) -------------------------------------


def new_state() -> dict[str, Any]:
    return {
        "v": STATE_VERSION,
        "src": {},  # "topic:partition" -> last offset applied
        "wm": 0,  # event-time watermark: largest flow end seen, ms
        "closed": 0,  # windows starting before this are closed
        "late": 0,  # records that arrived for closed windows
        "geo": ["", ""],
        # "start_ms" -> app -> [flows, packets, bytes, call_s, hashes]; the hashes
        # packed (pack_hashes) in JSON, a HashUnion once merged in memory
        "win": {},
    }


def claim_source(state: dict[str, Any], partial: dict[str, Any]) -> bool:
    """Record the partial's source offset in ``state["src"]``.

    False when that offset (or a later one of the same source partition) was
    applied already: the partial is an at-least-once re-delivery.
    """
    src, off = str(partial["src"]), int(partial["off"])
    last = state["src"].get(src)
    if last is not None and off <= last:
        return False
    state["src"][src] = off
    return True


def note_source(state: dict[str, Any], partial: dict[str, Any], now_ms: int) -> None:
    """Keep, per source partition, its newest event time and when it was last heard.

    ``state["swm"]`` maps ``"topic:partition"`` to ``[event ms, heard ms]``
    (wall clock); :func:`closing_watermark` reads it. A state written before
    this existed has no ``swm`` and starts one here.
    """
    sources = state.setdefault("swm", {})
    src = str(partial["src"])
    event_ms = int(partial["max_ms"])
    prev = sources.get(src)
    sources[src] = [event_ms if prev is None else max(int(prev[0]), event_ms), int(now_ms)]


def closing_watermark(
    state: dict[str, Any],
    now_ms: int,
    source_idle_ms: float,
    stalled: Collection[str] = frozenset(),
) -> int:
    """The event time up to which a key's windows may close: its slowest live source.

    A key's records come from several source partitions, each processed at
    its own pace (by another worker, or after a failover from the last
    committed offset). Closing on the newest event time of any of them, as
    ``state["wm"]`` is, would close windows that a stalled partition still
    has records for, and those records would then be late and left out. So
    windows close on the oldest event time of the sources heard within
    ``source_idle_ms``; a source silent for longer (its exporters stopped, or
    it no longer carries this key) stops holding them, unless it is in
    ``stalled``: records wait in it that no worker is taking
    (:mod:`voipflow.streams.stalls`). With no live source, the newest event
    time of all.
    """
    live = [
        int(event_ms)
        for src, (event_ms, heard_ms) in state.get("swm", {}).items()
        if now_ms - int(heard_ms) < source_idle_ms or src in stalled
    ]
    return min(live) if live else int(state["wm"])


def count_if_late(state: dict[str, Any], start_ms: int, records: int) -> bool:
    """True, and the records counted in ``state["late"]``, if the window is closed."""
    if start_ms < int(state["closed"]):
        state["late"] += int(records)
        return True
    return False


def pop_due_windows(
    state: dict[str, Any],
    window_s: int,
    lateness_s: int,
    watermark_ms: int | None,
    order: Callable[[str], tuple[int, ...]],
) -> Iterator[tuple[str, int, Any]]:
    """Remove and yield ``(key, start_ms, value)`` of each window the watermark passed.

    A window is due once the watermark (``state["wm"]`` unless given) is past
    its end plus the lateness. ``order(key)`` sorts the keys and starts with
    the window's start in ms. Oldest first; ``closed`` moves past each window
    yielded, so records arriving for it later are counted as late.
    """
    wm = int(state["wm"] if watermark_ms is None else watermark_ms)
    w_ms = window_s * 1000
    horizon = wm - lateness_s * 1000 - w_ms  # windows starting at or before it are done
    for key in sorted(state["win"], key=order):
        start = order(key)[0]
        if start > horizon:
            return
        yield key, start, state["win"].pop(key)
        state["closed"] = max(int(state["closed"]), start + w_ms)


def _start_order(key: str) -> tuple[int]:
    return (int(key),)


def _checked_windows(partial: dict[str, Any]) -> list[tuple[int, dict[str, tuple[Any, ...]]]]:
    """The partial's windows, every row checked (and its hashes unpacked) up front.

    A malformed partial raises here, before :func:`apply_partial` changes the
    state, so a state is never left half-merged: the keyed agent keeps states
    in memory between table writes and must be able to go on with one.
    """
    out = []
    for w, apps in partial["win"].items():
        rows: dict[str, tuple[Any, ...]] = {}
        for app, row in apps.items():
            flows, pkts, byts, calls, hashes = row
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (flows, pkts, byts)):
                raise ValueError(f"counters of {app!r} must be integers, got {row!r}")
            if not isinstance(calls, int | float) or not isinstance(hashes, str):
                raise ValueError(f"malformed row of {app!r}: {row!r}")
            try:
                arr = unpack_hashes(hashes) if hashes else None
            except (ValueError, TypeError) as exc:  # bad base64, or not whole uint64s
                raise ValueError(f"bad subscriber hashes of {app!r}: {exc}") from exc
            if arr is not None and not bool(np.all(arr[1:] > arr[:-1])):
                raise ValueError(f"subscriber hashes of {app!r} are not sorted and distinct")
            rows[app] = (flows, pkts, byts, calls, hashes, arr)
        out.append((int(w), rows))
    return out


def apply_partial(state: dict[str, Any], partial: dict[str, Any]) -> str:
    """Merge one partial (``CityPartial.to_json``) into a city state, in place.

    Returns ``"applied"``, or ``"duplicate"`` when the partial's source offset
    was applied already (an at-least-once re-delivery).
    """
    windows = _checked_windows(partial)  # raises before anything changes
    max_ms = int(partial["max_ms"])
    if not claim_source(state, partial):
        return "duplicate"
    state["geo"] = [partial.get("region", ""), partial.get("country", "")]
    state["wm"] = max(int(state["wm"]), max_ms)
    for w, apps in windows:
        if count_if_late(state, w, apps.get(ALL, (0,))[0]):
            continue
        cur = state["win"].setdefault(str(w), {})
        for app, (flows, pkts, byts, calls, hashes, arr) in apps.items():
            have = cur.get(app)
            if have is None:
                cur[app] = [flows, pkts, byts, calls, hashes if arr is None else HashUnion(arr)]
            else:
                have[0] += flows
                have[1] += pkts
                have[2] += byts
                have[3] = round(have[3] + calls, 3)
                if arr is not None:  # ALL rows and hash-less partials have none to merge
                    if isinstance(have[4], HashUnion):
                        have[4].add(arr)
                    elif have[4]:
                        have[4] = HashUnion(unpack_hashes(have[4]), arr)
                    else:
                        have[4] = HashUnion(arr)
    return "applied"


def close_windows(
    state: dict[str, Any],
    city: str,
    window_s: int,
    lateness_s: int,
    watermark_ms: int | None = None,
    produced_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Close the windows the watermark passed (end + lateness) and return their usage messages.

    The windows are removed from ``state`` and ``closed`` moves past them, so
    records arriving for them later are counted as late.
    """
    produced = int(time.time() * 1000) if produced_ms is None else produced_ms
    region, country = state.get("geo", ["", ""])
    out = []
    for _, start, apps in pop_due_windows(state, window_s, lateness_s, watermark_ms, _start_order):
        total = apps.get(ALL, [0, 0, 0, 0.0, []])[2]
        for app, (flows, pkts, byts, calls, packed) in sorted(apps.items()):
            if app == ALL:
                continue
            hashes = unpack_hashes(packed).tolist()
            out.append(
                {
                    "schema": USAGE_SCHEMA,
                    "window_start_ms": start,
                    "window_s": window_s,
                    "city": city,
                    "region": region,
                    "country": country,
                    "app": app,
                    "flows": int(flows),
                    "packets": int(pkts),
                    "bytes": int(byts),
                    "subscribers": len(hashes),
                    "subscriber_hashes": hashes,
                    "call_seconds": float(calls),
                    "voip_share": float(min(1.0, byts / total)) if total else 0.0,
                    "produced_ms": produced,
                }
            )
    return out
