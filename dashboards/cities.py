"""City coordinates for the usage map, from the operator's prefix table.

The prefix table the worker enriches flows with (CSV with a header row:
``prefix,city,region,country,lat,lon``, one row per prefix, so a city appears
once per prefix) is reduced to one row per city and inserted into the
``cities`` table (migration ``005_cities``). A city must have the same
coordinates on all its rows; a row without coordinates is skipped, and a
table with a bad coordinate or conflicting ones is refused as a whole,
naming the line, so the map never shows a city at a wrong place.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voipflow.dashboards import CityTableError

REQUIRED = ("city", "region", "country", "lat", "lon")


@dataclass(frozen=True, slots=True)
class City:
    city: str
    region: str
    country: str
    lat: float
    lon: float


def _coord(text: str, lo: float, hi: float, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CityTableError(f"{where}: {what} {text!r} is not a number") from None
    if not lo <= value <= hi:
        raise CityTableError(f"{where}: {what} {value} outside {lo}..{hi}")
    return value


def read_cities(path: Path | str) -> list[City]:
    """One :class:`City` per city name in the prefix table at ``path``, sorted by name."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise CityTableError(f"{path}: no column {', '.join(missing)} in the header")
            found: dict[str, City] = {}
            for n, rec in enumerate(reader, start=2):
                where = f"{path}:{n}"
                name = (rec["city"] or "").strip()
                if not name or not (rec["lat"] or "").strip() or not (rec["lon"] or "").strip():
                    continue
                city = City(
                    name,
                    (rec["region"] or "").strip(),
                    (rec["country"] or "").strip(),
                    _coord(rec["lat"], -90.0, 90.0, "lat", where),
                    _coord(rec["lon"], -180.0, 180.0, "lon", where),
                )
                seen = found.setdefault(name, city)
                if (seen.lat, seen.lon) != (city.lat, city.lon):
                    raise CityTableError(
                        f"{where}: {name} at {city.lat},{city.lon} but at "
                        f"{seen.lat},{seen.lon} on an earlier line"
                    )
    except OSError as exc:
        raise CityTableError(f"cannot read prefix table {path}: {exc}") from exc
    if not found:
        raise CityTableError(f"{path}: no city with coordinates")
    return [found[k] for k in sorted(found)]


def city_columns(cities: list[City], updated_ms: int | None = None) -> dict[str, np.ndarray]:
    """Columns for an insert into ``cities``; ``updated`` makes the newest load win."""
    stamp = int(time.time() * 1000) if updated_ms is None else updated_ms
    return {
        "city": np.array([c.city for c in cities], dtype=object),
        "region": np.array([c.region for c in cities], dtype=object),
        "country": np.array([c.country for c in cities], dtype=object),
        "lat": np.array([c.lat for c in cities], dtype=np.float64),
        "lon": np.array([c.lon for c in cities], dtype=np.float64),
        "updated": np.full(len(cities), stamp, dtype="datetime64[ms]"),
    }
