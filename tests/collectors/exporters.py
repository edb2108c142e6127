"""Real exporters for the collector tests.

softflowd and pmacctd (nfprobe plugin) read a capture and export NetFlow/IPFIX
to a UDP socket of the test, which keeps the raw datagrams. Every process
runs in a temp dir on free ports and is stopped here. The reference decoders
the datagrams are compared with (nfdump, tshark) are in
:mod:`tests.collectors.reference_decoders`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


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
