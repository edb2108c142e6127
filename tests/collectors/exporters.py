"""Real exporters and reference decoders for the collector tests.

softflowd and pmacctd (nfprobe plugin) read a capture and export NetFlow/IPFIX
to a UDP socket of the test, which keeps the raw datagrams; nfcapd receives
the same datagrams replayed over loopback and nfdump decodes them; tshark
decodes a pcap of them. Every process runs in a temp dir on free ports and is
stopped here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from collectors.pcapfile import write_pcap
from schemas.flowbatch import text_to_addr16
from voipflow.netutil import free_port

LOOPBACK16 = text_to_addr16("127.0.0.1")


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def _receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    return s


def _drain(
    s: socket.socket, proc: subprocess.Popen[bytes], done: object, deadline_s: float
) -> list[bytes]:
    """Receive until the exporter has exited and the socket stayed quiet."""
    out: list[bytes] = []
    t0 = time.monotonic()
    quiet_since: float | None = None
    while time.monotonic() - t0 < deadline_s:
        try:
            out.append(s.recv(65535))
            quiet_since = None
            continue
        except TimeoutError:
            pass
        if callable(done):
            done()
        if proc.poll() is not None:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.6:
                return out
    proc.kill()
    proc.wait()
    raise TimeoutError(f"exporter {proc.args!r} did not finish in {deadline_s}s")


def softflowd_export(pcap: Path, version: str, tmp: Path, *extra: str) -> list[bytes]:
    """Datagrams softflowd exports for ``pcap``.

    Not ``-a``: that replays the capture at its own pace. Without it
    softflowd's uptime clock starts with the process, so record times are
    not the capture's, but they are the same bytes for every decoder.
    """
    s = _receiver()
    port = s.getsockname()[1]
    ctl = tmp / f"softflowd-{port}.ctl"
    cmd = ["softflowd", "-r", str(pcap.resolve()), "-n", f"127.0.0.1:{port}", "-v", version,
           "-d", "-c", str(ctl), "-p", str(tmp / f"softflowd-{port}.pid"), *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state: dict[str, int | bool] = {"sent": False, "processed": -1}

    def shutdown_when_read() -> None:
        # With -r softflowd sits in its poll loop and reads the capture as
        # control commands wake it: ask for statistics until the packet
        # count stops growing, then a shutdown expires and exports every flow.
        if state["sent"] or not ctl.exists():
            return
        out = subprocess.run(["softflowctl", "-c", str(ctl), "statistics"], capture_output=True,
                             text=True, timeout=10, check=False)  # fmt: skip
        processed = -1
        for line in out.stdout.splitlines():
            if line.startswith("Packets processed:"):
                processed = int(line.split(":")[1].split()[0])
        if processed <= 0 or processed != state["processed"]:
            state["processed"] = processed
            return
        subprocess.run(["softflowctl", "-c", str(ctl), "shutdown"], capture_output=True,
                       timeout=10, check=False)  # fmt: skip
        state["sent"] = True

    try:
        return _drain(s, proc, shutdown_when_read, 120)
    finally:
        s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def pmacct_export(pcap: Path, version: int, tmp: Path) -> list[bytes]:
    """Datagrams pmacctd's nfprobe plugin exports for ``pcap`` (exits at end of file)."""
    s = _receiver()
    port = s.getsockname()[1]
    cfg = tmp / f"pmacctd-{port}.conf"
    cfg.write_text(
        "daemonize: false\n"
        f"pcap_savefile: {pcap.resolve()}\n"
        "plugins: nfprobe\n"
        f"nfprobe_receiver: 127.0.0.1:{port}\n"
        f"nfprobe_version: {version}\n"
        "aggregate: src_host, dst_host, src_port, dst_port, proto, tos, tcpflags\n"
    )
    proc = subprocess.Popen(["pmacctd", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        return _drain(s, proc, None, 120)
    finally:
        s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def nfdump_decode(datagrams: list[bytes], tmp: Path, sampling: int | None = None) -> list[dict]:
    """Replay datagrams into nfcapd over loopback; nfdump's records as JSON objects."""
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
        while time.monotonic() < deadline and not _udp_bound(port):
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


def _udp_bound(port: int) -> bool:
    hexport = f"{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as fh:
                if any(line.split()[1].endswith(":" + hexport) for line in list(fh)[1:]):
                    return True
        except OSError:
            continue
    return False


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
