"""The one free-port helper and the one log tail, on real sockets and files."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from voipflow.logs import tail
from voipflow.netutil import free_port


@pytest.mark.parametrize(
    ("kind", "sock_type"), [("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)]
)
def test_free_port_can_be_bound_by_its_kind(kind: str, sock_type: int) -> None:
    port = free_port(kind)  # type: ignore[arg-type]
    assert 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, sock_type) as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname()[1] == port


def test_free_port_on_ipv6_loopback() -> None:
    port = free_port("udp", "::1")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", port))


def test_free_port_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="tcp or udp"):
        free_port("sctp")  # type: ignore[arg-type]


def test_tail_gives_the_last_lines_or_says_why_there_are_none(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))  # more than 64 KiB
    assert tail(log, 3) == "line 99997\nline 99998\nline 99999"
    (tmp_path / "empty.log").write_text("")
    assert tail(tmp_path / "empty.log") == "(the log is empty)"
    assert tail(tmp_path / "missing.log") == "(no log)"
