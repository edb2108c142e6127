"""The FlowSpec backend: our GoBGP speaker peers with a second, real gobgpd (the router).

Both run on loopback on free ports. The test reads the router's FlowSpec RIB,
which is what a real router would install as filters.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.enforcement.points.bgp import Router, Speaker, wait_until
from tests.enforcement.points.rulesdata import make_rule
from voipflow.enforcement.points.config import EnforceConfig
from voipflow.enforcement.points.desired import DesiredRules
from voipflow.enforcement.points.flowspec import FlowSpecBackend
from voipflow.enforcement.points.metrics import EnforceMetrics
from voipflow.enforcement.points.reconcile import Feedback, Reconciler
from voipflow.netutil import free_port
from voipflow.schemas.rules import encode_rule

pytestmark = pytest.mark.slow


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    if shutil.which("gobgpd") is None:
        pytest.skip("gobgpd is not installed (apt-get install gobgpd)")
    r = Router(tmp_path)
    try:
        yield r
    finally:
        r.close()


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
