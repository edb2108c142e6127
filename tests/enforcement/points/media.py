"""A tiny RTP-like UDP stream for the namespace tests: ``send`` and ``receive``.

``send HOST PORT PPS`` (IPv4 or IPv6 HOST) sends 172-byte datagrams (a G.711 packet with its RTP
header) at PPS per second until killed. ``receive PORT FILE [BIND]`` counts the
datagrams it gets and rewrites FILE with the count every 50 ms.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time


def send(host: str, port: int, pps: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    payload = b"\x80" + bytes(171)
    gap = 1.0 / pps
    nxt = time.monotonic()
    while True:
        with contextlib.suppress(OSError):  # a dropped route must not end the stream
            sock.sendto(payload, (host, port))
        nxt += gap
        time.sleep(max(0.0, nxt - time.monotonic()))


def receive(port: int, path: str, bind: str = "0.0.0.0") -> None:
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    sock.settimeout(0.05)
    count = 0
    last = 0.0
    while True:
        try:
            sock.recv(2048)
            count += 1
        except TimeoutError:
            pass
        now = time.monotonic()
        if now - last >= 0.05:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                f.write(str(count))
            os.replace(tmp, path)
            last = now


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        receive(int(sys.argv[2]), sys.argv[3], *sys.argv[4:5])
