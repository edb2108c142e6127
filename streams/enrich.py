"""Enrichment: which side of a flow is the subscriber, and in which city.

Pure functions over a flow batch, vectorised: the subscriber side comes from
the configured home networks (a :class:`~streams.prefixes.PrefixTable`), the
city from, in order of precedence,

1. the operator prefix table (CSV ``prefix,city,region,country,lat,lon``,
   longest-prefix match, IPv4 and IPv6),
2. a MaxMind/DB-IP City database (mmdb), when configured — the reader answers
   one address at a time, so the batch's subscriber addresses that step 1 left
   unplaced are first reduced to their unique values (``numpy.unique``) and
   answers are kept in a bounded cache; the Python work is per distinct new
   address, not per record,
3. the exporter -> city table (CSV ``exporter,city,...``; the exporter column
   holds an address or a prefix).

Flows with neither side at home get city id -1 and ``home = False``: counted
by the caller, never guessed. Tables are reloaded when their file's
modification time changes (checked at most every ``table_reload_s``); a table
that fails to reload keeps the previous version and counts the failure.

City ids come from a process-wide, append-only :class:`CityRegistry`, so an id
means the same city in every batch and across reloads.

Errors::

    EnrichError
     +-- TableError      a table file that cannot be read (names file and line)
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from voipflow.schemas.flowbatch import FlowBatch, addr_to_text
from voipflow.streams.config import WorkerConfig
from voipflow.streams.metrics import WorkerMetrics
from voipflow.streams.prefixes import PrefixError, PrefixTable

log = logging.getLogger(__name__)

#: ``city_source`` values.
SOURCE_NONE, SOURCE_PREFIX, SOURCE_MMDB, SOURCE_EXPORTER = 0, 1, 2, 3
SOURCE_NAMES = {SOURCE_PREFIX: "prefix", SOURCE_MMDB: "mmdb", SOURCE_EXPORTER: "exporter"}

#: City name used for subscribers at home whom no table places.
UNKNOWN_CITY = "unknown"


class EnrichError(Exception):
    """Base class of enrichment errors."""


class TableError(EnrichError):
    """A lookup table file that cannot be read."""


@dataclass(frozen=True, slots=True)
class City:
    name: str
    region: str = ""
    country: str = ""
    lat: float = math.nan
    lon: float = math.nan


class CityRegistry:
    """Append-only city id allocation: the same (name, region, country) -> same id."""

    def __init__(self) -> None:
        self.cities: list[City] = []
        self._ids: dict[tuple[str, str, str], int] = {}

    def __len__(self) -> int:
        return len(self.cities)

    def add(self, city: City) -> int:
        key = (city.name, city.region, city.country)
        cid = self._ids.get(key)
        if cid is None:
            cid = self._ids[key] = len(self.cities)
            self.cities.append(city)
        return cid

    def names(self) -> np.ndarray:
        """City names as an object array indexed by id (for vectorised take)."""
        return np.array([c.name for c in self.cities], dtype=object)


def _float(text: str) -> float:
    return float(text) if text.strip() else math.nan


def load_city_csv(path: Path, registry: CityRegistry, key_column: str = "prefix") -> PrefixTable:
    """Read a ``<key>,city,region,country,lat,lon`` CSV into a prefix table of city ids.

    ``key_column`` is ``prefix`` for the operator table and ``exporter`` for
    the exporter table (an address there is a /32 or /128 prefix). Lines
    starting with ``#`` are comments.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TableError(f"{path}: cannot read: {exc}") from exc
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    fields = reader.fieldnames or []
    if key_column not in fields or "city" not in fields:
        raise TableError(f"{path}: header must start with {key_column},city,region,country,...")
    items: list[tuple[str, int]] = []
    for lineno, row in enumerate(reader, start=2):
        try:
            city = City(
                (row.get("city") or "").strip(),
                (row.get("region") or "").strip(),
                (row.get("country") or "").strip(),
                _float(row.get("lat") or ""),
                _float(row.get("lon") or ""),
            )
        except ValueError as exc:
            raise TableError(f"{path}: row {lineno}: bad coordinate: {exc}") from exc
        if not city.name:
            raise TableError(f"{path}: row {lineno}: empty city")
        items.append(((row.get(key_column) or "").strip(), registry.add(city)))
    try:
        return PrefixTable.build(items)
    except PrefixError as exc:
        raise TableError(f"{path}: {exc}") from exc


class MmdbCities:
    """City look-ups in an mmdb City database, once per distinct address.

    maxminddb answers one address per call; callers hand in a batch, which is
    deduplicated first, and answers are cached (bounded) across batches.
    """

    def __init__(self, path: Path, registry: CityRegistry, cache_size: int = 200_000) -> None:
        import maxminddb

        try:
            self._reader: Any = maxminddb.open_database(str(path))
        except (OSError, ValueError) as exc:
            raise TableError(f"{path}: not a readable mmdb database: {exc}") from exc
        self._registry = registry
        self._cache: dict[bytes, int] = {}
        self._cache_size = cache_size

    def close(self) -> None:
        self._reader.close()

    def _one(self, addr: bytes) -> int:
        try:
            rec = self._reader.get(addr_to_text(addr))
        except ValueError:
            return -1
        if not isinstance(rec, dict) or "city" not in rec:
            return -1
        name = rec["city"].get("names", {}).get("en", "")
        if not name:
            return -1
        subs = rec.get("subdivisions") or [{}]
        loc = rec.get("location", {})
        city = City(
            name,
            subs[0].get("names", {}).get("en", ""),
            rec.get("country", {}).get("iso_code", ""),
            float(loc.get("latitude", math.nan)),
            float(loc.get("longitude", math.nan)),
        )
        return self._registry.add(city)

    def lookup(self, addrs: np.ndarray) -> np.ndarray:
        """City id per address (-1 where the database has no city)."""
        if not len(addrs):
            return np.zeros(0, dtype=np.int32)
        uniq, inverse = np.unique(addrs, return_inverse=True)
        ids = np.empty(len(uniq), dtype=np.int32)
        for i, a in enumerate(uniq.tolist()):
            a = a.ljust(16, b"\x00")  # numpy strips trailing NULs from S16 items
            cid = self._cache.get(a)
            if cid is None:
                cid = self._one(a)
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()
                self._cache[a] = cid
            ids[i] = cid
        return ids[inverse.reshape(-1)]


T = TypeVar("T")


class Reloading(Generic[T]):
    """A value loaded from a file, reloaded when the file's mtime changes."""

    def __init__(
        self,
        name: str,
        path: Path,
        loader: Callable[[Path], T],
        check_every_s: float,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.name = name
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.path = path
        self._loader = loader
        self._every = check_every_s
        self._mtime = os.stat(path).st_mtime_ns
        self.value: T = loader(path)  # errors at start propagate: bad config
        self._checked = time.monotonic()

    def current(self, now: float | None = None) -> T:
        now = time.monotonic() if now is None else now
        if now - self._checked >= self._every:
            self._checked = now
            self.check()
        return self.value

    def check(self) -> bool:
        """Reload now if the file changed; True when a new version was loaded."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError as exc:
            self.metrics.table_reloads.labels(self.name, "error").inc()
            log.warning(
                "table %s unreadable, keeping the loaded one",
                self.name,
                extra={"path": str(self.path), "error": str(exc)},
            )
            return False
        if mtime == self._mtime:
            return False
        try:
            value = self._loader(self.path)
        except EnrichError as exc:
            self.metrics.table_reloads.labels(self.name, "error").inc()
            log.warning(
                "table %s failed to reload, keeping the loaded one",
                self.name,
                extra={"path": str(self.path), "error": str(exc)},
            )
            self._mtime = mtime  # do not retry the same broken version every check
            return False
        old = self.value
        self.value, self._mtime = value, mtime
        close = getattr(old, "close", None)
        if callable(close):
            close()
        self.metrics.table_reloads.labels(self.name, "ok").inc()
        log.info("table %s reloaded", self.name, extra={"path": str(self.path)})
        return True


@dataclass(slots=True)
class Enrichment:
    """Per-record enrichment columns of one batch (numpy arrays of equal length)."""

    home: np.ndarray  # bool: one side is in the home networks
    sub_is_src: np.ndarray  # bool: the subscriber is the source (upstream record)
    subscriber_addr: np.ndarray  # S16
    peer_addr: np.ndarray  # S16
    subscriber_port: np.ndarray  # u2
    peer_port: np.ndarray  # u2
    direction: np.ndarray  # u1: 0 upstream, 1 downstream
    city_id: np.ndarray  # i4: CityRegistry id, -1 unhomed or unlocated
    city_source: np.ndarray  # u1: SOURCE_*
    peer_asn: np.ndarray  # u4


def orient(batch: FlowBatch, home: PrefixTable) -> tuple[np.ndarray, np.ndarray]:
    """(home, sub_is_src): a flow is the subscriber's if either side is at home.

    When both sides are at home (on-net traffic) the source is taken as the
    subscriber, so each record is attributed exactly once.
    """
    src_home = home.contains(batch["src_addr"])
    dst_home = home.contains(batch["dst_addr"])
    return src_home | dst_home, src_home | ~dst_home


class Enricher:
    """Subscriber side and city for flow batches; tables reload without restart."""

    def __init__(
        self,
        config: WorkerConfig,
        registry: CityRegistry | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.registry = registry or CityRegistry()
        self.home = PrefixTable.build((p, 1) for p in config.home_prefixes)
        self.unknown_city = self.registry.add(City(UNKNOWN_CITY))
        self._prefix: Reloading[PrefixTable] | None = None
        self._mmdb: Reloading[MmdbCities] | None = None
        self._exporter: Reloading[PrefixTable] | None = None

    def start(self) -> None:
        """Load the configured tables; a bad table fails here, naming the setting."""
        cfg = self.config
        try:
            if cfg.prefix_table is not None:
                self._prefix = Reloading(
                    "prefix_table",
                    cfg.prefix_table,
                    lambda p: load_city_csv(p, self.registry),
                    cfg.table_reload_s,
                    self.metrics,
                )
            if cfg.mmdb_path is not None:
                self._mmdb = Reloading(
                    "mmdb",
                    cfg.mmdb_path,
                    lambda p: MmdbCities(p, self.registry),
                    cfg.table_reload_s,
                    self.metrics,
                )
            if cfg.exporter_city_table is not None:
                self._exporter = Reloading(
                    "exporter_city_table",
                    cfg.exporter_city_table,
                    lambda p: load_city_csv(p, self.registry, "exporter"),
                    cfg.table_reload_s,
                    self.metrics,
                )
        except TableError as exc:
            raise TableError(f"VOIPFLOW_WORKER_*: {exc}") from exc

    def stop(self) -> None:
        if self._mmdb is not None:
            self._mmdb.value.close()

    def check_reload(self) -> None:
        """Check every table's file now (tests and operators' reload signal)."""
        for t in (self._prefix, self._mmdb, self._exporter):
            if t is not None:
                t.check()

    def enrich(self, batch: FlowBatch) -> Enrichment:
        n = len(batch)
        home, sub_is_src = orient(batch, self.home)
        src, dst = batch["src_addr"], batch["dst_addr"]
        sub_addr = np.where(sub_is_src, src, dst)
        peer_addr = np.where(sub_is_src, dst, src)
        sub_port = np.where(sub_is_src, batch["src_port"], batch["dst_port"]).astype(np.uint16)
        peer_port = np.where(sub_is_src, batch["dst_port"], batch["src_port"]).astype(np.uint16)
        peer_asn = np.where(sub_is_src, batch["dst_as"], batch["src_as"]).astype(np.uint32)
        city = np.full(n, -1, dtype=np.int32)
        source = np.zeros(n, dtype=np.uint8)
        if self._prefix is not None:
            found = self._prefix.current().lookup(sub_addr)
            hit = home & (found >= 0)
            city[hit] = found[hit]
            source[hit] = SOURCE_PREFIX
        if self._mmdb is not None:
            todo = np.flatnonzero(home & (city < 0))
            if len(todo):
                found = self._mmdb.current().lookup(sub_addr[todo])
                ok = found >= 0
                city[todo[ok]] = found[ok]
                source[todo[ok]] = SOURCE_MMDB
        if self._exporter is not None:
            todo = np.flatnonzero(home & (city < 0))
            if len(todo):
                found = self._exporter.current().lookup(batch["exporter_addr"][todo])
                ok = found >= 0
                city[todo[ok]] = found[ok]
                source[todo[ok]] = SOURCE_EXPORTER
        unlocated = home & (city < 0)
        city[unlocated] = self.unknown_city
        self._count(home, unlocated, source)
        return Enrichment(
            home=home,
            sub_is_src=sub_is_src,
            subscriber_addr=sub_addr,
            peer_addr=peer_addr,
            subscriber_port=sub_port,
            peer_port=peer_port,
            direction=(~sub_is_src).astype(np.uint8),
            city_id=np.where(home, city, -1).astype(np.int32),
            city_source=source,
            peer_asn=peer_asn,
        )

    def _count(self, home: np.ndarray, unlocated: np.ndarray, source: np.ndarray) -> None:
        m = self.metrics
        m.unhomed.inc(int(len(home) - np.count_nonzero(home)))
        m.unlocated.inc(int(np.count_nonzero(unlocated)))
        counts = np.bincount(source, minlength=4)
        for code, name in SOURCE_NAMES.items():
            if counts[code]:
                m.city_source.labels(name).inc(int(counts[code]))
