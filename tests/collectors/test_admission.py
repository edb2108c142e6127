"""Admission: the exporter allowlist and the per-exporter token bucket."""

from __future__ import annotations

import ipaddress

from voipflow.collectors.admission import NOT_ALLOWED, RATE_LIMITED, Admission
from voipflow.collectors.config import split_networks


def test_open_admission_admits_everyone_and_counts_nothing() -> None:
    adm = Admission([])
    assert adm.open
    assert all(adm.admit(f"192.0.2.{i}", 0.0) for i in range(50))
    assert adm.take_refused() == {}


def test_allowlist_refuses_others_by_exporter_and_reason() -> None:
    adm = Admission(split_networks("192.0.2.0/24, 2001:db8::/32, 198.51.100.7"))
    assert not adm.open
    assert adm.admit("192.0.2.200", 0.0)
    assert adm.admit("2001:db8::1", 0.0)
    assert adm.admit("198.51.100.7", 0.0)
    assert not adm.admit("198.51.100.8", 0.0)
    assert not adm.admit("198.51.100.8", 0.1)
    assert not adm.admit("2001:db9::1", 0.1)
    # An IPv4 exporter seen through a dual-stack socket is matched as IPv4.
    assert adm.admit("::ffff:192.0.2.9", 0.2)
    assert adm.take_refused() == {
        ("198.51.100.8", NOT_ALLOWED): 2,
        ("2001:db9::1", NOT_ALLOWED): 1,
    }
    assert adm.take_refused() == {}


def test_rate_limit_passes_the_rate_and_refuses_the_excess_per_exporter() -> None:
    adm = Admission([], rate_pps=100.0, burst=10.0)
    # A burst of 50 at one instant: the bucket holds 10.
    passed = sum(adm.admit("192.0.2.1", 5.0) for _ in range(50))
    assert passed == 10
    # Another exporter has its own bucket.
    assert sum(adm.admit("192.0.2.2", 5.0) for _ in range(12)) == 10
    # Over 2 s at 1000 packets/s offered, about 100/s are admitted.
    t, admitted = 5.0, 0
    for _ in range(2000):
        t += 0.001
        admitted += adm.admit("192.0.2.1", t)
    assert 195 <= admitted <= 205
    refused = adm.take_refused()
    assert refused[("192.0.2.1", RATE_LIMITED)] == 50 - 10 + 2000 - admitted
    assert refused[("192.0.2.2", RATE_LIMITED)] == 2


def test_allowlist_and_rate_limit_together() -> None:
    adm = Admission([ipaddress.ip_network("10.0.0.0/8")], rate_pps=1.0, burst=1.0)
    assert adm.admit("10.1.2.3", 0.0)
    assert not adm.admit("10.1.2.3", 0.5)
    assert adm.admit("10.1.2.3", 1.6)
    assert not adm.admit("11.0.0.1", 2.0)
    assert adm.take_refused() == {("10.1.2.3", RATE_LIMITED): 1, ("11.0.0.1", NOT_ALLOWED): 1}
