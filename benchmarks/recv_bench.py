"""How to read UDP datagrams in Python: CPU cost per datagram of each way.

Fills a socket's receive buffer over loopback with datagrams of a typical
IPFIX export size, then drains it with each method and reports the
process CPU time per datagram (median of several rounds)::

    python -m benchmarks.recv_bench [--size 1400] [--count 20000] [--rounds 7]

Methods: ``recvfrom`` (a new bytes object per datagram), ``recvfrom_into`` a
preallocated buffer (memoryview slices), ``recvmsg`` (what ``SO_RXQ_OVFL``
would need) and ``recvmmsg`` through ctypes (one system call per 64).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import socket
import statistics
import time
from collections.abc import Callable

from voipflow.collectors.receiver import MAX_DATAGRAM, drain


def _fill(rx: socket.socket, tx: socket.socket, count: int, payload: bytes) -> int:
    addr = rx.getsockname()
    sent = 0
    for _ in range(count):
        try:
            tx.sendto(payload, addr)
            sent += 1
        except BlockingIOError:
            break
    return sent


def _m_recvfrom(sock: socket.socket, n: int) -> int:
    # Kept in bursts of 512 like the collector does, so that memory is
    # retained as it is when a decoder gets the datagrams.
    recv = sock.recvfrom
    got = 0
    out = []
    try:
        while got < n:
            out.append(recv(MAX_DATAGRAM))
            got += 1
            if len(out) == 512:
                out.clear()
    except BlockingIOError:
        pass
    return got


def _m_recvfrom_into(sock: socket.socket, n: int) -> int:
    buf = bytearray(MAX_DATAGRAM * 64)
    mv = memoryview(buf)
    got = 0
    recv_into = sock.recvfrom_into
    while got < n:
        off = 0
        views = []
        try:
            for _ in range(64):
                size, addr = recv_into(mv[off : off + MAX_DATAGRAM])
                views.append((mv[off : off + size], addr))
                off += size
        except BlockingIOError:
            pass
        if not views:
            break
        got += len(views)
    return got


def _m_recvfrom_into_copy(sock: socket.socket, n: int) -> int:
    out: list[tuple[bytes, tuple[str, int]]] = []
    buf = bytearray(MAX_DATAGRAM)
    got = 0
    while got < n:
        k = drain(sock, buf, 512, out)
        if not k:
            break
        got += k
        out.clear()
    return got


def _m_recvmsg(sock: socket.socket, n: int) -> int:
    got = 0
    recvmsg = sock.recvmsg
    space = socket.CMSG_SPACE(4)
    try:
        while got < n:
            recvmsg(MAX_DATAGRAM, space)
            got += 1
    except BlockingIOError:
        pass
    return got


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


def _m_recvmmsg(sock: socket.socket, n: int) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    vlen = 64
    bufs = (ctypes.c_char * (MAX_DATAGRAM * vlen))()
    names = (ctypes.c_char * (128 * vlen))()
    iovs = (_IoVec * vlen)()
    msgs = (_MMsgHdr * vlen)()
    base = ctypes.addressof(bufs)
    nbase = ctypes.addressof(names)
    for i in range(vlen):
        iovs[i].iov_base = base + i * MAX_DATAGRAM
        iovs[i].iov_len = MAX_DATAGRAM
        msgs[i].msg_hdr.msg_iov = ctypes.pointer(iovs[i])
        msgs[i].msg_hdr.msg_iovlen = 1
        msgs[i].msg_hdr.msg_name = nbase + i * 128
    fd = sock.fileno()
    got = 0
    raw = memoryview(bufs).cast("B")
    while got < n:
        for i in range(vlen):
            msgs[i].msg_hdr.msg_namelen = 128
        k = libc.recvmmsg(fd, msgs, vlen, 0x40, None)  # MSG_DONTWAIT
        if k <= 0:
            break
        # Materialise what a decoder would get: the bytes and the source.
        for i in range(k):
            off = i * MAX_DATAGRAM
            bytes(raw[off : off + msgs[i].msg_len])
            names[i * 128 : i * 128 + 8]
        got += k
    return got


METHODS: dict[str, Callable[[socket.socket, int], int]] = {
    "recvfrom": _m_recvfrom,
    "recvfrom_into": _m_recvfrom_into,
    "recvfrom_into+copy": _m_recvfrom_into_copy,
    "recvmsg": _m_recvmsg,
    "recvmmsg(ctypes)": _m_recvmmsg,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    payload = bytes(range(256)) * (args.size // 256) + b"x" * (args.size % 256)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, 33, 256 * 1024 * 1024)  # SO_RCVBUFFORCE (root)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    print(f"{'method':<20} {'ns/datagram (CPU)':>18} {'datagrams':>10}")
    for name, method in METHODS.items():
        per: list[float] = []
        got = 0
        for _ in range(args.rounds):
            sent = _fill(rx, tx, args.count, payload)
            t0 = time.process_time_ns()
            got = method(rx, sent)
            per.append((time.process_time_ns() - t0) / max(got, 1))
        print(f"{name:<20} {statistics.median(per):>18.0f} {got:>10}")


if __name__ == "__main__":
    main()
