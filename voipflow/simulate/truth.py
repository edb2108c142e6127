"""Ground truth of a simulator run: what was sent, per city x app.

The demo and end-to-end tests compare the pipeline's results with it. Two
views are kept because sampling separates them:

* ``flows``, ``packets``, ``bytes``, ``subscribers``: the flow records that
  were exported, counters as exported (sampled, *not* scaled), subscribers
  seen in them. A collector must decode exactly these.
* ``flows_total``, ``packets_total``, ``bytes_total``, ``subscribers_total``:
  the traffic the subscribers made before sampling; sampling-corrected
  estimates (``packets * sampling_rate``) should come close to these.
* ``calls`` and ``call_seconds`` (VoIP apps): calls with media exported during
  the run and the seconds of them covered by the exported media records.

``usage`` has one row per city x app (rows with nothing in them are left
out), ``cities`` one per city with all apps together (its ``subscribers`` are
distinct across apps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "voipflow-simulator-truth.v1"

_COUNTERS = ("flows", "packets", "bytes", "flows_total", "packets_total", "bytes_total")


class GroundTruth:
    """Accumulates per (city, app) counters with bincount, no per-record work."""

    def __init__(
        self,
        cities: list[dict[str, Any]],
        apps: list[tuple[str, bool]],
        sub_city: np.ndarray,
    ) -> None:
        self.cities = cities
        self.apps = apps
        self.n_cells = len(cities) * len(apps)
        self.sub_city = sub_city
        self.counters = {k: np.zeros(self.n_cells, dtype=np.int64) for k in _COUNTERS}
        self.calls = np.zeros(self.n_cells, dtype=np.int64)
        self.call_ms = np.zeros(self.n_cells, dtype=np.int64)
        self._seen = np.zeros((len(apps), len(sub_city)), dtype=bool)
        self._seen_total = np.zeros((len(apps), len(sub_city)), dtype=bool)

    def _cell(self, sub: np.ndarray, app: np.ndarray) -> np.ndarray:
        return self.sub_city[sub].astype(np.int64) * len(self.apps) + app

    def add_records(
        self,
        sub: np.ndarray,
        app: np.ndarray,
        packets_total: np.ndarray,
        bytes_total: np.ndarray,
        sent: np.ndarray,
        packets_sent: np.ndarray,
        bytes_sent: np.ndarray,
    ) -> None:
        """Records made (all of them) and sent (``sent`` mask, sampled counters)."""
        cell = self._cell(sub, app)
        n = self.n_cells
        c = self.counters
        c["flows_total"] += np.bincount(cell, minlength=n)
        c["packets_total"] += np.bincount(cell, weights=packets_total, minlength=n).astype(np.int64)
        c["bytes_total"] += np.bincount(cell, weights=bytes_total, minlength=n).astype(np.int64)
        c["flows"] += np.bincount(cell[sent], minlength=n)
        c["packets"] += np.bincount(cell[sent], weights=packets_sent, minlength=n).astype(np.int64)
        c["bytes"] += np.bincount(cell[sent], weights=bytes_sent, minlength=n).astype(np.int64)
        self._seen_total[app, sub] = True
        self._seen[app[sent], sub[sent]] = True

    def add_call_time(
        self, sub: np.ndarray, app: np.ndarray, new_call: np.ndarray, covered_ms: np.ndarray
    ) -> None:
        """Upstream media slices: calls seen for the first time, seconds they cover."""
        cell = self._cell(sub, app)
        self.calls += np.bincount(cell[new_call], minlength=self.n_cells)
        self.call_ms += np.bincount(cell, weights=covered_ms, minlength=self.n_cells).astype(
            np.int64
        )

    def usage(self) -> list[dict[str, Any]]:
        n_apps = len(self.apps)
        subs_city = self.sub_city
        rows = []
        for cell in np.flatnonzero(self.counters["flows_total"] | self.calls):
            ci, ai = divmod(int(cell), n_apps)
            in_city = subs_city == ci
            name, is_voip = self.apps[ai]
            row: dict[str, Any] = {**self.cities[ci], "app": name, "is_voip": is_voip}
            for k in _COUNTERS:
                row[k] = int(self.counters[k][cell])
            row["subscribers"] = int((self._seen[ai] & in_city).sum())
            row["subscribers_total"] = int((self._seen_total[ai] & in_city).sum())
            row["calls"] = int(self.calls[cell])
            row["call_seconds"] = round(float(self.call_ms[cell]) / 1000.0, 3)
            rows.append(row)
        return rows

    def per_city(self) -> list[dict[str, Any]]:
        """Per city, all apps together; ``subscribers`` distinct across apps."""
        n_apps = len(self.apps)
        seen = self._seen.any(axis=0)
        seen_total = self._seen_total.any(axis=0)
        rows = []
        for ci, city in enumerate(self.cities):
            cells = slice(ci * n_apps, (ci + 1) * n_apps)
            row: dict[str, Any] = dict(city)
            for k in _COUNTERS:
                row[k] = int(self.counters[k][cells].sum())
            in_city = self.sub_city == ci
            row["subscribers"] = int((seen & in_city).sum())
            row["subscribers_total"] = int((seen_total & in_city).sum())
            row["calls"] = int(self.calls[cells].sum())
            row["call_seconds"] = round(float(self.call_ms[cells].sum()) / 1000.0, 3)
            rows.append(row)
        return rows

    def totals(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self.counters.items()}

    def document(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            **meta,
            "totals": self.totals(),
            "cities": self.per_city(),
            "usage": self.usage(),
        }

    def write(self, path: Path, meta: dict[str, Any]) -> None:
        """Write the JSON document atomically (a reader never sees half of it)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.document(meta), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
