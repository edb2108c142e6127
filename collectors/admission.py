"""Admission of export packets: exporter allowlist and per-exporter rate limit.

Runs per datagram before decoding, so it is a dictionary lookup and a few
float operations per datagram, with the allowlist decision cached per source
address. Refusals are counted by exporter and reason; the counts are read
and reset by the metrics and health reporting, not logged per packet.

Reasons: ``not_allowed`` (source outside ``collector.allow``),
``rate_limited`` (the exporter's token bucket is empty).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

NOT_ALLOWED = "not_allowed"
RATE_LIMITED = "rate_limited"

#: Sources remembered at most; past it the cache starts over (a spoofed flood
#: must not grow memory without bound).
MAX_TRACKED = 65536

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Exporter:
    __slots__ = ("allowed", "last", "tokens")

    def __init__(self, allowed: bool, tokens: float, now: float) -> None:
        self.allowed = allowed
        self.tokens = tokens
        self.last = now


class Admission:
    """Decide per datagram whether its exporter may send it.

    ``allow`` empty admits every source; ``rate_pps`` 0 disables the rate
    limit. ``burst`` is the bucket size in packets (0: one second's worth).
    """

    def __init__(self, allow: Sequence[Network], rate_pps: float = 0.0, burst: float = 0.0) -> None:
        self._allow = list(allow)
        self._rate = float(rate_pps)
        self._burst = float(burst) if burst > 0 else max(1.0, float(rate_pps))
        self._known: dict[str, _Exporter] = {}
        #: (exporter text, reason) -> refused datagrams since the last :meth:`take_refused`.
        self.refused: dict[tuple[str, str], int] = {}

    @property
    def open(self) -> bool:
        """True when nothing is ever refused (admission can be skipped)."""
        return not self._allow and self._rate <= 0

    def _allowed(self, host: str) -> bool:
        if not self._allow:
            return True
        try:
            addr = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._allow)

    def admit(self, host: str, now: float) -> bool:
        """True if a datagram from ``host`` (address text) at ``now`` (seconds) passes."""
        ex = self._known.get(host)
        if ex is None:
            if len(self._known) >= MAX_TRACKED:
                self._known.clear()
            ex = self._known[host] = _Exporter(self._allowed(host), self._burst, now)
        if not ex.allowed:
            self._count(host, NOT_ALLOWED)
            return False
        if self._rate > 0:
            tokens = ex.tokens + (now - ex.last) * self._rate
            ex.last = now
            if tokens > self._burst:
                tokens = self._burst
            if tokens < 1.0:
                ex.tokens = tokens
                self._count(host, RATE_LIMITED)
                return False
            ex.tokens = tokens - 1.0
        return True

    def _count(self, host: str, reason: str) -> None:
        key = (host, reason)
        self.refused[key] = self.refused.get(key, 0) + 1

    def take_refused(self) -> dict[tuple[str, str], int]:
        """Refusals counted since the previous call (and reset them)."""
        out, self.refused = self.refused, {}
        return out
