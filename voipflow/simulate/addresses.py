"""Address sources of the simulator: provider ranges, public peers, cities.

Everything here draws many addresses at once (numpy, S16 IPv4-mapped like
``schemas.flowbatch``): a :class:`PrefixPool` picks a prefix per draw (bigger
prefixes more often, but not in proportion, so a /14 does not drown a list of
/32 relays) and fills the host bits at random.
"""

from __future__ import annotations

import csv
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voipflow.schemas.flowbatch import ipv4_to_addr16, text_to_addr16

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Never drawn as public peers: private, shared, loopback, link-local,
#: documentation, benchmarking, multicast and reserved space (RFC 6890).
_NOT_PUBLIC_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
]
_NOT_PUBLIC_V6 = ["2001::/23", "2001:db8::/32", "2002::/16"]


class SimulatorDataError(ValueError):
    """A city table or provider range file that cannot be used."""


@dataclass(slots=True)
class PrefixPool:
    """Prefixes of one family to draw addresses from."""

    version: int
    nets: list[Network]
    _hi: np.ndarray = field(init=False, repr=False)
    _lo: np.ndarray = field(init=False, repr=False)
    _mask_hi: np.ndarray = field(init=False, repr=False)
    _mask_lo: np.ndarray = field(init=False, repr=False)
    _p: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        hi, lo, mhi, mlo, weight = [], [], [], [], []
        for net in self.nets:
            bits = 32 if self.version == 4 else 128
            value = int(net.network_address) << (128 - bits)
            host = ((1 << (bits - net.prefixlen)) - 1) << (128 - bits)
            hi.append(value >> 64)
            lo.append(value & (2**64 - 1))
            mhi.append(host >> 64)
            mlo.append(host & (2**64 - 1))
            weight.append(1 + (bits - net.prefixlen) if self.version == 4 else 1)
        self._hi = np.array(hi, dtype=np.uint64)
        self._lo = np.array(lo, dtype=np.uint64)
        self._mask_hi = np.array(mhi, dtype=np.uint64)
        self._mask_lo = np.array(mlo, dtype=np.uint64)
        w = np.array(weight, dtype=np.float64)
        self._p = w / w.sum() if len(w) else w

    def __len__(self) -> int:
        return len(self.nets)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` addresses (S16) from these prefixes; the pool must not be empty."""
        idx = rng.choice(len(self.nets), size=n, p=self._p)
        r_hi = rng.integers(0, 2**64, size=n, dtype=np.uint64)
        r_lo = rng.integers(0, 2**64, size=n, dtype=np.uint64)
        hi = self._hi[idx] | (r_hi & self._mask_hi[idx])
        lo = self._lo[idx] | (r_lo & self._mask_lo[idx])
        if self.version == 4:
            return ipv4_to_addr16((hi >> np.uint64(32)).astype(np.uint32))
        out = np.empty((n, 2), dtype=">u8")
        out[:, 0], out[:, 1] = hi, lo
        return out.view("S16").reshape(-1)


def _parse_cidrs(lines: Iterable[str], origin: str) -> list[Network]:
    nets: list[Network] = []
    for no, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            nets.append(ipaddress.ip_network(line, strict=False))
        except ValueError as exc:
            raise SimulatorDataError(f"{origin}:{no}: not a CIDR: {line!r}") from exc
    return nets


@dataclass(slots=True)
class Provider:
    """A provider's ranges, split by address family."""

    name: str
    v4: PrefixPool
    v6: PrefixPool

    @classmethod
    def from_cidrs(cls, name: str, nets: Sequence[Network]) -> Provider:
        return cls(
            name,
            PrefixPool(4, [n for n in nets if n.version == 4]),
            PrefixPool(6, [n for n in nets if n.version == 6]),
        )


def default_provider_dirs(repo: Path) -> list[Path]:
    """Where provider range files are looked for, first match wins per provider."""
    shared = Path("shared") / "data" / "provider-ranges"
    # the shared data sits beside a clone, or two levels up from a worktree
    return [repo / "data" / "providers", repo.parent / shared, repo.parent.parent / shared]


def load_providers(dirs: Sequence[Path]) -> dict[str, Provider]:
    """Every ``<name>.txt`` of ``dirs`` (earlier directories win) as a provider."""
    found: dict[str, Provider] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.txt")):
            if path.stem in found:
                continue
            nets = _parse_cidrs(path.read_text(encoding="utf-8").splitlines(), str(path))
            if nets:
                found[path.stem] = Provider.from_cidrs(path.stem, nets)
    return found


class PublicPeers:
    """Random public addresses outside every provider range and special block."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        provs = list(providers)
        self._excl = {
            4: _ranges([ipaddress.ip_network(n) for n in _NOT_PUBLIC_V4], provs, 4),
            6: _ranges([ipaddress.ip_network(n) for n in _NOT_PUBLIC_V6], provs, 6),
        }

    def sample(self, rng: np.random.Generator, n: int, version: int) -> np.ndarray:
        out: list[np.ndarray] = []
        have = 0
        while have < n:
            m = int((n - have) * 1.3) + 8
            if version == 4:
                v = rng.integers(0x01000000, 0xE0000000, size=m, dtype=np.uint64)
                keep = ~_inside(v, *self._excl[4])
                out.append(ipv4_to_addr16(v[keep].astype(np.uint32)))
            else:
                hi = rng.integers(0, 2**61, size=m, dtype=np.uint64) | np.uint64(0x2 << 60)
                keep = ~_inside(hi, *self._excl[6])
                raw = np.empty((int(keep.sum()), 2), dtype=">u8")
                raw[:, 0] = hi[keep]
                raw[:, 1] = rng.integers(0, 2**64, size=len(raw), dtype=np.uint64)
                out.append(raw.view("S16").reshape(-1))
            have += len(out[-1])
        return np.concatenate(out)[:n]


def _ranges(
    special: list[Network], providers: list[Provider], version: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, merged [start, end] ranges (IPv4 as value, IPv6 as the top 64 bits)."""
    nets = [n for n in special if n.version == version]
    for p in providers:
        nets += (p.v4 if version == 4 else p.v6).nets
    spans = []
    for net in nets:
        lo, hi = int(net.network_address), int(net.broadcast_address)
        if version == 6:
            lo, hi = lo >> 64, hi >> 64
        spans.append((lo, hi))
    spans.sort()
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    arr = np.array(merged, dtype=np.uint64).reshape(-1, 2)
    return arr[:, 0].copy(), arr[:, 1].copy()


def _inside(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    i = np.searchsorted(starts, values, side="right") - 1
    ok = i >= 0
    res = np.zeros(len(values), dtype=bool)
    res[ok] = values[ok] <= ends[i[ok]]
    return res


# -- cities ------------------------------------------------------------------


@dataclass(slots=True)
class City:
    name: str
    region: str
    country: str
    lat: float
    lon: float
    v4: list[ipaddress.IPv4Network] = field(default_factory=list)
    v6: list[ipaddress.IPv6Network] = field(default_factory=list)


def load_cities(path: Path) -> list[City]:
    """The city table (``prefix,city,region,country,lat,lon``), one City per name."""
    cities: dict[str, City] = {}
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            need = {"prefix", "city", "region", "country", "lat", "lon"}
            if not reader.fieldnames or not need <= set(reader.fieldnames):
                raise SimulatorDataError(f"{path}: header must name {', '.join(sorted(need))}")
            for no, row in enumerate(reader, start=2):
                try:
                    net = ipaddress.ip_network(row["prefix"].strip(), strict=False)
                    city = cities.setdefault(
                        row["city"],
                        City(
                            row["city"],
                            row["region"],
                            row["country"],
                            float(row["lat"]),
                            float(row["lon"]),
                        ),
                    )
                except (ValueError, TypeError) as exc:
                    raise SimulatorDataError(f"{path}:{no}: {exc}") from exc
                if isinstance(net, ipaddress.IPv4Network):
                    city.v4.append(net)
                else:
                    city.v6.append(net)
    except OSError as exc:
        raise SimulatorDataError(f"{path}: {exc.strerror}") from exc
    if not cities:
        raise SimulatorDataError(f"{path}: no cities")
    for c in cities.values():
        if not c.v4:
            raise SimulatorDataError(f"{path}: city {c.name!r} has no IPv4 prefix")
    return list(cities.values())


def subscriber_addresses(
    rng: np.random.Generator, city: City, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct subscribers of ``city``: (IPv4 S16, IPv6 S16 or zeros).

    IPv4: distinct hosts of the city's IPv4 prefixes. IPv6: each subscriber
    gets its own /64 of the city's IPv6 prefix (as BNGs delegate) and a
    random interface identifier in it.
    """
    sizes = np.array([max(1, net.num_addresses - 2) for net in city.v4], dtype=np.int64)
    if n > sizes.sum():
        raise SimulatorDataError(f"city {city.name!r}: {n} subscribers do not fit its prefixes")
    picks = np.sort(rng.choice(int(sizes.sum()), size=n, replace=False))
    which = np.searchsorted(np.cumsum(sizes), picks, side="right")
    offsets = picks - np.r_[0, np.cumsum(sizes)][which]
    bases = np.array([int(net.network_address) + 1 for net in city.v4], dtype=np.int64)
    v4 = ipv4_to_addr16((bases[which] + offsets).astype(np.uint32))
    v6 = np.zeros(n, dtype="S16")
    if city.v6:
        net6 = city.v6[0]
        subnets = 1 << min(62, max(0, 64 - net6.prefixlen))
        if n > subnets:
            raise SimulatorDataError(f"city {city.name!r}: {n} subscribers exceed its /64s")
        sub = rng.choice(subnets, size=n, replace=False).astype(np.uint64)
        base = int(net6.network_address)
        raw = np.empty((n, 2), dtype=">u8")
        raw[:, 0] = np.uint64(base >> 64) | sub
        raw[:, 1] = rng.integers(1, 2**64, size=n, dtype=np.uint64)
        v6 = raw.view("S16").reshape(-1)
    rng.shuffle(v4)
    return v4, v6


def fixed_addresses(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Literal addresses -> (IPv4 S16 array, IPv6 S16 array)."""
    v4 = [text_to_addr16(t) for t in texts if ipaddress.ip_address(t).version == 4]
    v6 = [text_to_addr16(t) for t in texts if ipaddress.ip_address(t).version == 6]
    return np.array(v4, dtype="S16"), np.array(v6, dtype="S16")
