"""Network namespaces for the nftables tests: subscriber <-> router <-> provider.

Names are ``vfe-<pid>-<n>-<role>`` so parallel sessions never collide, and
everything is removed on close. The router forwards between a subscriber LAN
(10.77.1.0/24) and a provider LAN (198.51.100.0/24); the enforcement point's
nft runs in the router namespace.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO

_COUNTER = itertools.count()

SUB_ADDR = "10.77.1.2"
PROV_ADDR = "198.51.100.10"
SUB_ADDR6 = "fd77:1::2"
PROV_ADDR6 = "2001:db8:100::10"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def require_netns() -> None:
    """Skip (saying why) where namespaces or nft cannot be used: not root, no nft."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed (apt-get install nftables)")


class Lab:
    def __init__(self) -> None:
        n = next(_COUNTER)
        base = f"vfe-{os.getpid()}-{n}"
        self.sub, self.router, self.prov = f"{base}-sub", f"{base}-rtr", f"{base}-prov"
        self.procs: list[subprocess.Popen[bytes]] = []

    def up(self) -> Lab:
        for ns in (self.sub, self.router, self.prov):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.router, "link", "add", "rs", "type", "veth", "peer", "name", "s0",
            "netns", self.sub)  # fmt: skip
        _ip("-n", self.router, "link", "add", "rp", "type", "veth", "peer", "name", "p0",
            "netns", self.prov)  # fmt: skip
        for ns, dev, addr in (
            (self.router, "rs", "10.77.1.1/24"),
            (self.router, "rp", "198.51.100.1/24"),
            (self.sub, "s0", f"{SUB_ADDR}/24"),
            (self.prov, "p0", f"{PROV_ADDR}/24"),
        ):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        for ns, dev, addr in (
            (self.router, "rs", "fd77:1::1/64"),
            (self.router, "rp", "2001:db8:100::1/64"),
            (self.sub, "s0", f"{SUB_ADDR6}/64"),
            (self.prov, "p0", f"{PROV_ADDR6}/64"),
        ):
            _ip("-n", ns, "-6", "addr", "add", addr, "dev", dev, "nodad")
        _ip("-n", self.sub, "route", "add", "default", "via", "10.77.1.1")
        _ip("-n", self.prov, "route", "add", "default", "via", "198.51.100.1")
        _ip("-n", self.sub, "-6", "route", "add", "default", "via", "fd77:1::1")
        _ip("-n", self.prov, "-6", "route", "add", "default", "via", "2001:db8:100::1")
        for knob in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            subprocess.run(["ip", "netns", "exec", self.router, "sysctl", "-qw", knob], check=True)
        return self

    def spawn(self, ns: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    def nft(self, *args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.router, "nft", *args],
            input=script,
            capture_output=True,
            text=True,
            check=False,
        )

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stderr is not None:
                proc.stderr.close()
        for ns in (self.sub, self.router, self.prov):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


class Media:
    """A UDP media stream provider -> subscriber; the receiver's count is read from a file."""

    def __init__(
        self, lab: Lab, tmp: Path, port: int = 40000, pps: int = 200, v6: bool = False
    ) -> None:
        self.file = tmp / f"received-{port}"
        self.receiver = lab.spawn(
            lab.sub, "-m", "tests.enforcement.points.media", "receive", str(port), str(self.file),
            "::" if v6 else "0.0.0.0",
        )  # fmt: skip
        time.sleep(0.3)
        self.sender = lab.spawn(
            lab.prov, "-m", "tests.enforcement.points.media", "send",
            SUB_ADDR6 if v6 else SUB_ADDR, str(port), str(pps),
        )  # fmt: skip
        assert self.started(), f"no media reached the subscriber on port {port}"

    def received(self) -> int:
        try:
            return int(self.file.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def started(self, timeout_s: float = 15.0) -> bool:
        """True once the first packets arrived (processes start slowly on a busy machine)."""
        deadline = time.monotonic() + timeout_s
        while self.received() == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def flowing(self, window_s: float = 1.0) -> bool:
        """True when packets arrived during the next ``window_s``."""
        before = self.received()
        time.sleep(window_s)
        return self.received() > before
