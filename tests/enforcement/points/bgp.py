"""BGP parts of the FlowSpec tests: a gobgpd router, our speaker, waiting for a RIB.

:class:`Router` is a second, real gobgpd that accepts our speaker on loopback
and keeps what it announces; :class:`Speaker` is the FlowSpec backend with its
desired rules and reconciler. Both run on free ports.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voipflow.enforcement.points.config import EnforceConfig
from voipflow.enforcement.points.desired import DesiredRules
from voipflow.enforcement.points.flowspec import FlowSpecBackend
from voipflow.enforcement.points.metrics import EnforceMetrics
from voipflow.enforcement.points.reconcile import Feedback, Reconciler
from voipflow.netutil import free_port
from voipflow.schemas.rules import encode_rule


class Router:
    """A gobgpd that accepts our speaker and keeps what it announces."""

    def __init__(self, tmp: Path) -> None:
        self.bgp_port, self.api_port = free_port(), free_port()
        conf = tmp / "router.toml"
        families = "".join(
            f"  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n"
            f'      afi-safi-name = "{f}"\n'
            for f in ("ipv4-flowspec", "ipv6-flowspec")
        )
        conf.write_text(
            '[global.config]\n  as = 64512\n  router-id = "192.0.2.254"\n'
            f'  port = {self.bgp_port}\n  local-address-list = ["127.0.0.1"]\n'
            '[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "127.0.0.1"\n'
            "    peer-as = 64512\n  [neighbors.transport.config]\n    passive-mode = true\n"
            + families
        )
        self.log = open(tmp / "router.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["gobgpd", "-f", str(conf), "--api-hosts", f"127.0.0.1:{self.api_port}",
             "--pprof-disable", "-l", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def rib(self, afi: str = "ipv4") -> dict[str, list[dict[str, Any]]]:
        res = subprocess.run(
            ["gobgp", "-p", str(self.api_port), "-j", "global", "rib", "-a", f"{afi}-flowspec"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return json.loads(res.stdout or "{}") if res.returncode == 0 else {}

    def routes(self, afi: str = "ipv4") -> dict[str, str]:
        """Displayed match -> action (discard, rate N, sample) as the router holds them."""
        out = {}
        for match, paths in self.rib(afi).items():
            for attr in paths[0]["attrs"]:
                if attr["type"] != 16:
                    continue
                for ext in attr["value"]:
                    if ext.get("subtype") == 6:
                        out[match] = "discard" if ext["rate"] == 0 else f"rate {ext['rate']:g}"
                    elif ext.get("subtype") == 7 and ext.get("sample"):
                        out[match] = "sample"
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def wait_until(pred: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "the router's RIB did not reach the expected state"
        time.sleep(0.2)


class Speaker:
    def __init__(self, router: Router | int, peer_host: str = "127.0.0.1") -> None:
        port = router if isinstance(router, int) else router.bgp_port
        cfg = EnforceConfig(backend="flowspec", point_id="t", bgp_peer=f"{peer_host}:{port}")
        self.backend = FlowSpecBackend(cfg)
        self.backend.start()
        self.store = DesiredRules()
        self.rec = Reconciler(self.backend, self.store, Feedback("t", "flowspec"), EnforceMetrics())

    def put(self, rule: dict[str, Any]) -> None:
        assert self.store.apply(rule["rule_id"].encode(), encode_rule(rule)).refused is None

    def close(self) -> None:
        self.backend.stop()
