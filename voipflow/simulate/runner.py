"""One simulator run: load data, step the traffic model, export, keep the truth.

:class:`Simulator` has the shape of the project's components (validated
config, inert constructor, ``start()``/``stop()``) plus :meth:`Simulator.run`,
which steps in real time (or as fast as it can with ``unpaced``) until the
duration is over or a stop is requested. ``voipflow demo`` can run it in a
thread and call :meth:`Simulator.request_stop`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voipflow.collectors.pcapfile import PcapWriter
from voipflow.simulate.addresses import (
    default_provider_dirs,
    load_cities,
    load_providers,
)
from voipflow.simulate.config import SimulatorConfig
from voipflow.simulate.exporters import ExporterSet
from voipflow.simulate.population import check_cities_fit
from voipflow.simulate.traffic import TrafficModel

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CITIES = REPO / "data" / "cities" / "demo-cities.csv"


@dataclass(slots=True)
class Progress:
    """What a run has done so far (given to the progress callback)."""

    elapsed_s: float  # wall clock
    sim_s: float  # simulated time
    records: int
    datagrams: int
    send_errors: int
    active_calls: int
    behind_s: float  # how far the run lags real time (0 when it keeps up)

    @property
    def rate(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Simulator:
    name = "simulator"

    def __init__(self, config: SimulatorConfig) -> None:
        self.cfg = config
        self._stop = threading.Event()
        self.model: TrafficModel | None = None
        self.exporters: ExporterSet | None = None
        self._pcap: PcapWriter | None = None
        self.start_ms = 0
        self.sim_ms = 0
        self.progress: Progress | None = None

    def start(self) -> None:
        """Load the data and open sockets; raises SimulatorDataError / OSError."""
        cfg = self.cfg
        cities = load_cities(cfg.cities or DEFAULT_CITIES)
        check_cities_fit(cities, cfg)
        dirs = [cfg.providers] if cfg.providers else default_provider_dirs(REPO)
        providers = load_providers(dirs)
        self.start_ms = cfg.start_ms if cfg.start_ms is not None else int(time.time() * 1000)
        self.sim_ms = self.start_ms
        self.model = TrafficModel(cfg, cities, providers, self.start_ms)
        if cfg.pcap is not None:
            self._pcap = PcapWriter(cfg.pcap)
        self.exporters = ExporterSet(
            [c.name for c in cities],
            cfg.exporters_per_city,
            version=cfg.version,
            sampling=cfg.sampling,
            mtu=cfg.mtu,
            target=cfg.target_addr,
            start_ms=self.start_ms,
            rng=np.random.default_rng(cfg.seed + 1),
            pcap=self._pcap,
            send=cfg.send,
        )
        self.exporters.open()
        log.info(
            "simulating %d cities, %d exporters, %d subscribers, %d calls in progress",
            len(cities),
            len(self.exporters.exporters),
            len(self.model.pop.sub_city),
            self.model.active_calls,
            extra={"target": cfg.target, "rate": cfg.rate, "version": cfg.version},
        )

    def request_stop(self) -> None:
        self._stop.set()

    def run(
        self,
        progress: Callable[[Progress], None] | None = None,
        progress_every_s: float = 1.0,
    ) -> Progress:
        """Step until the duration is over or :meth:`request_stop`; the final tally."""
        assert self.model is not None and self.exporters is not None, "start() first"
        cfg = self.cfg
        tick_ms = max(1, int(cfg.tick_s * 1000))
        t0 = time.monotonic()
        next_report = t0 + progress_every_s
        records = datagrams = 0
        steps = 0
        end_ms = self.start_ms + int(cfg.duration_s * 1000) if cfg.duration_s else None
        behind = 0.0
        while not self._stop.is_set():
            now_ms = self.sim_ms + tick_ms
            if end_ms is not None and now_ms > end_ms:
                break
            if not cfg.unpaced:
                # the records of a step are sent when its simulated time is due
                delay = (now_ms - self.start_ms) / 1000.0 - (time.monotonic() - t0)
                if delay > 0 and self._stop.wait(delay):
                    break
                behind = max(0.0, -delay)
            tick = self.model.tick(now_ms)
            datagrams += self.exporters.export(tick.columns, tick.exporter, now_ms)
            records += len(tick)
            self.sim_ms = now_ms
            steps += 1
            now = time.monotonic()
            if progress is not None and now >= next_report:
                self.progress = self._progress(now - t0, records, datagrams, behind)
                progress(self.progress)
                next_report = now + progress_every_s
        # what the export buffers still hold goes out when the run ends
        datagrams += self.exporters.flush(self.sim_ms)
        self.progress = self._progress(time.monotonic() - t0, records, datagrams, behind)
        return self.progress

    def _progress(self, elapsed: float, records: int, datagrams: int, behind: float) -> Progress:
        assert self.model is not None and self.exporters is not None
        errors = sum(e.send_errors for e in self.exporters.exporters)
        return Progress(
            elapsed,
            (self.sim_ms - self.start_ms) / 1000.0,
            records,
            datagrams,
            errors,
            self.model.active_calls,
            behind,
        )

    def truth_meta(self) -> dict[str, Any]:
        assert self.exporters is not None
        cfg = self.cfg
        return {
            "version": cfg.version,
            "sampling_rate": cfg.sampling,
            "rate": cfg.rate,
            "seed": cfg.seed,
            "active_timeout_s": cfg.active_timeout_s,
            "start_ms": self.start_ms,
            "end_ms": self.sim_ms,
            "target": cfg.target,
            "exporters": [e.describe() for e in self.exporters.exporters],
        }

    def write_truth(self, path: Path) -> None:
        assert self.model is not None
        self.model.truth.write(path, self.truth_meta())

    def stop(self) -> None:
        """Close sockets and the pcap, write the truth file if one was asked for."""
        self._stop.set()
        if self.exporters is not None:
            self.exporters.close()
        if self._pcap is not None:
            self._pcap.close()
            self._pcap = None
        if self.cfg.truth is not None and self.model is not None:
            self.write_truth(self.cfg.truth)
