"""What one run of the demo uses, fixed from the settings before anything starts.

Unless the user set them, the demo gives its worker the shipped demo city
table with its home networks, and a lateness and idle close that suit short
runs; the collector gets a free UDP port of 127.0.0.1. :func:`preflight`
checks what is cheap to check, so that a bad setting fails in one line before
a broker or a child starts.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from voipflow.collectors.config import split_listen
from voipflow.collectors.receiver import ReceiverError, check_free
from voipflow.demo.database import check_server
from voipflow.demo.errors import DemoSettingError
from voipflow.netutil import free_port
from voipflow.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEMO_CITIES = REPO / "data" / "cities" / "demo-cities.csv"
DEMO_HOME_NETWORKS = "10.0.0.0/8,2001:db8::/32"
#: Worker settings the demo uses unless the user set them (see ``--help``).
#: The simulator exports short flows (web, DNS) up to 15 s after they ended,
#: as routers do after their inactive timeout, plus up to 1 s in the export
#: cache: 20 s of lateness keeps them in their windows.
DEMO_LATENESS_S = 20
DEMO_IDLE_CLOSE_S = 2.0


@dataclass(frozen=True)
class DemoPlan:
    """The run's directories and the worker settings it gives its children."""

    data_dir: Path
    cities_csv: Path
    home_networks: str
    lateness_s: int
    idle_close_s: float
    #: Where the sink serves SQL while the demo runs ("": the user's setting, or off).
    sql_listen: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> DemoPlan:
        """The user's worker settings where given, else the demo's."""
        w = settings.worker
        given = w.model_fields_set
        return cls(
            data_dir=Path(settings.data_dir).resolve(),
            cities_csv=Path(w.prefix_table) if w.prefix_table else DEMO_CITIES,
            home_networks=w.home_networks if "home_networks" in given else DEMO_HOME_NETWORKS,
            lateness_s=w.lateness_s if "lateness_s" in given else DEMO_LATENESS_S,
            idle_close_s=w.idle_close_s if "idle_close_s" in given else DEMO_IDLE_CLOSE_S,
            # On a free loopback port, so SQL works during the demo (chdb has one owner).
            sql_listen=""
            if "http_listen" in settings.clickhouse.model_fields_set or settings.clickhouse.url
            else "127.0.0.1:0",
        )

    @property
    def demo_dir(self) -> Path:
        return self.data_dir / "demo"

    @property
    def log_dir(self) -> Path:
        return self.demo_dir / "logs"

    @property
    def truth_path(self) -> Path:
        """What the simulator sent, written when it stops."""
        return self.demo_dir / "truth.json"


@contextlib.contextmanager
def demo_lock(demo_dir: Path) -> Iterator[None]:
    """One demo per data directory: a second one would fight over chdb and ports."""
    demo_dir.mkdir(parents=True, exist_ok=True)
    with open(demo_dir / "demo.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoSettingError(
                f"VOIPFLOW_DATA_DIR={demo_dir.parent}: another `voipflow demo` runs there; "
                "wait for it or use another data directory"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def collector_listen(settings: Settings) -> tuple[str, str]:
    """(listen setting, simulator target): the user's, or a free UDP port."""
    if "listen" in settings.collector.model_fields_set:
        listen = settings.collector.listen
        host, port = split_listen(listen)[0]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return listen, target
    port = free_port("udp")
    return f"127.0.0.1:{port}", f"127.0.0.1:{port}"


def preflight(settings: Settings, plan: DemoPlan, listen: str) -> None:
    """Cheap checks of the settings before anything starts (one line each)."""
    try:
        check_free(split_listen(listen))
    except ReceiverError as exc:
        raise DemoSettingError(f"VOIPFLOW_COLLECTOR_LISTEN={listen!r}: {exc.strerror}") from exc
    check_server(settings, plan.data_dir)
    if not plan.cities_csv.is_file():
        raise DemoSettingError(f"VOIPFLOW_WORKER_PREFIX_TABLE: no file {plan.cities_csv}")
