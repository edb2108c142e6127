"""FlowSpec interoperability: our GoBGP speaker peers with BIRD 2, another BGP implementation.

BIRD listens on 127.0.0.2 on a free port with flow4/flow6 tables; the test
reads them with ``birdc show route table ... all``: each rule's match and its
action as the extended community a router acts on (traffic-rate 0x8006 with
the rate as an IEEE float, 0 for discard; traffic-action 0x8007 with the
sample bit).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.enforcement.points.bgp import Speaker, wait_until
from tests.enforcement.points.rulesdata import make_rule
from voipflow.netutil import free_port

pytestmark = pytest.mark.slow

BIRD_ADDR = "127.0.0.2"


class Bird:
    def __init__(self, tmp: Path) -> None:
        self.bgp_port = free_port(host=BIRD_ADDR)
        self.sock = tmp / "bird.ctl"
        conf = tmp / "bird.conf"
        conf.write_text(
            "router id 192.0.2.253;\n"
            "protocol device {}\n"
            "flow4 table flowtab4;\n"
            "flow6 table flowtab6;\n"
            "protocol bgp speaker {\n"
            f"  local {BIRD_ADDR} port {self.bgp_port} as 64512;\n"
            "  neighbor 127.0.0.1 as 64512;\n"
            "  passive on;\n"
            "  flow4 { table flowtab4; import all; export none; };\n"
            "  flow6 { table flowtab6; import all; export none; };\n"
            "}\n"
        )
        self.log = open(tmp / "bird.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["bird", "-f", "-c", str(conf), "-s", str(self.sock), "-P", str(tmp / "bird.pid")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def routes(self, table: str = "flowtab4") -> dict[str, str]:
        """Match -> action (discard, rate N, sample) from ``birdc show route ... all``."""
        res = subprocess.run(
            ["birdc", "-s", str(self.sock), "show", "route", "table", table, "all"],
            capture_output=True,
            text=True,
            check=False,
        )
        out: dict[str, str] = {}
        match = None
        for line in res.stdout.splitlines():
            head = re.match(r"^(flow[46] \{.*?\})", line)
            if head:
                match = head.group(1)
                continue
            ext = re.search(
                r"BGP\.ext_community: \(generic, 0x(8006|8007)0000, 0x([0-9a-f]+)\)", line
            )
            if ext and match:
                kind, value = ext.group(1), int(ext.group(2), 16)
                if kind == "8007":
                    out[match] = "sample" if value & 0x2 else f"action {value}"
                else:
                    rate = struct.unpack(">f", value.to_bytes(4, "big"))[0]
                    out[match] = "discard" if rate == 0 else f"rate {rate:g}"
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def bird(tmp_path: Path) -> Iterator[Bird]:
    if shutil.which("bird") is None or shutil.which("gobgpd") is None:
        pytest.skip("bird2 and gobgpd are needed (apt-get install bird2 gobgpd)")
    b = Bird(tmp_path)
    try:
        yield b
    finally:
        b.close()


def test_bird_receives_match_and_action_and_loses_them_on_withdrawal_and_expiry(
    bird: Bird,
) -> None:
    speaker = Speaker(bird.bgp_port, peer_host=BIRD_ADDR)
    try:
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
        speaker.rec.reconcile()
        want = {
            "flow4 { dst 198.51.100.0/24; proto 17; port 5060,40000..40010; }": "discard",
            "flow4 { src 198.51.100.0/24; proto 17; port 5060,40000..40010; }": "discard",
            "flow4 { dst 203.0.113.0/24; proto 17; }": "rate 8000",
            "flow4 { src 203.0.113.0/24; proto 17; }": "rate 8000",
        }
        wait_until(lambda: bird.routes() == want)
        assert bird.routes("flowtab6") == {
            "flow6 { dst 2001:db8::/32; next header 17; port 5060,40000..40010; }": "discard",
            "flow6 { src 2001:db8::/32; next header 17; port 5060,40000..40010; }": "discard",
        }

        now = int(time.time() * 1000)
        speaker.put(
            make_rule(
                "r-shadow",
                mode="shadow",
                target={"prefixes": ["192.0.2.0/24"]},
                created_ms=now,
                expires_ms=now + 3000,
            )
        )
        speaker.store.apply(b"r-slow", None)
        speaker.rec.reconcile()
        wait_until(
            lambda: (
                bird.routes()
                == {
                    **{k: v for k, v in want.items() if "203.0.113" not in k},
                    "flow4 { dst 192.0.2.0/24; proto 17; }": "sample",
                    "flow4 { src 192.0.2.0/24; proto 17; }": "sample",
                }
            )
        )
        while int(time.time() * 1000) < now + 3000:
            time.sleep(0.2)
        assert [m["status"] for m in speaker.rec.reconcile()] == ["expired"]
        wait_until(lambda: not any("192.0.2.0" in k for k in bird.routes()))
    finally:
        speaker.close()
