"""The traffic model: subscribers' sessions turned into flow records, per tick.

Each call of the simulator's :meth:`TrafficModel.tick` advances simulated
time by one step and returns the flow records the exporters send at its end,
as numpy columns, generated for the whole step at once:

* long flows (call media in both directions, video streaming) live in a
  :class:`LegPool` and are exported in slices of the active timeout, aligned
  to each flow's own start, the way routers export long-lived flows;
* short flows (web, DNS, a call's signalling and STUN probes) are exported
  once, when they end;
* the run starts in a steady state: calls and videos that began before the
  start are already in progress (drawn from the same arrival process).

Arrival rates are derived from the configured flow-record rate and shares, so
that the records produced per second match ``rate`` on average. With 1:N
sampling each record keeps Binomial(packets, 1/N) packets and records left
with none are not exported, as on a sampling router.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from voipflow.simulate import apps as A
from voipflow.simulate.addresses import City, Provider
from voipflow.simulate.config import SimulatorConfig
from voipflow.simulate.legs import NEVER, LegPool, aligned, make_legs
from voipflow.simulate.population import Population
from voipflow.simulate.truth import GroundTruth

log = logging.getLogger(__name__)

#: interface indexes of a BNG: subscriber side and core side.
IF_ACCESS, IF_CORE = 2, 1
TCP_FLAGS_SHORT = 0x1B  # SYN ACK PSH FIN
TCP_FLAGS_LONG = 0x18  # ACK PSH (SYN on the first slice, FIN on the last)


@dataclass(slots=True)
class Tick:
    """Records of one step: encoder columns, the exporter index of each, and
    labels saying what each record is (``app`` index into the model's apps,
    ``media`` for call media, ``call`` id or -1, ``sub`` subscriber index)."""

    columns: dict[str, np.ndarray]
    exporter: np.ndarray
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.exporter)


class TrafficModel:
    """Cities, subscribers, exporters and their traffic, deterministic per seed."""

    def __init__(
        self,
        config: SimulatorConfig,
        cities: list[City],
        providers: dict[str, Provider],
        start_ms: int,
    ) -> None:
        self.cfg = config
        self.cities = cities
        self.rng = np.random.default_rng(config.seed)
        self.now_ms = start_ms
        self.timeout_ms = int(config.active_timeout_s * 1000)
        self.pop = Population(config, cities, providers, self.rng)
        self.apps = [(a.name, True) for a in A.CALL_APPS] + [(b, False) for b in A.BACKGROUND_APPS]
        self.app_index = {name: i for i, (name, _) in enumerate(self.apps)}
        self.truth = GroundTruth(
            [{"city": c.name, "region": c.region, "country": c.country} for c in cities],
            self.apps,
            self.pop.sub_city,
        )
        self.pool = LegPool()
        self._rates()
        self._next_call_id = 0
        self._warm_start(start_ms)
        self.pool.commit()

    # -- set-up --------------------------------------------------------------

    def _rates(self) -> None:
        cfg = self.cfg
        probe = np.random.default_rng(12345)  # fixed: rates must not depend on the seed
        t = cfg.active_timeout_s
        call_d = self._durations(probe, 200_000, "call") / 1000.0
        video_d = self._durations(probe, 200_000, "video") / 1000.0
        weights = np.array([a.weight for a in A.CALL_APPS])
        self.call_p = weights / weights.sum()
        sig = sum(
            p * sum(2 * s.count for s in a.signalling if not s.keepalive_s)
            for p, a in zip(self.call_p, A.CALL_APPS, strict=True)
        )
        # media, RTCP beside it and STUN keepalives: two legs per exported slice
        legs = sum(
            p * (1 + a.rtcp + sum(s.count for s in a.signalling if s.keepalive_s))
            for p, a in zip(self.call_p, A.CALL_APPS, strict=True)
        )
        per_call = 2 * legs * float(np.ceil(call_d / t).mean()) + sig
        per_video = 2 * float(np.ceil(video_d / t).mean())
        self.lam = {
            "call": cfg.rate * cfg.voip_share / per_call,
            "video": cfg.rate * cfg.video_share / per_video,
            "web": cfg.rate * cfg.web_share / 2,
            "dns": cfg.rate * cfg.dns_share / 2,
        }
        self.mean_call_s = float(call_d.mean())

    @staticmethod
    def _durations(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
        if kind == "call":
            med, sig, lo, hi = A.CALL_MEDIAN_S, A.CALL_SIGMA, A.CALL_MIN_S, A.CALL_MAX_S
        else:
            med, sig, lo, hi = A.VIDEO_MEDIAN_S, A.VIDEO_SIGMA, A.VIDEO_MIN_S, A.VIDEO_MAX_S
        d = np.clip(rng.lognormal(np.log(med), sig, n), lo, hi)
        return (d * 1000).astype(np.int64)

    def _warm_start(self, t0: int) -> None:
        """Calls and videos already in progress at ``t0`` (a steady state)."""
        for kind, dmax in (("call", A.CALL_MAX_S), ("video", A.VIDEO_MAX_S)):
            n = self.rng.poisson(self.lam[kind] * dmax)
            start = t0 - (self.rng.random(n) * dmax * 1000).astype(np.int64)
            dur = self._durations(self.rng, n, kind)
            alive = start + dur > t0
            if kind == "call":
                self._new_calls(start[alive], dur[alive], t0)
            else:
                self._new_videos(start[alive], dur[alive], t0)

    # -- sessions ------------------------------------------------------------

    def _pair(self, base: dict[str, Any], up: dict[str, Any], down: dict[str, Any]) -> None:
        """Add the up and down legs of flows that share ``base`` columns."""
        self.pool.add(make_legs(**base, **up, up=True))
        self.pool.add(make_legs(**base, **down, up=False))

    def _new_calls(self, start: np.ndarray, dur: np.ndarray, t0: int) -> None:
        n = len(start)
        if not n:
            return
        rng = self.rng
        app = rng.choice(len(A.CALL_APPS), size=n, p=self.call_p)
        sub, v6 = self.pop.pick_subscribers(n)
        call = np.arange(self._next_call_id, self._next_call_id + n, dtype=np.int64)
        self._next_call_id += n
        end = start + dur
        for ai, spec in enumerate(A.CALL_APPS):
            m = app == ai
            k = int(m.sum())
            if not k:
                continue
            prov = self.pop.call_provider[spec.name]
            peer, v6a = self.pop.sample_peers(prov, v6[m])
            size_up, size_down = self._voice_sizes(spec, k)
            s0 = start[m]
            slice0 = aligned(s0, t0, self.timeout_ms)
            due = np.minimum(slice0 + self.timeout_ms, end[m])
            pps = A.VOICE_PPS * rng.uniform(0.9, 1.0, (2, k))
            sub_port = self.pop.ports(spec.sub_ports, k, spec.even_ports)
            peer_port = self.pop.ports(spec.peer_ports, k, spec.even_ports)
            base = {
                "sub": sub[m],
                "call": call[m],
                "app": ai,
                "v6": v6a,
                "peer": peer,
                "sub_port": sub_port,
                "peer_port": peer_port,
                "proto": A.UDP,
                "tos": spec.tos,
                "media": True,
                "start": s0,
                "end": end[m],
                "slice_start": slice0,
                "due": due,
            }
            self._pair(base, {"pps": pps[0], "size": size_up}, {"pps": pps[1], "size": size_down})
            if spec.rtcp:
                # not media: its time is the call's, counted once by the RTP leg
                rtcp = base | {"sub_port": sub_port + 1, "peer_port": peer_port + 1, "media": False}
                rtcp_pps = A.RTCP_PPS * rng.uniform(0.8, 1.2, (2, k))
                self._pair(
                    rtcp,
                    {"pps": rtcp_pps[0], "size": A.RTCP_BYTES},
                    {"pps": rtcp_pps[1], "size": A.RTCP_BYTES},
                )
            self._signalling(spec, ai, sub[m], call[m], v6a, sub_port, s0, end[m], t0)

    def _voice_sizes(self, spec: A.CallApp, k: int) -> tuple[np.ndarray, np.ndarray]:
        shares = np.array([s[0] for s in spec.sizes])
        which = self.rng.choice(len(spec.sizes), size=k, p=shares / shares.sum())
        lo = np.array([s[1] for s in spec.sizes])[which]
        hi = np.array([s[2] for s in spec.sizes])[which]
        up = self.rng.uniform(lo, hi)
        # the other direction of a call uses the same codec, at its own rate
        down = np.clip(up * self.rng.uniform(0.85, 1.15, k), lo, hi)
        return up, down

    def _signalling(
        self,
        spec: A.CallApp,
        ai: int,
        sub: np.ndarray,
        call: np.ndarray,
        v6: np.ndarray,
        media_port: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        t0: int,
    ) -> None:
        rng = self.rng
        for fs in spec.signalling:
            for _ in range(fs.count):
                if fs.keepalive_s:
                    self._keepalive(fs, ai, sub, call, v6, media_port, start, end, t0)
                    continue
                s = (end - int(fs.duration_s * 1000)) if fs.at_end else start
                s = s + rng.integers(0, 500, len(s))
                e = s + int(fs.duration_s * 1000)
                live = s >= t0  # flows of the past were exported before the run
                k = int(live.sum())
                if not k:
                    continue
                if fs.peer == A.PROVIDER:
                    peer, v6k = self.pop.sample_peers(self.pop.call_provider[spec.name], v6[live])
                else:
                    peer, v6k = self.pop.sample_peers(None, v6[live])
                if fs.media_socket:
                    sub_port = media_port[live]
                elif fs.sub_ports:
                    sub_port = self.pop.ports(fs.sub_ports, k)
                else:
                    sub_port = self.pop.ports(A.EPHEMERAL, k)
                jitter = rng.uniform(0.8, 1.2, (2, k))
                base = {
                    "sub": sub[live],
                    "call": call[live],
                    "app": ai,
                    "v6": v6k,
                    "peer": peer,
                    "sub_port": sub_port,
                    "peer_port": self.pop.ports(fs.peer_ports, k),
                    "proto": fs.protocol,
                    "start": s[live],
                    "end": e[live],
                    "slice_start": s[live],
                    "due": e[live],
                }
                up = {
                    "fixed_packets": fs.packets_up,
                    "fixed_bytes": (fs.packets_up * fs.size_up * jitter[0]).astype(np.int64),
                }
                down = {
                    "fixed_packets": fs.packets_down,
                    "fixed_bytes": (fs.packets_down * fs.size_down * jitter[1]).astype(np.int64),
                }
                self._pair(base, up, down)

    def _keepalive(
        self,
        fs: A.FlowSpec,
        ai: int,
        sub: np.ndarray,
        call: np.ndarray,
        v6: np.ndarray,
        media_port: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        t0: int,
    ) -> None:
        """A STUN binding kept alive for the whole call, exported in slices like media."""
        k = len(sub)
        if fs.peer == A.PUBLIC:
            peer, v6k = self.pop.sample_peers(None, v6)
        else:
            peer, v6k = self.pop.sample_peers(self.pop.call_provider[self.apps[ai][0]], v6)
        slice0 = aligned(start, t0, self.timeout_ms)
        base = {
            "sub": sub,
            "call": call,
            "app": ai,
            "v6": v6k,
            "peer": peer,
            "sub_port": media_port if fs.media_socket else self.pop.ports(A.EPHEMERAL, k),
            "peer_port": self.pop.ports(fs.peer_ports, k),
            "proto": fs.protocol,
            "start": start,
            "end": end,
            "slice_start": slice0,
            "due": np.minimum(slice0 + self.timeout_ms, end),
        }
        pps = self.rng.uniform(0.95, 1.05, (2, k)) / fs.keepalive_s
        self._pair(base, {"pps": pps[0], "size": fs.size_up}, {"pps": pps[1], "size": fs.size_down})

    def _new_videos(self, start: np.ndarray, dur: np.ndarray, t0: int) -> None:
        n = len(start)
        if not n:
            return
        rng = self.rng
        sub, v6 = self.pop.pick_subscribers(n)
        peer = np.empty(n, dtype="S16")
        for version, mask in ((4, ~v6), (6, v6)):
            k = int(mask.sum())
            peer[mask] = self.pop.cdn[version][rng.integers(0, len(self.pop.cdn[version]), k)]
        self.pop.provider_peers(peer, v6, self.pop.video_providers, A.VIDEO_PROVIDER_SHARE)
        quic = rng.random(n) < A.QUIC_SHARE
        mbps = rng.uniform(2.5, 6.0, n)
        size_down = rng.uniform(1300, 1450, n)
        pps_down = mbps * 1e6 / 8 / size_down
        slice0 = aligned(start, t0, self.timeout_ms)
        base = {
            "sub": sub,
            "call": -1,
            "app": self.app_index["video"],
            "v6": v6,
            "peer": peer,
            "sub_port": self.pop.ports(A.EPHEMERAL, n),
            "peer_port": 443,
            "proto": np.where(quic, A.UDP, A.TCP),
            "start": start,
            "end": start + dur,
            "slice_start": slice0,
            "due": np.minimum(slice0 + self.timeout_ms, start + dur),
        }
        up = {"pps": pps_down * rng.uniform(0.08, 0.5, n), "size": rng.uniform(52, 90, n)}
        self._pair(base, up, {"pps": pps_down, "size": size_down})

    # -- one step ------------------------------------------------------------

    def tick(self, now_ms: int) -> Tick:
        """Advance to ``now_ms``; the records exported at that instant."""
        prev, self.now_ms = self.now_ms, now_ms
        dt = now_ms - prev
        for kind in ("call", "video"):
            n = self.rng.poisson(self.lam[kind] * dt / 1000.0)
            start = prev + (self.rng.random(n) * dt).astype(np.int64)
            if kind == "call":
                dur = self._durations(self.rng, n, "call")
                self._new_calls(start, dur, prev)
            else:
                self._new_videos(start, self._durations(self.rng, n, "video"), prev)
        parts = [self._export_legs(now_ms), self._short_flows("web", now_ms, dt)]
        parts.append(self._short_flows("dns", now_ms, dt))
        recs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._finish(recs)

    def _export_legs(self, now: int) -> dict[str, np.ndarray]:
        self.pool.commit()
        f = self.pool.f
        idx = np.flatnonzero(f["due"] <= now)
        g = {k: v[idx] for k, v in f.items()}
        s0, s1 = g["slice_start"], g["due"]
        n = len(idx)
        secs = (s1 - s0) / 1000.0
        fixed = g["fixed_packets"] > 0
        jitter = self.rng.uniform(0.97, 1.03, (2, n))
        packets = np.where(
            fixed, g["fixed_packets"], np.maximum(1, np.rint(g["pps"] * secs * jitter[0]))
        )
        size = np.where(g["media"], g["size"], g["size"] * jitter[1])
        nbytes = np.where(fixed, g["fixed_bytes"], np.rint(packets * size))
        first = s0 == g["start"]
        last = s1 >= g["end"]
        tcp = g["proto"] == A.TCP
        flags = np.where(
            fixed,
            TCP_FLAGS_SHORT,
            TCP_FLAGS_LONG | np.where(first, 0x02, 0) | np.where(last, 0x01, 0),
        )
        # calls: the upstream media slice stands for the call's time
        media_up = g["media"] & g["up"]
        new_call = media_up & ~g["counted"]
        self.truth.add_call_time(
            g["sub"][media_up],
            g["app"][media_up].astype(np.int64),
            new_call[media_up],
            (s1 - s0)[media_up],
        )
        # advance the exported legs; drop the finished ones
        f["counted"][idx] |= media_up
        f["slice_start"][idx] = s1
        f["due"][idx] = np.minimum(s1 + self.timeout_ms, f["end"][idx])
        if last.any():
            self.pool.drop(idx[last])
        return self._records(
            g["sub"],
            g["v6"],
            g["up"],
            g["peer"],
            g["sub_port"],
            g["peer_port"],
            g["proto"],
            np.where(tcp, flags, 0),
            g["tos"],
            packets,
            nbytes,
            s0,
            s1,
            g["app"],
            g["media"],
            g["call"],
        )

    def _short_flows(self, kind: str, now: int, dt: int) -> dict[str, np.ndarray]:
        rng = self.rng
        n = rng.poisson(self.lam[kind] * dt / 1000.0)
        sub, v6 = self.pop.pick_subscribers(n)
        # exported when the flow is over and the inactive timeout passed
        end = now - (rng.random(n) * 15_000).astype(np.int64)
        if kind == "dns":
            peer = np.empty(n, dtype="S16")
            for version, mask in ((4, ~v6), (6, v6)):
                r = self.pop.resolvers[version]
                peer[mask] = r[rng.integers(0, len(r), int(mask.sum()))]
            start = end - rng.integers(1, 80, n)
            proto = np.full(n, A.UDP)
            peer_port = np.full(n, 53)
            p_up = np.ones(n)
            p_down = np.ones(n)
            b_up = rng.integers(60, 95, n)
            b_down = rng.integers(90, 320, n)
        else:
            peer, v6 = self.pop.sample_peers(None, v6)
            self.pop.provider_peers(peer, v6, self.pop.web_providers, A.WEB_PROVIDER_SHARE)
            # longer connections would be sliced by the active timeout: kept short
            cap = min(300_000, self.timeout_ms)
            dur = np.clip(rng.lognormal(np.log(4000), 1.2, n), 30, cap).astype(np.int64)
            start = end - dur
            proto = np.where(rng.random(n) < A.QUIC_SHARE, A.UDP, A.TCP)
            peer_port = np.where(rng.random(n) < 0.95, 443, 80)
            peer_port[proto == A.UDP] = 443
            b_down = np.clip(rng.lognormal(np.log(40_000), 1.6, n), 400, 50e6)
            p_down = np.ceil(b_down / 1380)
            p_up = np.ceil(p_down / 2) + rng.integers(2, 8, n)
            b_up = p_up * 60 + rng.integers(300, 2500, n)
        app = self.app_index[kind]
        sub_port = self.pop.ports(A.EPHEMERAL, n)
        flags = np.where(proto == A.TCP, TCP_FLAGS_SHORT, 0)
        ups = self._records(
            sub,
            v6,
            np.ones(n, bool),
            peer,
            sub_port,
            peer_port,
            proto,
            flags,
            0,
            p_up,
            b_up,
            start,
            end,
            app,
        )
        downs = self._records(
            sub,
            v6,
            np.zeros(n, bool),
            peer,
            sub_port,
            peer_port,
            proto,
            flags,
            0,
            p_down,
            b_down,
            start,
            end,
            app,
        )
        return {k: np.concatenate([ups[k], downs[k]]) for k in ups}

    def _records(
        self,
        sub: np.ndarray,
        v6: np.ndarray,
        up: np.ndarray,
        peer: np.ndarray,
        sub_port: np.ndarray,
        peer_port: Any,
        proto: Any,
        flags: Any,
        tos: Any,
        packets: Any,
        nbytes: Any,
        start: np.ndarray,
        end: np.ndarray,
        app: Any,
        media: Any = False,
        call: Any = -1,
    ) -> dict[str, np.ndarray]:
        n = len(sub)
        sub_addr = np.where(v6, self.pop.sub_v6[sub], self.pop.sub_v4[sub])
        return {
            "src_addr": np.where(up, sub_addr, peer),
            "dst_addr": np.where(up, peer, sub_addr),
            "ip_version": np.where(v6, 6, 4).astype(np.uint8),
            "src_port": np.where(up, sub_port, peer_port).astype(np.uint16),
            "dst_port": np.where(up, peer_port, sub_port).astype(np.uint16),
            "protocol": np.broadcast_to(proto, n).astype(np.uint8),
            "tcp_flags": np.broadcast_to(flags, n).astype(np.uint8),
            "tos": np.broadcast_to(tos, n).astype(np.uint8),
            "packets": np.asarray(packets).astype(np.uint64),
            "bytes": np.asarray(nbytes).astype(np.uint64),
            "input_if": np.where(up, IF_ACCESS, IF_CORE).astype(np.uint32),
            "output_if": np.where(up, IF_CORE, IF_ACCESS).astype(np.uint32),
            "flow_start_ms": np.asarray(start).astype(np.uint64),
            "flow_end_ms": np.asarray(end).astype(np.uint64),
            "_sub": np.asarray(sub).astype(np.uint32),
            "_app": np.broadcast_to(app, n).astype(np.int64),
            "_media": np.broadcast_to(media, n).astype(bool),
            "_call": np.broadcast_to(call, n).astype(np.int64),
        }

    def _finish(self, recs: dict[str, np.ndarray]) -> Tick:
        sub, app = recs.pop("_sub"), recs.pop("_app")
        media, call = recs.pop("_media"), recs.pop("_call")
        packets, nbytes = recs["packets"], recs["bytes"]
        rate = self.cfg.sampling
        if rate > 1:
            sp = self.rng.binomial(packets.astype(np.int64), 1.0 / rate).astype(np.uint64)
            sb = np.rint(nbytes * (sp / np.maximum(packets, 1))).astype(np.uint64)
            sent = sp > 0
        else:
            sp, sb, sent = packets, nbytes, np.ones(len(packets), dtype=bool)
        self.truth.add_records(sub, app, packets, nbytes, sent, sp[sent], sb[sent])
        cols = {k: v[sent] for k, v in recs.items()}
        cols["packets"], cols["bytes"] = sp[sent], sb[sent]
        labels = {"app": app[sent], "media": media[sent], "call": call[sent], "sub": sub[sent]}
        return Tick(cols, self.pop.sub_exporter[sub[sent]], labels)

    @property
    def active_calls(self) -> int:
        self.pool.commit()
        f = self.pool.f
        live = (f["due"] != NEVER) & (f["start"] <= self.now_ms)
        return int((f["media"] & f["up"] & live).sum())
