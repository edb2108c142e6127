"""Independent NetFlow/IPFIX decoders for differential tests: tshark and nfdump.

The one place the tests drive them. Both are driven as the operators run them
and, for the encoder and end-to-end tests, their output is brought to one
shape, a list of flow dicts with the keys of :data:`FLOW_KEYS` (addresses as
text, times as UTC ms), so a test can compare them with what was encoded or
with what the project's collector decodes.

* :func:`tshark_flows` reads a pcap with the ``cflow`` dissector forced on the
  export port and returns flows plus per-datagram header fields.
* :class:`Nfcapd` runs ``nfcapd`` on a free loopback port in a temporary
  directory; :meth:`Nfcapd.flows` stops it (which flushes its file) and
  reads the records back with ``nfdump -o raw``, the one nfdump output with
  millisecond start and end times in version 1.7.1 (its ``%ter`` format
  drops a digit).
* :func:`nfdump_decode` replays datagrams into a short-lived nfcapd and
  returns nfdump's JSON records, and :func:`tshark_fields` picks ``cflow``
  fields of every record out of tshark's JSON (:func:`to_pcap` writes the
  datagrams as a capture for it): the decoder's differential tests
  (``test_differential``) compare with these, as the fixtures were made.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from voipflow.collectors.pcapfile import write_pcap
from voipflow.netutil import free_port
from voipflow.schemas.flowbatch import text_to_addr16

#: 127.0.0.1 as the 16 bytes of an exporter address
LOOPBACK16 = text_to_addr16("127.0.0.1")

FLOW_KEYS = (
    "src_addr",
    "dst_addr",
    "src_port",
    "dst_port",
    "protocol",
    "tcp_flags",
    "tos",
    "packets",
    "bytes",
    "input_if",
    "output_if",
    "src_as",
    "dst_as",
    "flow_start_ms",
    "flow_end_ms",
)


def udp_rx_queue(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket bound to ``port``."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                total += int(cols[4].split(":")[1], 16)
    return total


def norm_addr(text: str) -> str:
    """Address text as Python prints it; IPv4-mapped IPv6 shown as IPv4."""
    ip = ipaddress.ip_address(text.strip())
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


# -- tshark -----------------------------------------------------------------

_TSHARK_HEADER = (
    "frame.number",
    "ip.src",
    "cflow.version",
    "cflow.count",
    "cflow.len",
    "cflow.sysuptime",
    "cflow.unix_secs",
    "cflow.unix_nsecs",
    "cflow.exporttime",
    "cflow.sequence",
    "cflow.source_id",
    "cflow.od_id",
    "cflow.engine_type",
    "cflow.engine_id",
    "cflow.samplingmode",
    "cflow.samplerate",
    "cflow.sampling_interval",
    "cflow.sampling_algorithm",
    "cflow.selector_id",
    "cflow.selector_algorithm",
    "cflow.sampling_packet_interval",
    "cflow.sampling_packet_space",
    "cflow.template_id",
    "_ws.expert.message",
)
_TSHARK_FLOW = (
    "cflow.srcaddr",
    "cflow.srcaddrv6",
    "cflow.dstaddr",
    "cflow.dstaddrv6",
    "cflow.srcport",
    "cflow.dstport",
    "cflow.protocol",
    "cflow.tcpflags",
    "cflow.tos",
    "cflow.packets",
    "cflow.octets",
    "cflow.inputint",
    "cflow.outputint",
    "cflow.srcas",
    "cflow.dstas",
    "cflow.timestart",
    "cflow.timeend",
    "cflow.abstimestart",
    "cflow.abstimeend",
)


def _int(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(text)


def _abs_ms(text: str) -> int:
    # "Nov 14, 2023 22:13:27.948000000 UTC" (TZ=UTC is forced)
    stamp, _, frac = text.replace(" UTC", "").partition(".")
    dt = datetime.strptime(stamp, "%b %d, %Y %H:%M:%S").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1000 + int((frac + "000")[:3])


def _rel_ms(text: str) -> int:
    secs, _, frac = text.partition(".")
    return int(secs) * 1000 + int((frac + "000")[:3])


def tshark_flows(pcap: Path, port: int) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(flows, datagram headers) decoded by tshark from export datagrams to ``port``.

    Each flow also carries ``exporter`` (the datagram's source address) and
    ``frame``. v5/v9 times are turned absolute the way collectors do it:
    boot = unix time of the header - sysUptime.
    """
    fields = _TSHARK_HEADER + _TSHARK_FLOW
    cmd = ["tshark", "-r", str(pcap), "-d", f"udp.port=={port},cflow", "-T", "fields"]
    cmd += ["-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=;"]
    for f in fields:
        cmd += ["-e", f]
    env = dict(os.environ, TZ="UTC")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    flows: list[dict[str, Any]] = []
    headers: list[dict[str, str]] = []
    for line in out.splitlines():
        cells = dict(zip(fields, line.split("\t"), strict=True))
        headers.append({k: cells[k] for k in _TSHARK_HEADER})
        lists = {k: cells[k].split(";") if cells[k] else [] for k in _TSHARK_FLOW}
        n = len(lists["cflow.packets"])
        if not n:
            continue
        src = lists["cflow.srcaddr"] or lists["cflow.srcaddrv6"]
        dst = lists["cflow.dstaddr"] or lists["cflow.dstaddrv6"]
        version = int(cells["cflow.version"])
        if version in (5, 9):
            boot = int(cells["cflow.unix_secs"]) * 1000 - _rel_ms(cells["cflow.sysuptime"])
            if version == 5:
                boot += int(cells["cflow.unix_nsecs"] or 0) // 1_000_000
            starts = [boot + _rel_ms(t) for t in lists["cflow.timestart"]]
            ends = [boot + _rel_ms(t) for t in lists["cflow.timeend"]]
        else:
            starts = [_abs_ms(t) for t in lists["cflow.abstimestart"]]
            ends = [_abs_ms(t) for t in lists["cflow.abstimeend"]]
        for i in range(n):
            flows.append(
                {
                    "frame": int(cells["frame.number"]),
                    "exporter": cells["ip.src"],
                    "src_addr": norm_addr(src[i]),
                    "dst_addr": norm_addr(dst[i]),
                    "src_port": _int(lists["cflow.srcport"][i]),
                    "dst_port": _int(lists["cflow.dstport"][i]),
                    "protocol": _int(lists["cflow.protocol"][i]),
                    "tcp_flags": _int(lists["cflow.tcpflags"][i]),
                    "tos": _int(lists["cflow.tos"][i]),
                    "packets": _int(lists["cflow.packets"][i]),
                    "bytes": _int(lists["cflow.octets"][i]),
                    "input_if": _int(lists["cflow.inputint"][i]),
                    "output_if": _int(lists["cflow.outputint"][i]),
                    "src_as": _int(lists["cflow.srcas"][i]),
                    "dst_as": _int(lists["cflow.dstas"][i]),
                    "flow_start_ms": starts[i],
                    "flow_end_ms": ends[i],
                }
            )
    return flows, headers


def to_pcap(datagrams: list[bytes], path: Path, port: int = 2055) -> Path:
    path.write_bytes(
        write_pcap(
            (1_000 * i, LOOPBACK16, 40000, LOOPBACK16, port, d) for i, d in enumerate(datagrams)
        )
    )
    return path


def tshark_fields(pcap: Path, fields: list[str], port: int = 2055) -> list[list[str]]:
    """One row per exported flow record: values of ``fields`` (cflow.*)."""
    cmd = ["tshark", "-r", str(pcap), "-d", f"udp.port=={port},cflow", "-T", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
    rows: list[list[str]] = []
    for pkt in json.loads(out.stdout):
        layer = pkt["_source"]["layers"].get("cflow", {})
        _flows(layer, fields, rows)
    return rows


def _flows(node: object, fields: list[str], rows: list[list[str]]) -> None:
    """Walk tshark's JSON tree; a dict holding the first field is one record."""
    if isinstance(node, dict):
        if fields[0] in node:
            rows.append([str(node.get(f, "")) for f in fields])
            return
        for v in node.values():
            _flows(v, fields, rows)
    elif isinstance(node, list):
        for v in node:
            _flows(v, fields, rows)


# -- nfdump -----------------------------------------------------------------

_RAW_KEYS = {
    "first": "flow_start_ms",
    "last": "flow_end_ms",
    "proto": "protocol",
    "tcp flags": "tcp_flags",
    "src port": "src_port",
    "dst port": "dst_port",
    "src tos": "tos",
    "in packets": "packets",
    "in bytes": "bytes",
    "src addr": "src_addr",
    "dst addr": "dst_addr",
    "input": "input_if",
    "output": "output_if",
    "src as": "src_as",
    "dst as": "dst_as",
    "ip exporter": "exporter",
    "engine type": "engine_type",
    "engine ID": "engine_id",
    "Flags": "flags",
}
_RAW_LINE = re.compile(r"^\s+([A-Za-z][A-Za-z ]*?)\s+=\s+(\S+)(.*)$")


def parse_nfdump_raw(text: str) -> list[dict[str, Any]]:
    """``nfdump -o raw`` output -> flow dicts (counters as nfdump stored them)."""
    flows: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for line in text.splitlines():
        if line.startswith("Flow Record"):
            cur = {}
            flows.append(cur)
            continue
        m = _RAW_LINE.match(line)
        if cur is None or not m or (m.group(1) not in _RAW_KEYS and m.group(1) != "ICMP"):
            continue
        if m.group(1) == "ICMP":  # "ICMP = 8.0  type.code" replaces the ports
            icmp_type, _, icmp_code = m.group(2).partition(".")
            cur["src_port"], cur["dst_port"] = 0, int(icmp_type) * 256 + int(icmp_code)
            continue
        key, value, rest = _RAW_KEYS[m.group(1)], m.group(2), m.group(3)
        if key in ("src_addr", "dst_addr", "exporter"):
            cur[key] = norm_addr(value)
        elif key == "flags":
            cur["sampled"] = "Sampled" in rest and "Unsampled" not in rest
        else:
            cur[key] = _int(value)
    for f in flows:
        # nfdump prints no AS or interface lines when the record has none
        for key in ("src_as", "dst_as", "input_if", "output_if"):
            f.setdefault(key, 0)
    return flows


class Nfcapd:
    """``nfcapd`` listening on a free 127.0.0.1 port, writing into ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("nfcapd") is None:
            raise RuntimeError("nfcapd is not installed (Debian package nfdump)")
        self.workdir = workdir
        self.flowdir = workdir / "flows"
        self.flowdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port("udp")
        self.log = workdir / "nfcapd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = ["nfcapd", "-b", "127.0.0.1", "-p", str(self.port), "-w", str(self.flowdir)]
        cmd += ["-t", "3600", "-B", str(8 * 1024 * 1024)]
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while b"Startup" not in self.log.read_bytes():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nfcapd did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def wait_drained(self, timeout: float = 20.0) -> None:
        """Wait until nfcapd has read every queued datagram (a stop drops them)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            quiet = quiet + 1 if udp_rx_queue(self.port) == 0 else 0
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def _files(self) -> list[str]:
        return sorted(str(p) for p in self.flowdir.glob("nfcapd.*") if p.name[7:8].isdigit())

    def flows(self) -> list[dict[str, Any]]:
        """Stop nfcapd and return every record it stored."""
        self.wait_drained()
        self.stop()
        files = self._files()
        if not files:
            return []
        out = subprocess.run(
            ["nfdump", "-N", "-q", "-o", "raw", "-R", str(self.flowdir)],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, TZ="UTC"),
        ).stdout
        return parse_nfdump_raw(out)

    def exporters(self) -> str:
        """``nfdump -E``: exporters, sequence failures and samplers it saw."""
        files = self._files()
        if not files:
            return ""
        return subprocess.run(
            ["nfdump", "-E", files[-1]], capture_output=True, text=True, check=True
        ).stdout

    def stats(self) -> str:
        """nfcapd's own log (sequence errors, bad packets) after :meth:`stop`."""
        return self.log.read_text()

    def __enter__(self) -> Nfcapd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def nfdump_decode(datagrams: list[bytes], tmp: Path, sampling: int | None = None) -> list[dict]:
    """Replay datagrams into nfcapd over loopback; nfdump's records as JSON objects.

    The port is free when chosen, but another test (or test run) on the
    machine may take it before nfcapd binds it: nfcapd then fails to start,
    or its port check would see the other program's socket and the
    datagrams would go there. So the replay waits until nfcapd's own
    process holds the port, and starts over on another port if it never
    does."""
    for _ in range(5):
        recs = _nfdump_decode_once(datagrams, tmp, sampling)
        if recs is not None:
            return recs
    raise AssertionError("nfcapd did not bind a free UDP port in 5 tries")


def _nfdump_decode_once(
    datagrams: list[bytes], tmp: Path, sampling: int | None
) -> list[dict] | None:
    outdir = tmp / f"nfcapd-{time.monotonic_ns()}"
    outdir.mkdir()
    port = free_port("udp")
    cmd = ["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(outdir), "-t", "3600"]
    if sampling:
        cmd += ["-s", str(sampling)]
    log = (outdir / "nfcapd.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _udp_bound_by(proc.pid, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                return None  # the port was taken first: another one
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i, d in enumerate(datagrams):
                tx.sendto(d, ("127.0.0.1", port))
                if i % 16 == 15:
                    time.sleep(0.002)  # keep within nfcapd's socket buffer
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    files = sorted(outdir.glob("nfcapd.2*"))
    assert files, f"nfcapd wrote no file: {(outdir / 'nfcapd.log').read_text()!r}"
    recs: list[dict] = []
    for f in files:
        out = subprocess.run(["nfdump", "-r", str(f), "-o", "json", "-q"], capture_output=True,
                             text=True, check=True, env={**os.environ, "TZ": "UTC"})  # fmt: skip
        text = out.stdout.strip()
        if text:
            recs.extend(json.loads(text if text.startswith("[") else f"[{text}]"))
    return recs


def _udp_bound_by(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a UDP socket bound to ``port`` (by the
    socket's inode in /proc/net/udp{,6} and among the process's fds)."""
    hexport = f"{port:04X}"
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as fh:
                for line in list(fh)[1:]:
                    cols = line.split()
                    if cols[1].endswith(":" + hexport):
                        inodes.add(f"socket:[{cols[9]}]")
        except OSError:
            continue
    if not inodes:
        return False
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) in inodes for fd in fds.iterdir())
    except OSError:  # the process ended, or an fd closed while read
        return False


def send_paced(
    datagrams: Iterable[bytes],
    port: int,
    source: str = "127.0.0.5",
    per_burst: int = 200,
) -> int:
    """Send datagrams to 127.0.0.1:``port`` from ``source``, yielding the CPU
    between bursts so a slower receiver on this machine drops nothing."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))
            sent += 1
            if sent % per_burst == 0:
                time.sleep(0.005)
    return sent
