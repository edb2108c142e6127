"""The exporter simulator in a thread of the demo's process, configured for this run.

It runs in the demo's process, not as a child: the progress lines and the
drain read what it has sent from it directly, and the report compares
ClickHouse with the truth file it writes when it stops.
"""

from __future__ import annotations

import ipaddress
import threading

from voipflow.demo.errors import DemoSettingError
from voipflow.demo.options import DemoOptions
from voipflow.demo.plan import DemoPlan
from voipflow.simulate.addresses import SimulatorDataError
from voipflow.simulate.config import SimulatorConfig
from voipflow.simulate.runner import Progress, Simulator


def _covers(networks: list[str], prefix: str) -> bool:
    net = ipaddress.ip_network(prefix, strict=False)
    for item in networks:
        home = ipaddress.ip_network(item, strict=False)
        if home.version == net.version and net.subnet_of(home):  # type: ignore[arg-type]
            return True
    return False


def simulator_config(plan: DemoPlan, options: DemoOptions, target: str) -> SimulatorConfig:
    """The simulator's settings: the run's options, the plan's cities, toward ``target``."""
    homes = [s.strip() for s in plan.home_networks.split(",") if s.strip()]
    v6 = [
        line.split(",", 1)[0]
        for line in plan.cities_csv.read_text(encoding="utf-8").splitlines()[1:]
        if ":" in line.split(",", 1)[0]
    ]
    # Sessions over IPv6 only where the worker will see the subscriber side as home.
    ipv6_share = 0.25 if v6 and all(_covers(homes, p) for p in v6) else 0.0
    return SimulatorConfig(
        target=target,
        rate=options.rate,
        duration_s=options.duration_s,
        version=options.version,
        sampling=options.sampling,
        cities=plan.cities_csv,
        seed=options.seed,
        truth=plan.truth_path,
        ipv6_share=ipv6_share,
    )


class SimulatorThread:
    """The exporter simulator in a thread of this process."""

    name = "simulator"

    def __init__(self, config: SimulatorConfig) -> None:
        self.sim = Simulator(config)
        self.latest: Progress | None = None
        self.final: Progress | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.sim.start()
        except SimulatorDataError as exc:
            raise DemoSettingError(f"simulator: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.final = self.sim.run(self._progress, progress_every_s=1.0)
        except BaseException as exc:  # shown by the main thread
            self.error = exc

    def _progress(self, p: Progress) -> None:
        self.latest = p

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def records(self) -> int:
        """Flow records sent so far (all of them once the run is over)."""
        p = self.final or self.latest
        return int(p.records) if p is not None else 0

    def stop(self) -> None:
        self.sim.request_stop()
        if self._thread is not None:
            self._thread.join(30)
        self.sim.stop()  # closes the sockets, writes the truth file
