"""Known rows for the report tests, inserted into a real chdb database.

Usage windows go in as voip-usage.v1 messages through the sink's parser into
``voip_usage_in``, so the materialized views fill the per-minute, hourly and
daily tables as in production; VoIP flows as a voip-flows.v1 batch (with
confidences and evidence bits); exporter traffic windows, cities, rules and
rule events as columns or rows the way their writers insert them. Two weeks
of usage, so the report's "week before" has data; one exporter has a gap.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.schemas import voipflows
from voipflow.schemas.flowbatch import ipv4_to_addr16
from voipflow.storage.sink.tables import combine, parse_usage, parse_voip_flows
from voipflow.streams.classify import Evidence

HOUR = 3600
DAY = 86400
CITY_INFO: dict[str, tuple[str, str, float | None, float | None]] = {
    "Berlin": ("Berlin", "DE", 52.52, 13.405),
    "Paris": ("Ile-de-France", "FR", 48.8566, 2.3522),
    "Madrid": ("Madrid", "ES", 40.4168, -3.7038),
    "Warsaw": ("Mazovia", "PL", 52.2297, 21.0122),
    "L'Aquila": ("Abruzzo", "IT", 42.3498, 13.3995),
    "Nowhere": ("Atlantis", "ZZ", None, None),  # no coordinates: tables only
}
APPS = ("sip", "teams", "whatsapp", "zoom", "meet", "signal", "webex", "viber", "discord")
EXPORTERS = ("192.0.2.1", "192.0.2.2", "198.51.100.7")
#: The exporter that was silent for a while, and for how long (minutes).
GAP_EXPORTER, GAP_MINUTES = "192.0.2.2", 300


@dataclass(frozen=True)
class Win:
    ws: int
    city: str
    app: str
    bytes: int
    subs: frozenset[int]
    call_seconds: float
    share: float


def make_windows(now: int) -> list[Win]:
    """Per-minute windows every two hours over the 14 days before ``now``."""
    rng = random.Random(13)
    pools = {c: [rng.getrandbits(63) for _ in range(30)] for c in CITY_INFO}
    weight = {c: 1.0 + i for i, c in enumerate(CITY_INFO)}  # distinct city sizes
    out = []
    start = (now - 14 * DAY) // HOUR * HOUR
    for k in range(14 * 12):
        ws = start + k * 2 * HOUR + 60 * rng.randrange(60)
        for city in CITY_INFO:
            drafts = []
            for i, app in enumerate(APPS):
                if rng.random() < 0.75 - 0.06 * i:
                    drafts.append(
                        (
                            app,
                            rng.randint(500, 90_000),
                            frozenset(rng.sample(pools[city], rng.randint(1, 6))),
                            round(rng.uniform(0, 600) * weight[city] / (1 + i), 1),
                        )
                    )
            total = sum(d[1] for d in drafts) + rng.randint(10_000, 400_000)
            for app, by, subs, cs in drafts:
                out.append(Win(ws, city, app, by, subs, cs, by / total))
    return out


def _usage_message(w: Win) -> bytes:
    region, country, _, _ = CITY_INFO[w.city]
    return json.dumps(
        {
            "schema": "voip-usage.v1",
            "window_start_ms": w.ws * 1000,
            "window_s": 60,
            "city": w.city,
            "region": region,
            "country": country,
            "app": w.app,
            "flows": 3,
            "packets": w.bytes // 160,
            "bytes": w.bytes,
            "subscribers": len(w.subs),
            "subscriber_hashes": sorted(w.subs),
            "call_seconds": w.call_seconds,
            "voip_share": w.share,
            "produced_ms": (w.ws + 65) * 1000,
        }
    ).encode()


def _flows(now: int, n: int = 600) -> bytes:
    rng = random.Random(5)
    strong = int(Evidence.SIGNALLING_PORT | Evidence.UDP | Evidence.VOICE_SIZE | Evidence.LONG)
    weak = int(Evidence.UDP | Evidence.EPHEMERAL_PORTS | Evidence.MEDIA_RATE)
    t = np.array(
        [(now - rng.randrange(7 * DAY - HOUR)) * 1000 + rng.randrange(1000) for _ in range(n)],
        dtype=np.uint64,
    )
    cities = [rng.choice(list(CITY_INFO)) for _ in range(n)]
    conf = np.array([rng.choice((0.95, 0.9, 0.75, 0.6, 0.3, 0.1)) for _ in range(n)], np.float32)
    cols: dict[str, Any] = dict(
        time_received_ms=t,
        flow_start_ms=t - np.uint64(30_000),
        flow_end_ms=t,
        exporter_addr=ipv4_to_addr16(np.full(n, 0xC0000201, dtype=np.uint32)),
        subscriber_addr=ipv4_to_addr16(
            np.array([0x0A000000 + rng.randrange(500) for _ in range(n)], dtype=np.uint32)
        ),
        peer_addr=ipv4_to_addr16(np.full(n, 0x34700001, dtype=np.uint32)),
        ip_version=np.full(n, 4, dtype=np.uint8),
        protocol=np.full(n, 17, dtype=np.uint8),
        packets=np.full(n, 100, dtype=np.uint64),
        bytes=np.full(n, 16_000, dtype=np.uint64),
        sampling_rate=np.ones(n, dtype=np.uint32),
        city=pa.array(cities),
        region=pa.array([CITY_INFO[c][0] for c in cities]),
        country=pa.array([CITY_INFO[c][1] for c in cities]),
        app=pa.array([rng.choice(APPS) for _ in range(n)]),
        is_voip=(conf >= 0.5).astype(np.uint8),
        confidence=conf,
        evidence=np.where(conf >= 0.9, strong, weak).astype(np.uint32),
        classifier_version=pa.array(["test"] * n),
    )
    return voipflows.encode(voipflows.make_voip_batch(cols))


def _traffic_sql(now: int) -> str:
    """Minute windows of the last 7 days per exporter (the gap exporter silent a while)."""
    start = (now - 7 * DAY) // 60 * 60
    parts = []
    for i, e in enumerate(EXPORTERS):
        gap = f"AND NOT (n >= 2000 AND n < {2000 + GAP_MINUTES})" if e == GAP_EXPORTER else ""
        parts.append(
            f"""
            INSERT INTO exporter_traffic_1m
                (window_start, window_s, exporter, observation_domain_id, flows, packets,
                 bytes, packets_est, bytes_est, placed_flows, unlocated_flows, unhomed_flows,
                 voip_flows, voip_bytes_est, produced)
            SELECT toDateTime({start} + n * 60), 60, toIPv6('{e}'), {i},
                   100 + {i} * 10, 1000, 100000, 1000, 100000,
                   80 + {i} * 5, 15, 5 + {i} * 5, 10, 9000, now64(3)
            FROM (SELECT number AS n FROM numbers({7 * 1440}))
            WHERE toDateTime({start} + n * 60) <= toDateTime({now}) {gap}
            """
        )
    return ";".join(parts)


def _rules_sql(now: int) -> list[str]:
    t0 = now - 3 * DAY
    rules = [
        ("r-block-sip-berlin", "block", "Berlin", "sip"),
        ("r-throttle-zoom", "throttle", "", "zoom"),
    ]
    out = []
    for rid, action, city, app in rules:
        out.append(
            "INSERT INTO rules (rule_id, version, created, action, city, app, match, "
            "rate_limit_kbps, expires, reason, author, body) VALUES "
            f"('{rid}', 1, fromUnixTimestamp64Milli({t0 * 1000}), '{action}', '{city}', '{app}', "
            f"'{{}}', 64, fromUnixTimestamp64Milli({(now + DAY) * 1000}), 'test', 'ops', '{{}}')"
        )
    events = []
    for j, (rid, action, _, _) in enumerate(rules):
        events.append((t0 + 60 * j, rid, "published", "published", action, "", "", 0))
        events.append((t0 + 120 + 60 * j, rid, "feedback", "applied", action, "applied", "ep-1", 0))
        for h in range(48):
            events.append(
                (t0 + 600 + h * HOUR, rid, "feedback", "applied", action, "applied", "ep-1",
                 (h + 1) * (j + 1))
            )  # fmt: skip
    events.append((t0 + 5 * HOUR, "r-throttle-zoom", "feedback", "failed", "throttle", "failed",
                   "ep-2", 0))  # fmt: skip
    values = ", ".join(
        f"(fromUnixTimestamp64Milli({ts * 1000}), '{rid}', 1, '{ev}', '{st}', '{act}', '{fb}', "
        f"'{ep}', {hits}, {hits * 10}, {hits * 1000}, '')"
        for ts, rid, ev, st, act, fb, ep, hits in events
    )
    out.append(
        "INSERT INTO rule_events (ts, rule_id, rule_version, event, state, action, feedback, "
        f"enforcement_point, hits, hit_packets, hit_bytes, detail) VALUES {values}"
    )
    return out


def insert_all(ch: Any, now: int, *, rules: bool = True) -> list[Win]:
    """Fill a migrated database; the usage windows inserted."""
    windows = make_windows(now)
    messages = [_usage_message(w) for w in windows]
    for i in range(3):  # several inserts: parts the queries must merge
        cols, _ = combine([parse_usage(m) for m in messages[i::3]])
        ch.insert("voip_usage_in", cols)
    cols, _ = parse_voip_flows(_flows(now))
    ch.insert("flows_voip", cols)
    values = ", ".join(
        f"('{c.replace(chr(39), chr(92) + chr(39))}', '{r}', '{k}', {lat}, {lon}, now64(3))"
        for c, (r, k, lat, lon) in CITY_INFO.items()
        if lat is not None
    )
    ch.execute(f"INSERT INTO cities (city, region, country, lat, lon, updated) VALUES {values}")
    for stmt in _traffic_sql(now).split(";"):
        ch.execute(stmt)
    if rules:
        for stmt in _rules_sql(now):
            ch.execute(stmt)
    return windows
