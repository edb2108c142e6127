"""Policy evaluator throughput and the guardrails' split, pure path.

1. Usage windows per CPU-second through :class:`voipflow.enforcement.evaluator.Evaluator`
   for P policies over C cities x A apps, a share of the windows hot (so
   rules fire and renew), timed with ``time.process_time``.
2. The never-block split: time to cut K protected /32s out of a /8 target.

Usage: ``python -m benchmarks.evaluator_bench [--policies P] [--cities C]
[--minutes M] [--runs R]``. Prints medians of the runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from voipflow.enforcement.config import GuardrailConfig
from voipflow.enforcement.evaluator import Evaluator, Publish
from voipflow.enforcement.guardrails import Guardrails
from voipflow.enforcement.policy import parse_policies
from voipflow.enforcement.targets import PeerSet, TargetResolver

APPS = ("teams", "zoom", "whatsapp", "sip")


def _policies(n: int) -> str:
    lines = ["policies:"]
    for i in range(n):
        lines += [
            f"  - name: p{i}",
            f"    match: {{apps: [{APPS[i % len(APPS)]}]}}",
            f"    condition: {{metric: call_seconds, threshold: {100 + i}, for: {1 + i % 5}}}",
            "    action: block",
            "    target: subscriber_prefixes",
            "    ttl: 10m",
        ]
    return "\n".join(lines) + "\n"


def _windows(cities: int, minutes: int) -> list[dict[str, Any]]:
    t0 = int(time.time() * 1000) // 60_000 * 60_000
    out = []
    for m in range(minutes):
        for c in range(cities):
            for a, app in enumerate(APPS):
                hot = (c + a + m // 7) % 3 == 0
                out.append(
                    {
                        "window_start_ms": t0 + m * 60_000, "window_s": 60, "city": f"c{c}",
                        "region": "r", "country": "DE", "app": app, "flows": 1, "packets": 1,
                        "bytes": 1, "subscribers": 3, "call_seconds": 900.0 if hot else 10.0,
                        "voip_share": 0.2,
                    }
                )  # fmt: skip
    return out


def bench_evaluator(policies: int, cities: int, minutes: int) -> tuple[float, int]:
    pols = list(parse_policies(_policies(policies)).policies)
    prefixes = {f"c{c}": [f"10.{c // 256}.{c % 256}.0/24"] for c in range(cities)}
    resolver = TargetResolver(None, prefixes, PeerSet(60_000, 10))
    guard = GuardrailConfig(max_active_rules=100_000, max_new_rules_per_minute=100_000,
                            max_rules_per_city=100_000)  # fmt: skip
    ev = Evaluator(pols, resolver, Guardrails(guard))
    windows = _windows(cities, minutes)
    now = windows[0]["window_start_ms"]
    published = 0
    t = time.process_time()
    for w in windows:
        published += sum(isinstance(o, Publish) for o in ev.on_usage(w, now))
    return len(windows) / (time.process_time() - t), published


def bench_split(protected: int) -> float:
    prot = ",".join(f"10.{i // 256 % 256}.{i % 256}.{i % 200 + 1}/32" for i in range(protected))
    g = Guardrails(GuardrailConfig(emergency_prefixes=prot, max_prefixes_per_rule=10**7))
    t = time.process_time()
    check = g.check_target("block", ["10.0.0.0/8"])
    assert check.refusal is None
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--policies", type=int, default=20)
    ap.add_argument("--cities", type=int, default=200)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--protected", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rates, splits = [], []
    published = 0
    for _ in range(args.runs):
        rate, published = bench_evaluator(args.policies, args.cities, args.minutes)
        rates.append(rate)
        splits.append(bench_split(args.protected))
    n = args.cities * len(APPS) * args.minutes
    print(
        f"evaluator: {statistics.median(rates):,.0f} windows per CPU-second "
        f"({args.policies} policies, {n} windows, {published} rule versions published)"
    )
    print(
        f"never-block split: {statistics.median(splits) * 1000:.1f} ms CPU to cut "
        f"{args.protected} protected /32s out of a /8"
    )


if __name__ == "__main__":
    main()
