"""Who and where: subscribers of each city, their exporters, and the peers they reach.

Subscribers get addresses from their city's prefixes and an exporter (BNG)
of their city; peers are drawn from provider ranges (VoIP relays, Microsoft
365, Meta...), from random public space (peer-to-peer calls, the web), from a
fixed set of CDN addresses (video) or public resolvers (DNS). All draws are
vectorised and use the model's one random generator, so a seed fixes them.
"""

from __future__ import annotations

import ipaddress
import logging

import numpy as np

from voipflow.simulate import apps as A
from voipflow.simulate.addresses import (
    City,
    Provider,
    PublicPeers,
    SimulatorDataError,
    fixed_addresses,
    subscriber_addresses,
)
from voipflow.simulate.config import SimulatorConfig

log = logging.getLogger(__name__)


class Population:
    """Subscribers, exporters and peer address sources of one run."""

    def __init__(
        self,
        config: SimulatorConfig,
        cities: list[City],
        providers: dict[str, Provider],
        rng: np.random.Generator,
    ) -> None:
        self.cfg = config
        self.cities = cities
        self.rng = rng
        self.v6_share = 0.0 if config.version == 5 else config.ipv6_share
        self._subscribers()
        self._peers(providers)

    def _subscribers(self) -> None:
        n = self.cfg.subscribers_per_city
        epc = self.cfg.exporters_per_city
        v4s, v6s = [], []
        for c in self.cities:
            v4, v6 = subscriber_addresses(self.rng, c, n)
            v4s.append(v4)
            v6s.append(v6)
        self.sub_v4 = np.concatenate(v4s)
        self.sub_v6 = np.concatenate(v6s)
        self.sub_has_v6 = np.array([bool(c.v6) for c in self.cities]).repeat(n)
        self.sub_city = np.arange(len(self.cities), dtype=np.uint16).repeat(n)
        local = np.tile(np.arange(n), len(self.cities))
        self.sub_exporter = (self.sub_city.astype(np.int64) * epc + local % epc).astype(np.uint16)
        weights = self.rng.uniform(0.5, 2.0, len(self.cities))
        self.city_p = weights / weights.sum()
        self.n_exporters = len(self.cities) * epc

    def _peers(self, providers: dict[str, Provider]) -> None:
        self.providers = dict(providers)
        self.providers["carrier"] = Provider.from_cidrs(
            "carrier", [ipaddress.ip_network(c) for c in A.CARRIER_CIDRS]
        )
        self.public = PublicPeers(providers.values())
        self.call_provider: dict[str, Provider | None] = {}
        for app in A.CALL_APPS:
            found = next((self.providers[p] for p in app.providers if p in self.providers), None)
            if found is None and app.providers != ("public",):
                log.warning(
                    "no provider ranges for %s (%s): its peers are random public addresses",
                    app.name,
                    ", ".join(app.providers),
                    extra={"app": app.name},
                )
            self.call_provider[app.name] = found
        self.web_providers = [self.providers[p] for p in A.WEB_PROVIDERS if p in self.providers]
        self.video_providers = [self.providers[p] for p in A.VIDEO_PROVIDERS if p in self.providers]
        self.cdn = {
            4: self.public.sample(self.rng, 300, 4),
            6: self.public.sample(self.rng, 100, 6),
        }
        self.resolvers = dict(zip((4, 6), fixed_addresses(A.RESOLVERS), strict=True))

    def pick_subscribers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` subscribers (a city by weight, then one of its subscribers)
        and whether each session goes over IPv6."""
        city = self.rng.choice(len(self.cities), size=n, p=self.city_p)
        sub = city * self.cfg.subscribers_per_city + self.rng.integers(
            0, self.cfg.subscribers_per_city, n
        )
        v6 = (self.rng.random(n) < self.v6_share) & self.sub_has_v6[sub]
        return sub.astype(np.uint32), v6

    def sample_peers(self, pool: Provider | None, v6: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Peers for sessions wanting IPv6 where ``v6``; IPv4 where the pool has no IPv6."""
        n = len(v6)
        if pool is not None and not len(pool.v6):
            v6 = np.zeros(n, dtype=bool)
        out = np.empty(n, dtype="S16")
        for version, mask in ((4, ~v6), (6, v6)):
            k = int(mask.sum())
            if not k:
                continue
            src = None if pool is None else (pool.v4 if version == 4 else pool.v6)
            if src is None or not len(src):
                out[mask] = self.public.sample(self.rng, k, version)
            else:
                out[mask] = src.sample(self.rng, k)
        return out, v6

    def provider_peers(
        self, peer: np.ndarray, v6: np.ndarray, providers: list[Provider], share: float
    ) -> None:
        """Re-draw a ``share`` of ``peer`` (in place) from ``providers``, one per flow."""
        if not providers:
            return
        which = np.where(
            self.rng.random(len(peer)) < share, self.rng.integers(0, len(providers), len(peer)), -1
        )
        for i, p in enumerate(providers):
            m = which == i
            if m.any():
                peer[m], v6[m] = self.sample_peers(p, v6[m])

    def ports(self, lohi: tuple[int, int], n: int, even: bool = False) -> np.ndarray:
        """``n`` ports in ``lohi`` (inclusive), even ones only for RTP."""
        p = self.rng.integers(lohi[0], lohi[1] + 1, n)
        if even:
            p &= ~1
        return p.astype(np.uint16)


def check_cities_fit(cities: list[City], config: SimulatorConfig) -> None:
    """Fail early, naming the city, when the table cannot hold the subscribers."""
    for c in cities:
        room = sum(max(1, n.num_addresses - 2) for n in c.v4)
        if room < config.subscribers_per_city:
            raise SimulatorDataError(
                f"city {c.name!r}: {config.subscribers_per_city} subscribers per city "
                f"do not fit in its IPv4 prefixes ({room} addresses)"
            )
