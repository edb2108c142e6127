"""The simulator's traffic through the classifier, in process: per-app recall and precision.

``voipflow demo`` feeds the simulator's flows to the pipeline and compares
VoIP usage with what the simulator sent; this measures the classifier's share
of that comparison directly, without sockets, broker or database. The traffic
model's records (the columns the exporters would encode, with sampling
applied as on the routers) are grouped per exporter into batches covering
``batch_s`` of simulated time, as the collector publishes one exporter's
records, and classified by one :class:`~streams.classify.Classifier`, whose
per-exporter memories (ICE sockets, signalling hosts) span the batches as in
a worker. Every record carries the model's label, so per app:

* ``records`` / ``voip_records``: records, and those classified VoIP;
* ``bytes`` / ``voip_bytes``: their bytes as exported (unscaled);
* for call apps the recall by record and by byte, for background apps the
  share wrongly called VoIP;
* over all records: precision and recall of ``is_voip`` by record and byte.

``python -m benchmarks.sim_classify`` prints these figures;
``tests/voipflow/test_sim_classified.py`` holds the classifier to thresholds
on them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voipflow.schemas.flowbatch import make_batch, text_to_addr16
from voipflow.simulate.addresses import default_provider_dirs, load_cities, load_providers
from voipflow.simulate.config import SimulatorConfig
from voipflow.simulate.exporters import loopback_address
from voipflow.simulate.runner import DEFAULT_CITIES, REPO
from voipflow.simulate.traffic import TrafficModel
from voipflow.streams.classify import Classifier
from voipflow.streams.providers import load_providers as load_ranges

#: Start of the simulated time (ms since the epoch) of :func:`make_model`.
T0 = 1_700_000_000_000


@dataclass(slots=True)
class AppScore:
    """Figures of one simulated app."""

    app: str
    is_voip: bool
    records: int = 0
    voip_records: int = 0
    bytes: int = 0
    voip_bytes: int = 0
    named: dict[str, int] = field(default_factory=dict)  # classifier app -> VoIP records

    @property
    def record_share(self) -> float:
        """Share of records classified VoIP (recall for call apps)."""
        return self.voip_records / self.records if self.records else 0.0

    @property
    def byte_share(self) -> float:
        return self.voip_bytes / self.bytes if self.bytes else 0.0


@dataclass(slots=True)
class SimScore:
    """Figures of one run: per app, and precision/recall of ``is_voip`` over all."""

    apps: dict[str, AppScore]
    seconds: float
    sampling: int

    def _sum(self, voip: bool, what: str) -> int:
        return sum(getattr(a, what) for a in self.apps.values() if a.is_voip == voip)

    @property
    def precision(self) -> float:
        tp, fp = self._sum(True, "voip_records"), self._sum(False, "voip_records")
        return tp / (tp + fp) if tp + fp else 0.0

    @property
    def recall(self) -> float:
        n = self._sum(True, "records")
        return self._sum(True, "voip_records") / n if n else 0.0

    @property
    def byte_precision(self) -> float:
        tp, fp = self._sum(True, "voip_bytes"), self._sum(False, "voip_bytes")
        return tp / (tp + fp) if tp + fp else 0.0

    @property
    def byte_recall(self) -> float:
        n = self._sum(True, "bytes")
        return self._sum(True, "voip_bytes") / n if n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "sampling": self.sampling,
            "precision": self.precision,
            "recall": self.recall,
            "byte_precision": self.byte_precision,
            "byte_recall": self.byte_recall,
            "apps": {
                a.app: {
                    "is_voip": a.is_voip,
                    "records": a.records,
                    "voip_records": a.voip_records,
                    "record_share": a.record_share,
                    "byte_share": a.byte_share,
                    "named": a.named,
                }
                for a in self.apps.values()
            },
        }


def make_model(**overrides: Any) -> TrafficModel:
    """The simulator's traffic model on the demo cities and the shipped provider ranges."""
    cfg = SimulatorConfig(truth=Path("unused.json"), send=False, **overrides)
    cities = load_cities(DEFAULT_CITIES)
    return TrafficModel(cfg, cities, load_providers(default_provider_dirs(REPO)), T0)


def score_model(
    model: TrafficModel,
    seconds: float,
    classifier: Classifier | None = None,
    step_ms: int = 100,
    batch_s: float = 1.0,
) -> SimScore:
    """Step ``model`` for ``seconds`` and classify its records per exporter and batch."""
    clf = classifier or Classifier(load_ranges())
    names = [a for a, _ in model.apps]
    scores = {a: AppScore(a, v) for a, v in model.apps}
    pending: dict[int, list[tuple[dict[str, np.ndarray], np.ndarray]]] = defaultdict(list)
    epc = model.cfg.exporters_per_city
    sampling = model.cfg.sampling

    def flush() -> None:
        for ex, parts in sorted(pending.items()):
            cols = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
            app = np.concatenate([p[1] for p in parts])
            n = len(app)
            addr = text_to_addr16(loopback_address(ex // epc, ex % epc))
            cols["exporter_addr"] = np.full(n, addr, dtype="S16")
            cols["sampling_rate"] = np.full(n, sampling, dtype=np.uint32)
            res = clf.classify(make_batch(cols))
            got = res.app_names()
            for ai in np.unique(app):
                s = scores[names[ai]]
                sel = app == ai
                hit = sel & res.is_voip
                s.records += int(sel.sum())
                s.voip_records += int(hit.sum())
                s.bytes += int(cols["bytes"][sel].sum())
                s.voip_bytes += int(cols["bytes"][hit].sum())
                for name, count in zip(*np.unique(got[hit], return_counts=True), strict=True):
                    s.named[str(name)] = s.named.get(str(name), 0) + int(count)
        pending.clear()

    steps_per_batch = max(1, int(batch_s * 1000 / step_ms))
    now = model.now_ms
    steps = int(seconds * 1000 / step_ms)
    for i in range(steps):
        now += step_ms
        tick = model.tick(now)
        if len(tick):
            order = np.argsort(tick.exporter, kind="stable")
            ex_sorted = tick.exporter[order]
            for ex in np.unique(ex_sorted):
                rows = order[ex_sorted == ex]
                cols = {k: v[rows] for k, v in tick.columns.items()}
                pending[int(ex)].append((cols, tick.labels["app"][rows]))
        if (i + 1) % steps_per_batch == 0:
            flush()
    flush()
    return SimScore(scores, seconds, sampling)
