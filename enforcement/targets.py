"""What a rule matches on the wire: a policy's target resolved for one city and app.

The four kinds of target come from the data the classifier already uses, so a
rule hits what the measurement counted:

* ``provider_ranges``: the address ranges of the app's provider files
  (``data/providers``, :mod:`voipflow.streams.providers`), any protocol, any port;
* ``observed_peers``: the peers seen in the city's VoIP flows of the app
  (voip-flows, whatever their role), each kept for ``VOIPFLOW_EVALUATOR_PEER_TIMEOUT_S`` after it
  was last seen (:class:`PeerSet`), as /32 or /128 prefixes;
* ``app_ports``: the app's signalling and media ports from the classifier's
  port tables, on the city's subscriber prefixes (a port-only rule would
  apply to every address of the network, which the guardrails refuse);
* ``subscriber_prefixes``: the city's subscriber prefixes from the operator
  prefix table, any protocol, any port.
"""

from __future__ import annotations

import csv
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voipflow.enforcement.errors import PolicyFileError, TargetError
from voipflow.enforcement.policy import Policy, PolicyFile
from voipflow.streams import ports as port_tables
from voipflow.streams.providers import ProviderRanges

PortRange = tuple[int, int]

#: Media ports an app documents that the classifier files under a shared
#: category (STUN, Google's STUN): Teams media 3478-3481 (Microsoft 365
#: network guide), Meet 19302-19309 (Google Meet network guide).
APP_EXTRA_UDP_PORTS: dict[str, tuple[PortRange, ...]] = {
    "teams": ((3478, 3481),),
    "meet": ((19302, 19309),),
}


@dataclass(frozen=True, slots=True)
class Target:
    kind: str
    prefixes: tuple[str, ...]
    protocol: str  # udp | tcp | any
    ports: tuple[PortRange, ...]

    def as_message(self) -> dict[str, object]:
        """The ``target`` object of a rules.v1 message."""
        return {
            "kind": self.kind,
            "prefixes": list(self.prefixes),
            "protocol": self.protocol,
            "ports": [{"from": a, "to": b} for a, b in self.ports],
        }


def _ranges(ports: np.ndarray) -> list[PortRange]:
    """Sorted port numbers -> maximal ranges of consecutive ports."""
    if not len(ports):
        return []
    breaks = np.flatnonzero(np.diff(ports) != 1)
    starts = np.concatenate(([ports[0]], ports[breaks + 1]))
    ends = np.concatenate((ports[breaks], [ports[-1]]))
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _merge(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


def app_ports(app: str) -> tuple[str, tuple[PortRange, ...]]:
    """(protocol, port ranges) of an app from the classifier's port tables."""
    codes = [code for code, name in port_tables.PORT_APPS.items() if name == app]
    udp = _ranges(np.flatnonzero(np.isin(port_tables.UDP_PORTS, codes))) if codes else []
    tcp = _ranges(np.flatnonzero(np.isin(port_tables.TCP_PORTS, codes))) if codes else []
    udp += list(APP_EXTRA_UDP_PORTS.get(app, ()))
    merged_udp, merged_tcp = _merge(udp), _merge(tcp)
    if not merged_tcp:
        return "udp", merged_udp
    if not merged_udp:
        return "tcp", merged_tcp
    return "any", _merge([*merged_udp, *merged_tcp])


def load_city_prefixes(path: Path | None) -> dict[str, list[str]]:
    """City -> subscriber prefixes from an operator prefix table (``prefix,city,...``)."""
    if path is None:
        return {}
    out: dict[str, list[str]] = {}
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = csv.DictReader(f)
            if not rows.fieldnames or not {"prefix", "city"} <= set(rows.fieldnames):
                raise TargetError(f"{path}: expected a header with 'prefix' and 'city'")
            for n, row in enumerate(rows, start=2):
                try:
                    net = ipaddress.ip_network((row["prefix"] or "").strip(), strict=False)
                except ValueError as exc:
                    raise TargetError(f"{path}:{n}: {row['prefix']!r} is not a CIDR") from exc
                out.setdefault((row["city"] or "").strip(), []).append(str(net))
    except OSError as exc:
        raise TargetError(f"{path}: {exc}") from exc
    return out


def _addr_text(addrs: np.ndarray) -> list[str]:
    out = []
    for raw in addrs.tolist():
        ip = ipaddress.IPv6Address(bytes(raw).rjust(16, b"\0"))
        mapped = ip.ipv4_mapped
        out.append(f"{mapped}/32" if mapped is not None else f"{ip}/128")
    return out


@dataclass
class PeerSet:
    """Peers seen per (city, app) in VoIP flows, each with its last time seen."""

    timeout_ms: int
    max_peers: int
    seen: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)

    def add(self, city: str, app: str, prefixes: Iterable[str], seen_ms: int) -> None:
        peers = self.seen.setdefault((city, app), {})
        for p in prefixes:
            if peers.get(p, -1) < seen_ms:
                peers[p] = seen_ms

    def add_batch(self, columns: Mapping[str, np.ndarray]) -> int:
        """Add the peers of a voip-flows batch (``city``, ``app``, ``peer_addr``,
        ``flow_end_ms`` as arrays); returns how many distinct (city, app, peer) it had."""
        city = np.asarray(columns["city"], dtype=object).astype(str)
        app = np.asarray(columns["app"], dtype=object).astype(str)
        peer = np.asarray(columns["peer_addr"], dtype="S16")
        end = np.asarray(columns["flow_end_ms"], dtype=np.int64)
        if not len(peer):
            return 0
        # numpy strings drop trailing NULs, so the separator is the unit separator
        key = np.char.add(np.char.add(city, "\x1f"), app)
        # one entry per distinct (city, app, peer), with its newest flow end
        order = np.lexsort((end, peer, key))
        k, p, e = key[order], peer[order], end[order]
        last = np.ones(len(k), dtype=bool)
        last[:-1] = (k[1:] != k[:-1]) | (p[1:] != p[:-1])
        k, p, e = k[last], p[last], e[last]
        texts = _addr_text(p)
        for ki, ti, ei in zip(k.tolist(), texts, e.tolist(), strict=True):
            c, a = ki.split("\x1f", 1)
            self.add(c, a, (ti,), int(ei))
        return len(texts)

    def expire(self, now_ms: int) -> None:
        for key in list(self.seen):
            peers = {p: t for p, t in self.seen[key].items() if now_ms - t < self.timeout_ms}
            if peers:
                self.seen[key] = peers
            else:
                del self.seen[key]

    def peers(self, city: str, app: str, now_ms: int) -> list[str]:
        """The live peers, the most recently seen first cut at ``max_peers``, sorted."""
        seen = self.seen.get((city, app), {})
        live = [(t, p) for p, t in seen.items() if now_ms - t < self.timeout_ms]
        live.sort(reverse=True)
        return sorted(p for _, p in live[: self.max_peers])


@dataclass
class TargetResolver:
    providers: ProviderRanges | None
    city_prefixes: dict[str, list[str]]
    peers: PeerSet

    def resolve(self, policy: Policy, city: str, app: str, now_ms: int) -> Target:
        """The target of ``policy`` fired for ``city`` and ``app``; prefixes may be empty."""
        kind = policy.target
        if kind == "provider_ranges":
            provs = self.providers.providers if self.providers else []
            prefixes = [p for prov in provs if prov.app == app and prov.voip for p in prov.prefixes]
            return Target(kind, _canonical(prefixes), "any", ())
        if kind == "observed_peers":
            return Target(kind, _canonical(self.peers.peers(city, app, now_ms)), "any", ())
        if kind == "subscriber_prefixes":
            return Target(kind, _canonical(self.city_prefixes.get(city, [])), "any", ())
        if kind == "app_ports":
            protocol, ports = app_ports(app)
            if not ports:
                raise TargetError(f"app {app!r} has no ports in the classifier's port tables")
            return Target(kind, _canonical(self.city_prefixes.get(city, [])), protocol, ports)
        raise TargetError(f"unknown target kind {kind!r}")


def _canonical(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Canonical, deduplicated, collapsed prefixes, IPv4 first."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for p in prefixes:
        net = ipaddress.ip_network(p.strip(), strict=False)
        if isinstance(net, ipaddress.IPv4Network):
            v4.append(net)
        else:
            v6.append(net)
    out = [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
    return tuple(str(n) for n in out)


def target_problems(
    pf: PolicyFile, providers: ProviderRanges | None, city_prefixes: Mapping[str, list[str]]
) -> list[PolicyFileError]:
    """Targets of a policy file that could never resolve, each pointing at its line.

    ``app_ports`` needs apps with ports in the classifier's tables,
    ``provider_ranges`` apps with provider files; a block or throttle on
    subscriber prefixes or app ports needs the matched cities in the prefix
    table (when a prefix table is configured).
    """
    out: list[PolicyFileError] = []
    provider_apps = {p.app for p in providers.providers if p.voip} if providers else set()
    for i, pol in enumerate(pf.policies):
        where = ("policies", i, "target")
        needs_app = pol.target in ("app_ports", "provider_ranges")
        if needs_app and not pol.match.apps:
            out.append(pf.error(f"target {pol.target} needs match.apps", *where))
            continue
        for app in pol.match.apps if needs_app else ():
            if pol.target == "app_ports" and not app_ports(app)[1]:
                out.append(
                    pf.error(
                        f"app {app!r} has no ports in the classifier's port tables; "
                        "use provider_ranges or observed_peers",
                        *where,
                    )
                )
            if pol.target == "provider_ranges" and app not in provider_apps:
                out.append(
                    pf.error(
                        f"app {app!r} has no provider range file (voipflow providers list)",
                        *where,
                    )
                )
        city_target = pol.target in ("app_ports", "subscriber_prefixes")
        if city_target and city_prefixes and pol.action in ("throttle", "block"):
            for city in pol.match.cities:
                if city not in city_prefixes:
                    out.append(
                        pf.error(
                            f"city {city!r} is not in the prefix table: its rules would "
                            "have no prefixes",
                            "policies",
                            i,
                            "match",
                            "cities",
                        )
                    )
    return out
