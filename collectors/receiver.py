"""UDP receiving: sockets shared with SO_REUSEPORT, burst reads, kernel drops.

Only sockets live here; no decoding. A worker process opens one socket per
listen address (IPv4 and IPv6), all with SO_REUSEPORT so that several worker
processes share a port and the kernel spreads exporters over them (one
exporter's 4-tuple always hashes to the same socket while the set of sockets
stays the same).

Reading: after a wakeup a socket is drained without blocking, up to a burst
limit, so that the decoder sees many datagrams at once. Ways of reading were
measured with ``python -m benchmarks.recv_bench`` (CPU per 1400-byte
datagram, kept in bursts of 512): ``recvfrom(65535)`` 1.96 us,
``recvfrom_into`` a preallocated buffer 1.33 us with or without copying the
datagram out as ``bytes``, ``recvmsg`` 1.39 us, ``recvmmsg`` through ctypes
1.10 us. The collector reads with ``recvfrom_into`` straight into one big buffer,
datagram after datagram (:func:`drain_into`), which the decoder takes as
one frame: no ``bytes`` object per datagram and no join; what it keeps
(data waiting for its template) it copies. What ``recvmmsg`` would save
(about 8 ns per record at 30 records a datagram) does not pay for ctypes.

Kernel drops: the per-socket ``drops`` column of ``/proc/net/udp`` and
``/proc/net/udp6`` (datagrams the kernel discarded because the receive buffer
was full), found by the socket's inode and read once per report interval
rather than per datagram (``SO_RXQ_OVFL`` would need ``recvmsg`` with
ancillary data on every read).

Errors::

    ReceiverError        a listen address cannot be bound (in use, not local)
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

_recv: ModuleType | None
try:
    from voipflow.collectors import _recv  # type: ignore[attr-defined,no-redef]
except ImportError:  # not built (no C compiler at install): drain_into
    _recv = None

log = logging.getLogger(__name__)

#: Whether the compiled burst read (:func:`drain_senders`) was built.
COMPILED = _recv is not None

#: The largest UDP payload; every read asks for this much.
MAX_DATAGRAM = 65535

# Linux values; the socket module does not export them.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


class ReceiverError(OSError):
    """A listen address could not be opened; ``str()`` says which and why."""


@dataclass(slots=True)
class ListenSocket:
    """One bound, non-blocking UDP socket and what the kernel granted it."""

    sock: socket.socket
    host: str
    port: int
    rcvbuf_requested: int
    rcvbuf_granted: int
    inode: int

    @property
    def family(self) -> int:
        return int(self.sock.family)

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def _set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; return what the kernel granted.

    The kernel doubles the value it stores (half is bookkeeping) and reports
    the doubled figure, so the granted payload room is half of ``getsockopt``.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:  # not root / no CAP_NET_ADMIN: capped at net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2


def open_socket(host: str, port: int, rcvbuf_bytes: int, *, reuseport: bool = True) -> ListenSocket:
    """Bind one non-blocking UDP socket; raise :class:`ReceiverError` on failure."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # v6-only so that an IPv4 address can be bound alongside on the same port.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        granted = _set_rcvbuf(sock, rcvbuf_bytes)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        why = "port in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise ReceiverError(exc.errno, f"cannot listen on UDP {where}: {why}") from exc
    bound_port = sock.getsockname()[1]
    inode = os.fstat(sock.fileno()).st_ino
    return ListenSocket(sock, host, bound_port, rcvbuf_bytes, granted, inode)


def open_sockets(
    addresses: Iterable[tuple[str, int]], rcvbuf_bytes: int, *, reuseport: bool = True
) -> list[ListenSocket]:
    """Open every listen address; on a failure close the ones already open."""
    opened: list[ListenSocket] = []
    try:
        for host, port in addresses:
            opened.append(open_socket(host, port, rcvbuf_bytes, reuseport=reuseport))
    except ReceiverError:
        for ls in opened:
            ls.close()
        raise
    return opened


def check_free(addresses: Iterable[tuple[str, int]]) -> None:
    """Raise :class:`ReceiverError` if a listen address is taken by another program.

    Binding with SO_REUSEPORT succeeds next to this collector's own sockets
    (same user, same option) but fails next to a socket that did not set it,
    which is what "port in use" means for an operator.
    """
    for ls in open_sockets(addresses, 65536):
        ls.close()


def read_kernel_drops(inodes: Iterable[int], proc: Path = Path("/proc/net")) -> dict[int, int]:
    """Kernel drop counters of the sockets with these inodes (absent ones are omitted)."""
    wanted = {str(i) for i in inodes}
    found: dict[int, int] = {}
    for name in ("udp", "udp6"):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            if len(cols) >= 13 and cols[9] in wanted:
                found[int(cols[9])] = int(cols[12])
    return found


def drain(
    sock: socket.socket,
    buf: bytearray,
    limit: int,
    out: list[tuple[bytes, tuple[str, int]]],
) -> int:
    """Read up to ``limit`` datagrams that are already queued; return how many.

    Never blocks (the socket is non-blocking). Each datagram is read into
    ``buf`` (at least :data:`MAX_DATAGRAM` bytes) and copied out at its exact
    size, which is cheaper than ``recvfrom(65535)`` allocating 64 KiB each
    time. Errors other than "nothing left" (an ICMP error echoed on the
    socket, say) end the burst; they are no reason to stop receiving.
    """
    recv_into = sock.recvfrom_into
    append = out.append
    view = memoryview(buf)
    n = 0
    try:
        while n < limit:
            size, addr = recv_into(buf)
            append((view[:size].tobytes(), addr))
            n += 1
    except BlockingIOError:
        pass
    except OSError as exc:
        log.warning("udp receive error", extra={"error": str(exc)})
    return n


def drain_senders(
    sock: socket.socket,
    view: memoryview,
    pos: int,
    limit: int,
    sizes: list[int],
    senders: list[bytes],
) -> int:
    """:func:`drain_into` with the compiled burst read (``collectors/_recv.c``;
    check :data:`COMPILED` first): no Python step per datagram, and each
    sender comes back as its 16-byte address (what the decoder keys
    exporters by) instead of text. Consecutive datagrams of one sender share
    one ``bytes`` object."""
    assert _recv is not None
    pos, err = _recv.recv_burst(sock.fileno(), view, pos, limit, MAX_DATAGRAM, sizes, senders)
    if err:
        log.warning("udp receive error", extra={"error": os.strerror(err)})
    return int(pos)


def drain_into(
    sock: socket.socket,
    view: memoryview,
    pos: int,
    limit: int,
    sizes: list[int],
    hosts: list[str],
) -> int:
    """Like :func:`drain`, but each datagram lands in ``view`` right after the
    one before (from ``pos`` on): the decoder takes them as one buffer
    (:class:`voipflow.collectors.codec.frame.Frame`) without a ``bytes`` object each or a
    join. Stops when fewer than :data:`MAX_DATAGRAM` bytes are left, so no
    datagram is ever cut. Appends each size and sender address; returns
    the position after the last.
    """
    recv_into = sock.recvfrom_into
    end = len(view) - MAX_DATAGRAM
    n = 0
    try:
        while n < limit and pos <= end:
            size, addr = recv_into(view[pos:], MAX_DATAGRAM)
            sizes.append(size)
            hosts.append(addr[0])
            pos += size
            n += 1
    except BlockingIOError:
        pass
    except OSError as exc:
        log.warning("udp receive error", extra={"error": str(exc)})
    return pos
