"""The FlowSpec backend: our GoBGP speaker peers with a second, real gobgpd (the router).

Both run on loopback on free ports. The test reads the router's FlowSpec RIB,
which is what a real router would install as filters.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.enforcement.points.rulesdata import make_rule
from voipflow.enforcement.points.config import EnforceConfig
from voipflow.enforcement.points.desired import DesiredRules
from voipflow.enforcement.points.flowspec import FlowSpecBackend
from voipflow.enforcement.points.metrics import EnforceMetrics
from voipflow.enforcement.points.reconcile import Feedback, Reconciler
from voipflow.netutil import free_port
from voipflow.schemas.rules import encode_rule

pytestmark = pytest.mark.slow


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


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    if shutil.which("gobgpd") is None:
        pytest.skip("gobgpd is not installed (apt-get install gobgpd)")
    r = Router(tmp_path)
    try:
        yield r
    finally:
        r.close()


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


@pytest.fixture
def speaker(router: Router) -> Iterator[Speaker]:
    s = Speaker(router)
    try:
        yield s
    finally:
        s.close()


def test_block_throttle_and_shadow_arrive_with_match_and_action(
    router: Router, speaker: Speaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voipflow.enforcement.points.flowspec")
    speaker.put(
        make_rule(
            "r-block",
            target={
                "prefixes": ["198.51.100.0/24", "2001:db8::/32"],
                "ports": [{"from": 40000, "to": 40010}, {"from": 5060, "to": 5060}],
            },
        )
    )
    speaker.put(
        make_rule(
            "r-slow", action="throttle", rate_kbps=64, target={"prefixes": ["203.0.113.0/24"]}
        )
    )
    speaker.put(make_rule("r-shadow", mode="shadow", target={"prefixes": ["192.0.2.0/24"]}))
    out = speaker.rec.reconcile()
    assert sorted((m["rule_id"], m["status"]) for m in out) == [
        ("r-block", "applied"),
        ("r-shadow", "applied"),
        ("r-slow", "applied"),
    ]
    want = {
        "[destination: 198.51.100.0/24][protocol: ==udp][port: ==5060 >=40000&<=40010]": "discard",
        "[source: 198.51.100.0/24][protocol: ==udp][port: ==5060 >=40000&<=40010]": "discard",
        "[destination: 203.0.113.0/24][protocol: ==udp]": "rate 8000",
        "[source: 203.0.113.0/24][protocol: ==udp]": "rate 8000",
        "[destination: 192.0.2.0/24][protocol: ==udp]": "sample",
        "[source: 192.0.2.0/24][protocol: ==udp]": "sample",
    }
    wait_until(lambda: router.routes() == want)
    wait_until(lambda: len(router.routes("ipv6")) == 2)
    assert set(router.routes("ipv6").values()) == {"discard"}
    assert speaker.rec.reconcile() == []  # what is announced is what is in force
    assert "BGP session established" in caplog.messages


def test_withdrawal_expiry_and_restart(router: Router, speaker: Speaker) -> None:
    keep = make_rule("r-keep", target={"prefixes": ["198.51.100.0/24"]})
    speaker.put(keep)
    speaker.put(make_rule("r-gone", target={"prefixes": ["203.0.113.0/24"]}))
    speaker.rec.reconcile()
    wait_until(lambda: len(router.routes()) == 4)  # the session is up
    now = int(time.time() * 1000)
    speaker.put(
        make_rule(
            "r-short",
            target={"prefixes": ["192.0.2.0/24"]},
            created_ms=now,
            expires_ms=now + 3000,
        )
    )
    speaker.rec.reconcile()
    wait_until(lambda: len(router.routes()) == 6)

    speaker.store.apply(b"r-gone", None)
    out = speaker.rec.reconcile()
    assert [(m["rule_id"], m["status"], m["detail"]) for m in out] == [
        ("r-gone", "removed", "withdrawn")
    ]
    wait_until(lambda: not any("203.0.113.0/24" in k for k in router.routes()))

    while int(time.time() * 1000) < now + 3000:
        time.sleep(0.2)
    out = speaker.rec.reconcile()
    assert [(m["rule_id"], m["status"]) for m in out] == [("r-short", "expired")]
    wait_until(lambda: set(router.routes()) == {
        "[destination: 198.51.100.0/24][protocol: ==udp]",
        "[source: 198.51.100.0/24][protocol: ==udp]",
    })  # fmt: skip

    # The speaker stops: the router drops its routes; a new one announces them again.
    speaker.close()
    wait_until(lambda: router.routes() == {})
    again = Speaker(router)
    try:
        again.put(keep)
        out = again.rec.reconcile()
        assert [(m["rule_id"], m["status"]) for m in out] == [("r-keep", "applied")]
        wait_until(lambda: len(router.routes()) == 2)
    finally:
        again.close()


def test_routes_of_others_are_left_alone_and_drift_is_repaired(
    router: Router, speaker: Speaker
) -> None:
    api = ["gobgp", "--target", speaker.backend._target]
    subprocess.run(
        [*api, "global", "rib", "-a", "ipv4-flowspec", "add", "match", "destination",
         "10.9.9.0/24", "then", "discard"],
        check=True, capture_output=True,
    )  # fmt: skip
    speaker.put(make_rule("r-1", target={"prefixes": ["198.51.100.0/24"]}))
    speaker.rec.reconcile()
    wait_until(lambda: len(router.routes()) == 3)
    # Someone withdraws one of our routes by hand.
    subprocess.run(
        [*api, "global", "rib", "-a", "ipv4-flowspec", "del", "match", "source",
         "198.51.100.0/24", "protocol", "udp"],
        check=True, capture_output=True,
    )  # fmt: skip
    out = speaker.rec.reconcile()
    assert [(m["rule_id"], m["status"]) for m in out] == [("r-1", "applied")]
    assert "drift repaired" in out[0]["detail"]
    wait_until(lambda: len(router.routes()) == 3)
    assert "[destination: 10.9.9.0/24]" in router.routes()


def test_a_running_gobgpd_is_driven_through_its_api(router: Router, tmp_path: Path) -> None:
    from voipflow.enforcement.points.flowspec import _speaker_config

    api = free_port()
    conf = tmp_path / "speaker.toml"
    conf.write_text(_speaker_config(64512, "192.0.2.9", "127.0.0.1", router.bgp_port, 64512))
    with open(tmp_path / "speaker.log", "wb") as log:
        speaker = subprocess.Popen(
            ["gobgpd", "-f", str(conf), "--api-hosts", f"127.0.0.1:{api}", "--pprof-disable"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        backend = FlowSpecBackend(
            EnforceConfig(backend="flowspec", bgp_api=f"127.0.0.1:{api}", bgp_peer="")
        )
        backend.start()
        store = DesiredRules()
        rec = Reconciler(backend, store, Feedback("t", "flowspec"), EnforceMetrics())
        rule = make_rule("r-ext", target={"prefixes": ["198.51.100.0/24"]})
        store.apply(b"r-ext", encode_rule(rule))
        assert [m["status"] for m in rec.reconcile()] == ["applied"]
        wait_until(lambda: len(router.routes()) == 2)
        backend.stop()  # not ours to stop: the speaker and its routes stay
        time.sleep(0.5)
        assert speaker.poll() is None and len(router.routes()) == 2
    finally:
        speaker.terminate()
        speaker.wait(timeout=10)
