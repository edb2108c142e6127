"""UDP receiving: SO_REUSEPORT sockets, granted buffers, burst reads, kernel drops."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from voipflow.collectors.codec.frame import Frame
from voipflow.collectors.receiver import (
    COMPILED,
    MAX_DATAGRAM,
    ReceiverError,
    check_free,
    drain,
    drain_into,
    drain_senders,
    open_socket,
    open_sockets,
    read_kernel_drops,
)
from voipflow.schemas.flowbatch import text_to_addr16


def _send(port: int, payloads: list[bytes], family: int = socket.AF_INET) -> None:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_DGRAM) as tx:
        for p in payloads:
            tx.sendto(p, (host, port))


def _drain_all(ls_sock: socket.socket, want: int) -> list[tuple[bytes, tuple[str, int]]]:
    out: list[tuple[bytes, tuple[str, int]]] = []
    buf = bytearray(MAX_DATAGRAM)
    deadline = time.monotonic() + 5
    while len(out) < want and time.monotonic() < deadline:
        if not drain(ls_sock, buf, 64, out):
            time.sleep(0.01)
    return out


def test_ipv4_and_ipv6_on_one_port_and_burst_reads_keep_every_datagram() -> None:
    v4 = open_socket("127.0.0.1", 0, 1 << 20)
    try:
        v6 = open_socket("::1", v4.port, 1 << 20)
    except ReceiverError:
        v4.close()
        pytest.skip("no IPv6 loopback on this machine")
    try:
        payloads = [bytes([i]) * (100 + i) for i in range(200)]
        payloads.append(b"J" * 60000)  # a jumbo datagram arrives whole
        _send(v4.port, payloads)
        _send(v4.port, [b"six"], socket.AF_INET6)
        got = _drain_all(v4.sock, len(payloads))
        assert [d for d, _ in got] == payloads
        assert {a[0] for _, a in got} == {"127.0.0.1"}
        got6 = _drain_all(v6.sock, 1)
        assert got6[0][0] == b"six" and got6[0][1][0] == "::1"
        assert v6.label == f"[::1]:{v4.port}"
    finally:
        v4.close()
        v6.close()


def test_drain_stops_at_the_limit_and_when_empty() -> None:
    ls = open_socket("127.0.0.1", 0, 1 << 20)
    try:
        _send(ls.port, [b"x"] * 10)
        time.sleep(0.05)
        out: list[tuple[bytes, tuple[str, int]]] = []
        buf = bytearray(MAX_DATAGRAM)
        assert drain(ls.sock, buf, 4, out) == 4
        assert drain(ls.sock, buf, 100, out) == 6
        assert drain(ls.sock, buf, 100, out) == 0
        assert len(out) == 10
    finally:
        ls.close()


def test_drain_into_lays_datagrams_back_to_back_and_never_cuts_one() -> None:
    ls = open_socket("127.0.0.1", 0, 8 << 20)
    try:
        payloads = [bytes([i]) * (100 + 7 * i) for i in range(50)] + [b"J" * 60000] * 3
        _send(ls.port, payloads)
        time.sleep(0.05)
        buf = bytearray(2 * MAX_DATAGRAM + 5000)  # room for the small ones and one jumbo
        view = memoryview(buf)
        sizes: list[int] = []
        hosts: list[str] = []
        pos = drain_into(ls.sock, view, 0, 1000, sizes, hosts)
        assert sizes == [len(p) for p in payloads[:51]] and pos == sum(sizes)
        assert set(hosts) == {"127.0.0.1"}
        frame = Frame.received(buf, sizes)
        assert [bytes(frame.view(i)) for i in range(len(sizes))] == payloads[:51]
        # the rest stays queued for the next read
        sizes2: list[int] = []
        assert drain_into(ls.sock, view, 0, 1000, sizes2, []) == 120000
        assert sizes2 == [60000, 60000]
    finally:
        ls.close()


@pytest.mark.skipif(not COMPILED, reason="the compiled burst read is not built")
def test_compiled_read_is_drain_into_with_16_byte_senders() -> None:
    """The compiled burst read lays datagrams out as drain_into does, stops
    at the limit and before a jumbo that would not fit, and names each
    sender by its 16-byte address (IPv4 mapped, IPv6 as is)."""
    ls = open_socket("127.0.0.1", 0, 8 << 20)
    try:
        payloads = [bytes([i]) * (100 + 7 * i) for i in range(50)] + [b"J" * 60000] * 3
        _send(ls.port, payloads)
        time.sleep(0.05)
        buf = bytearray(2 * MAX_DATAGRAM + 5000)
        view = memoryview(buf)
        sizes: list[int] = []
        senders: list[bytes] = []
        assert drain_senders(ls.sock, view, 0, 10, sizes, senders) == sum(sizes)
        assert sizes == [len(p) for p in payloads[:10]]
        pos = drain_senders(ls.sock, view, sum(sizes), 1000, sizes, senders)
        assert sizes == [len(p) for p in payloads[:51]] and pos == sum(sizes)
        assert set(senders) == {text_to_addr16("127.0.0.1")}
        frame = Frame.received(buf, sizes)
        assert [bytes(frame.view(i)) for i in range(len(sizes))] == payloads[:51]
        sizes2: list[int] = []
        assert drain_senders(ls.sock, view, 0, 1000, sizes2, []) == 120000
        assert drain_senders(ls.sock, view, 0, 1000, sizes2, []) == 0  # empty: no error
    finally:
        ls.close()
    try:
        v6 = open_socket("::1", 0, 1 << 20)
    except ReceiverError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        _send(v6.port, [b"six"], socket.AF_INET6)
        time.sleep(0.05)
        senders = []
        drain_senders(v6.sock, memoryview(bytearray(2 * MAX_DATAGRAM)), 0, 8, [], senders)
        assert senders == [text_to_addr16("::1")]
    finally:
        v6.close()


@pytest.mark.skipif(not COMPILED, reason="the compiled burst read is not built")
def test_compiled_read_keeps_order_and_senders_of_interleaved_exporters() -> None:
    """Hundreds of datagrams of many sizes from two senders, read in two
    calls: the frame holds them back to back, whole, in order, each with
    its own sender (a new bytes object only where the sender changes)."""
    ls = open_socket("127.0.0.1", 0, 16 << 20)
    txs = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        txs[1].bind(("127.0.0.2", 0))
        sent = []
        for i in range(700):
            payload = i.to_bytes(2, "big") * (1 + (i * 37) % 700)  # 2 to 1400 bytes
            txs[i % 3 == 0].sendto(payload, ("127.0.0.1", ls.port))
            sent.append((payload, "127.0.0.2" if i % 3 == 0 else "127.0.0.1"))
        time.sleep(0.1)
        buf = bytearray(200 * MAX_DATAGRAM)
        view = memoryview(buf)
        sizes: list[int] = []
        senders: list[bytes] = []
        pos = drain_senders(ls.sock, view, 0, 300, sizes, senders)
        pos = drain_senders(ls.sock, view, pos, 1000, sizes, senders)
        assert len(sizes) == 700 and pos == sum(sizes)
        frame = Frame.received(buf, sizes)
        assert [bytes(frame.view(i)) for i in range(700)] == [p for p, _ in sent]
        assert senders == [text_to_addr16(a) for _, a in sent]
        assert drain_senders(ls.sock, view, 0, 1000, [], []) == 0  # empty: no error
    finally:
        for tx in txs:
            tx.close()
        ls.close()


def test_reuseport_shares_a_port_between_sockets_and_spreads_senders() -> None:
    a = open_socket("127.0.0.1", 0, 1 << 20)
    b = open_socket("127.0.0.1", a.port, 1 << 20)
    try:
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
        for i, s in enumerate(senders):
            s.sendto(bytes([i]), ("127.0.0.1", a.port))
        time.sleep(0.05)
        out_a: list[tuple[bytes, tuple[str, int]]] = []
        out_b: list[tuple[bytes, tuple[str, int]]] = []
        buf = bytearray(MAX_DATAGRAM)
        drain(a.sock, buf, 100, out_a)
        drain(b.sock, buf, 100, out_b)
        assert len(out_a) + len(out_b) == 16
        # 16 source ports hash to both sockets (a miss has odds 2 * 2**-16).
        assert out_a and out_b
        for s in senders:
            s.close()
    finally:
        a.close()
        b.close()


def test_receive_buffer_granted_is_reported() -> None:
    ls = open_socket("127.0.0.1", 0, 8 << 20)
    try:
        assert ls.rcvbuf_requested == 8 << 20
        # As root SO_RCVBUFFORCE grants it; otherwise net.core.rmem_max caps it.
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        assert ls.rcvbuf_granted in (8 << 20, min(8 << 20, rmem_max))
    finally:
        ls.close()


def test_port_held_by_another_program_is_reported_in_use() -> None:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEPORT
    other.bind(("127.0.0.1", 0))
    port = other.getsockname()[1]
    try:
        with pytest.raises(ReceiverError, match="port in use"):
            check_free([("127.0.0.1", port)])
        with pytest.raises(ReceiverError, match=f"127.0.0.1:{port}"):
            open_sockets([("127.0.0.1", port)], 1 << 20)
    finally:
        other.close()
    # Next to the collector's own sockets (SO_REUSEPORT) the check passes.
    own = open_socket("127.0.0.1", 0, 1 << 20)
    try:
        check_free([("127.0.0.1", own.port)])
    finally:
        own.close()


def test_kernel_drops_of_a_full_socket_are_read_from_proc() -> None:
    ls = open_socket("127.0.0.1", 0, 65536)
    try:
        assert read_kernel_drops([ls.inode]) == {ls.inode: 0}
        # Nobody reads: a small buffer overflows and the kernel counts drops.
        _send(ls.port, [b"z" * 1400] * 2000)
        drops = read_kernel_drops([ls.inode])[ls.inode]
        assert drops > 0
        out: list[tuple[bytes, tuple[str, int]]] = []
        drain(ls.sock, bytearray(MAX_DATAGRAM), 10000, out)
        assert len(out) + drops == 2000
    finally:
        ls.close()
    assert read_kernel_drops([ls.inode]) == {}
