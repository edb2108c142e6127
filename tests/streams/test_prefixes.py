"""Longest-prefix match against a brute-force ``ipaddress`` reference."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipflow.schemas.flowbatch import text_to_addr16
from voipflow.streams.prefixes import PrefixError, PrefixTable, parse_prefix_lines

# Prefixes drawn from a small space so that nesting and adjacency are common.
v4_nets = st.builds(
    lambda a, n: ipaddress.ip_network((0x0A000000 | (a & 0x0F0FFF), n), strict=False),
    st.integers(0, 2**24 - 1),
    st.integers(4, 32),
)
v6_nets = st.builds(
    lambda a, n: ipaddress.ip_network(((0x20010DB8 << 96) | (a << 64), n), strict=False),
    st.integers(0, 255),
    st.integers(32, 128),
)

# IPv6 prefixes whose high 64 bits are zero, as IPv4-mapped addresses have
# (the lookup searches those by their low 64 bits): ::a.b.c.d/96-128.
v6_low_nets = st.builds(
    lambda a, n: ipaddress.ip_network((0x0A000000 | (a & 0x0F0FFF), n), strict=False),
    st.integers(0, 2**24 - 1),
    st.integers(96, 128),
)


def brute(nets: list[tuple[ipaddress._BaseNetwork, int]], addr: str) -> int:
    ip = ipaddress.ip_address(addr)
    best, best_len = -1, -1
    for net, val in nets:
        if ip.version == net.version and ip in net and net.prefixlen >= best_len:
            best, best_len = val, net.prefixlen
    return best


def _addrs(nets: list[ipaddress._BaseNetwork], extra: list[str]) -> list[str]:
    out = list(extra)
    for net in nets:  # the edges of every prefix and their neighbours
        cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
        top = 2**32 - 1 if net.version == 4 else 2**128 - 1
        first, last = int(net.network_address), int(net.broadcast_address)
        out += [str(cls(v)) for v in (first - 1, first, last, last + 1) if 0 <= v <= top]
    return out


@settings(max_examples=150, deadline=None)
@given(
    nets=st.lists(st.one_of(v4_nets, v6_nets, v6_low_nets), max_size=25),
    probes=st.lists(st.integers(0, 2**32 - 1), max_size=20),
)
def test_lookup_matches_brute_force(nets: list, probes: list[int]) -> None:
    # Later duplicates win in both the table and the reference.
    items = [(net, i) for i, net in enumerate(nets)]
    dedup: dict[ipaddress._BaseNetwork, int] = {}
    for net, i in items:
        dedup[net] = i
    table = PrefixTable.build([(str(n), v) for n, v in items])
    probe_addrs = [str(ipaddress.IPv4Address(p)) for p in probes]
    probe_addrs += [str(ipaddress.IPv6Address(p)) for p in probes]  # ::a.b.c.d
    addrs = _addrs(nets, [*probe_addrs, "::", "0.0.0.0"])
    got = table.lookup(np.array([text_to_addr16(a) for a in addrs], dtype="S16"))
    want = [brute(list(dedup.items()), a) for a in addrs]
    assert got.tolist() == want


def test_nested_prefixes_resolve_to_the_longest() -> None:
    table = PrefixTable.build(
        [("10.0.0.0/8", 1), ("10.1.0.0/16", 2), ("10.1.2.0/24", 3), ("10.1.2.128/25", 4)]
    )
    addrs = ["10.9.9.9", "10.1.9.9", "10.1.2.1", "10.1.2.200", "10.1.3.0", "11.0.0.0"]
    got = table.lookup(np.array([text_to_addr16(a) for a in addrs], dtype="S16"))
    assert got.tolist() == [1, 2, 3, 4, 2, -1]


def test_ipv4_does_not_match_ipv6_prefix_of_same_bits() -> None:
    table = PrefixTable.build([("::/1", 7)])  # IPv4-mapped addresses start with zeros
    got = table.lookup(np.array([text_to_addr16("10.0.0.1")], dtype="S16"))
    # ::ffff:10.0.0.1 lies in ::/1 numerically; the mapped form is the contract's
    # representation, so an IPv6 ::/1 entry does cover it: documented behaviour.
    assert got.tolist() == [7]
    assert PrefixTable.build([("8000::/1", 7)]).lookup(
        np.array([text_to_addr16("10.0.0.1")], dtype="S16")
    ).tolist() == [-1]


def test_bad_prefix_is_named() -> None:
    with pytest.raises(PrefixError, match=r"10\.0\.0\.300"):
        PrefixTable.build([("10.0.0.300/8", 1)])


def test_empty_table_and_comment_lines() -> None:
    assert PrefixTable.empty().lookup(np.zeros(3, "S16")).tolist() == [-1, -1, -1]
    assert parse_prefix_lines("# c\n10.0.0.0/8 # x\n\n  2001:db8::/32\n") == [
        "10.0.0.0/8",
        "2001:db8::/32",
    ]
