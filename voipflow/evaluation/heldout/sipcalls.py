"""Real SIP calls with RTP media, made by sipp and captured by dumpcap.

A subscriber and a carrier live in two network namespaces joined by a veth
pair (subscriber 100.64.23.10 / 2001:db8:64::10 in CGNAT and documentation
space, carrier SBC 198.51.100.20 / 2001:db8:c4::20), so the traffic never
leaves this machine and the addresses look like an operator's. Without the
rights to make namespaces, 127.0.1.10 and 127.0.2.20 on loopback stand in.

Each call: ``sipp -sn uas -rtp_echo`` on the carrier side, a sipp UAC on the
subscriber side whose scenario (``uac_media.xml``, sipp's ``uac_pcap`` with
the media repeated) plays sip-tester's G.711 A-law capture with
``play_pcap_audio``; the UAS echoes every RTP packet, so media flows both
ways for the whole call. Calls run in parallel, on the standard SIP port and
on others, over UDP and TCP, IPv4 and IPv6, while the subscriber also sends
background datagrams to a web server (198.51.100.30). Every flow in the
capture is labelled: the calls' signalling (app ``sip``) and media (app
``rtp``) are VoIP, anything else (background, neighbour discovery, ICMP) is
not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from voipflow.collectors.pcapfile import read_flows
from voipflow.evaluation.heldout.traffic import kind_role

G711_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
WEB = "198.51.100.30"
BACKGROUND_PORTS = (47000, 80)
#: Background datagrams to another host while the calls run: a real link
#: carries other traffic, and without it softflowd's periodic 1-in-N sampler
#: keeps hitting the same one of the calls' equally paced streams.
BACKGROUND = """
import random, socket, sys, time
src, host = sys.argv[1], sys.argv[2]
sport, dport, seconds = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, sport))
rnd = random.Random(7)
end = time.monotonic() + seconds
while time.monotonic() < end:
    s.sendto(bytes(rnd.randint(60, 1400)), (host, dport))
    time.sleep(rnd.expovariate(150.0))
"""
SCENARIO = Path(__file__).with_name("uac_media.xml")


class SippUnavailable(RuntimeError):
    """sipp, its G.711 capture or dumpcap is missing."""


@dataclass(frozen=True, slots=True)
class Call:
    kind: str  # label kind, e.g. "sipp.udp5060"
    transport: str  # sipp -t: u1 (UDP) or t1 (TCP)
    uas_port: int
    uac_port: int
    uas_media: int
    uac_media: int
    plays: int = 4  # 7 s of G.711 per play
    v6: bool = False


#: The calls of the held-out capture: the standard port, common alternatives
#: (5080, 5062 over TCP), an arbitrary high port, and IPv6.
CALLS: tuple[Call, ...] = (
    Call("sipp.udp5060", "u1", 5060, 5060, 16000, 6000),
    Call("sipp.udp5080", "u1", 5080, 35060, 20000, 41000),
    Call("sipp.udp_highport", "u1", 47123, 23456, 31000, 52000),
    Call("sipp.tcp5062", "t1", 5062, 41234, 18000, 44000),
    Call("sipp.udp5060_v6", "u1", 5060, 5070, 24000, 26000, v6=True),
)


@dataclass(frozen=True, slots=True)
class Hosts:
    sub: str
    carrier: str
    sub6: str | None
    carrier6: str | None
    ns_sub: str | None
    ns_carrier: str | None
    capture_if: str
    web: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def hosts() -> Iterator[Hosts]:
    """Two namespaces joined by a veth pair, removed afterwards (loopback as fallback)."""
    tag = f"vf{os.getpid() % 100000}"
    ns_s, ns_c, if_s, if_c = f"{tag}s", f"{tag}c", f"{tag}a", f"{tag}b"
    try:
        _ip("netns", "add", ns_s)
    except (OSError, subprocess.CalledProcessError):
        yield Hosts("127.0.1.10", "127.0.2.20", None, None, None, None, "lo", "127.0.3.30")
        return
    try:
        _ip("netns", "add", ns_c)
        _ip("link", "add", if_s, "type", "veth", "peer", "name", if_c)
        _ip("link", "set", if_s, "netns", ns_s)
        _ip("link", "set", if_c, "netns", ns_c)
        for ns, dev, mine, theirs, mine6, theirs6 in (
            (ns_s, if_s, "100.64.23.10", "198.51.100.20", "2001:db8:64::10", "2001:db8:c4::20"),
            (ns_c, if_c, "198.51.100.20", "100.64.23.10", "2001:db8:c4::20", "2001:db8:64::10"),
        ):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{mine}/32", "dev", dev)
            _ip("-n", ns, "-6", "addr", "add", f"{mine6}/128", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "route", "add", f"{theirs}/32", "dev", dev)
            _ip("-n", ns, "-6", "route", "add", f"{theirs6}/128", "dev", dev)
        # A second carrier host (a web server) for the background traffic.
        _ip("-n", ns_c, "addr", "add", f"{WEB}/32", "dev", if_c)
        _ip("-n", ns_s, "route", "add", f"{WEB}/32", "dev", if_s)
        yield Hosts(
            "100.64.23.10", "198.51.100.20", "2001:db8:64::10", "2001:db8:c4::20", ns_s, ns_c, if_c,
            WEB,
        )  # fmt: skip
    finally:
        for ns in (ns_s, ns_c):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _in(ns: str | None, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd] if ns else cmd


def _scenario(workdir: Path, plays: int) -> Path:
    """sipp's uac_pcap scenario with the G.711 capture played ``plays`` times."""
    text = SCENARIO.read_text()
    media = "".join(
        f'  <nop><action><exec play_pcap_audio="{G711_PCAP}"/></action></nop>\n'
        '  <pause milliseconds="7100"/>\n'
        for _ in range(plays)
    )
    out = workdir / f"uac_{plays}.xml"
    out.write_text(text.replace("<!-- MEDIA -->\n", media))
    return out


def _addr(h: Hosts, call: Call, carrier: bool) -> str:
    if call.v6 and h.sub6 and h.carrier6:
        return h.carrier6 if carrier else h.sub6
    return h.carrier if carrier else h.sub


def record(out: Path, workdir: Path, calls: tuple[Call, ...] = CALLS) -> list[tuple[str, ...]]:
    """Make the calls, capture them into ``out``; returns the label rows' fields."""
    for tool in ("sipp", "dumpcap", "ip"):
        if shutil.which(tool) is None:
            raise SippUnavailable(f"{tool} not found (apt-get install sip-tester tshark iproute2)")
    if not G711_PCAP.is_file():
        raise SippUnavailable(f"{G711_PCAP} missing (apt-get install sip-tester)")
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    with hosts() as h, contextlib.ExitStack() as logs:
        if not h.ns_sub:
            calls = tuple(c for c in calls if not c.v6)
        dump = subprocess.Popen(
            _in(h.ns_carrier, ["dumpcap", "-q", "-P", "-i", h.capture_if, "-w", str(out)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_file(out, dump)
            for c in calls:
                carrier = _addr(h, c, True)
                uas = _in(h.ns_carrier, [
                    "sipp", "-sn", "uas", "-i", carrier, "-p", str(c.uas_port), "-t", c.transport,
                    "-rtp_echo", "-mi", carrier, "-mp", str(c.uas_media), "-nostdin", "-m", "1",
                ])  # fmt: skip
                log = logs.enter_context((workdir / f"{c.kind}.uas.log").open("wb"))
                procs.append(subprocess.Popen(uas, cwd=workdir, stdout=log, stderr=log))
            seconds = max(c.plays for c in calls) * 7.1 + 3
            procs.append(subprocess.Popen(
                _in(h.ns_sub, [sys.executable, "-c", BACKGROUND, h.sub, h.web,
                               *map(str, BACKGROUND_PORTS), str(seconds)]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            time.sleep(1.0)
            uacs = []
            # one file per length, written before any sipp reads it: rewriting
            # it for the next call while sipp parses it makes sipp fail
            scenarios = {p: _scenario(workdir, p) for p in sorted({c.plays for c in calls})}
            for c in calls:
                carrier, sub = _addr(h, c, True), _addr(h, c, False)
                target = (
                    f"[{carrier}]:{c.uas_port}" if ":" in carrier else f"{carrier}:{c.uas_port}"
                )
                uac = _in(h.ns_sub, ["sipp", target, "-sf", str(scenarios[c.plays]),
                                     "-i", sub, "-p", str(c.uac_port), "-mi", sub,
                                     "-mp", str(c.uac_media), "-t", c.transport, "-m", "1",
                                     "-nostdin", "-timeout", "120s"])  # fmt: skip
                log = logs.enter_context((workdir / f"{c.kind}.uac.log").open("wb"))
                uacs.append(subprocess.Popen(uac, cwd=workdir, stdout=log, stderr=log))
            failed = [c.kind for c, p in zip(calls, uacs, strict=True) if p.wait(timeout=180) != 0]
            if failed:
                tail = (workdir / f"{failed[0]}.uac.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"sipp calls failed: {failed}; {failed[0]} said:\n{tail}")
            time.sleep(1.0)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
                if p.poll() is None:
                    p.kill()
                    p.wait()
            dump.send_signal(signal.SIGINT)
            try:
                dump.wait(timeout=10)
            except subprocess.TimeoutExpired:
                dump.kill()
                dump.wait()
        return _labels(out, calls, h)


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= 24:
            time.sleep(0.3)
            return
        if proc.poll() is not None:
            raise SippUnavailable(f"dumpcap exited with {proc.returncode}")
        time.sleep(0.05)
    raise SippUnavailable("dumpcap did not start capturing")


def _labels(pcap: Path, calls: tuple[Call, ...], h: Hosts) -> list[tuple[str, ...]]:
    known: dict[tuple[int, str, int, str, int], tuple[str, str]] = {}
    for c in calls:
        sub, carrier = _addr(h, c, False), _addr(h, c, True)
        proto = 6 if c.transport.startswith("t") else 17
        known[(proto, sub, c.uac_port, carrier, c.uas_port)] = (c.kind, "sip")
        known[(17, sub, c.uac_media, carrier, c.uas_media)] = (c.kind + ".rtp", "rtp")
    known[(17, h.sub, BACKGROUND_PORTS[0], h.web, BACKGROUND_PORTS[1])] = ("netns.background", "")
    rows: list[tuple[str, ...]] = []
    for (proto, a, ap, b, bp), (fwd, rev) in read_flows(pcap.read_bytes()).items():
        kind, app = (
            known.get((proto, a, ap, b, bp))
            or known.get((proto, b, bp, a, ap))
            or ("netns.other", "")
        )
        l4 = {6: "TCP", 17: "UDP"}.get(proto, str(proto))
        rows.append(
            (pcap.name, l4, a, str(ap), b, str(bp), str(int(rev[0] > 0)), kind, kind,
             "VoIP" if app else "Network", str(fwd[0]), str(fwd[1]), str(rev[0]), str(rev[1]),
             str(int(bool(app))), app, kind_role(kind, bool(app)))
        )  # fmt: skip
    return rows
