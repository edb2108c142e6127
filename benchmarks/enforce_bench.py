"""Enforcement point throughput: nftables elements per second, FlowSpec rules per second.

nftables, in a throwaway network namespace (``vfe-bench-<pid>``):

- batched: what the enforcement point does, ``--rules`` rules of
  ``--elements / --rules`` prefixes each installed by :class:`NftBackend` in
  one ``nft -f -`` transaction, timed from the call to nft's exit;
- per element: one ``nft add element`` process per prefix, ``--single``
  elements, the way a naive consumer would do it.

Delay: a whole nftables point (Kafka in and out, a local broker from the
project's jars) gets ``--latency`` rules one at a time; p50/p99 from publishing
a rule to reading its ``applied`` feedback.

FlowSpec: a GoBGP speaker (the point's backend) peered on loopback with a
second gobgpd as the router; ``--flowspec-rules`` rules of one prefix each
(two routes: destination and source) announced, timed until the router's RIB
holds every route.

    python -m benchmarks.enforce_bench [--elements 50000] [--rules 100] [--single 100]
                                       [--repeat 3] [--latency 100] [--flowspec-rules 200]

Wall-clock figures depend on the machine's load; the CPU seconds nft itself
used are printed beside them. Needs root (network namespaces), nft and gobgpd.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voipflow.enforcement.points.backend import Batch
from voipflow.enforcement.points.config import EnforceConfig
from voipflow.enforcement.points.desired import normalise
from voipflow.enforcement.points.nftables import NftBackend
from voipflow.netutil import free_port


def make_rule(rule_id: str, prefixes: list[str]) -> dict[str, Any]:
    """A rules.v1 block of UDP to or from ``prefixes`` for an hour."""
    now = int(time.time() * 1000)
    return {
        "schema": "rules.v1",
        "rule_id": rule_id,
        "version": 1,
        "policy": "bench",
        "mode": "enforce",
        "action": "block",
        "match": {"apps": ["bench"], "cities": ["bench"]},
        "target": {"kind": "provider_ranges", "prefixes": prefixes, "protocol": "udp", "ports": []},
        "created_ms": now,
        "expires_ms": now + 3_600_000,
        "evidence": {"condition": "benchmark", "windows": []},
        "reason": "benchmark",
        "produced_ms": now,
    }


class Router:
    """A second gobgpd that accepts the speaker and keeps its FlowSpec routes."""

    def __init__(self, tmp: Path) -> None:
        self.bgp_port, self.api_port = free_port(), free_port()
        families = "".join(
            f"  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n"
            f'      afi-safi-name = "{f}"\n'
            for f in ("ipv4-flowspec", "ipv6-flowspec")
        )
        conf = tmp / "router.toml"
        conf.write_text(
            '[global.config]\n  as = 64512\n  router-id = "192.0.2.254"\n'
            f'  port = {self.bgp_port}\n  local-address-list = ["127.0.0.1"]\n'
            '[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "127.0.0.1"\n'
            "    peer-as = 64512\n  [neighbors.transport.config]\n    passive-mode = true\n"
            + families
        )
        self.proc = subprocess.Popen(
            ["gobgpd", "-f", str(conf), "--api-hosts", f"127.0.0.1:{self.api_port}",
             "--pprof-disable", "-l", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def count(self) -> int:
        """FlowSpec routes in the router's IPv4 RIB."""
        res = subprocess.run(
            ["gobgp", "-p", str(self.api_port), "-j", "global", "rib", "-a", "ipv4-flowspec"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return len(json.loads(res.stdout or "{}")) if res.returncode == 0 else 0

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _prefixes(n: int, start: int = 0) -> list[str]:
    """``n`` distinct, non-adjacent /32s in 100.64.0.0/10 (adjacent ones would collapse)."""
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    return [str(ipaddress.IPv4Address(base + 2 * (start + i))) + "/32" for i in range(n)]


def bench_nft_batched(ns: str, elements: int, rules: int) -> dict[str, float]:
    backend = NftBackend(EnforceConfig(nft_netns=ns))
    backend.start()
    now = int(time.time() * 1000)
    per = elements // rules
    batch = Batch(base=True)
    for i in range(rules):
        doc = make_rule(f"bench-{i}", _prefixes(per, i * per))
        batch.add.append(normalise(doc))
    script = backend.script(batch, now)
    cpu0 = _child_cpu()
    started = time.perf_counter()
    backend.apply(batch, now)
    took = time.perf_counter() - started
    cpu = _child_cpu() - cpu0
    read_started = time.perf_counter()
    backend.installed({r.handle: r for r in batch.add}, now)
    read = time.perf_counter() - read_started
    return {
        "elements": per * rules,
        "rules": rules,
        "seconds": took,
        "elements_per_s": per * rules / took,
        "elements_per_cpu_s": per * rules / cpu,
        "script_kb": len(script) / 1024,
        "read_back_s": read,
    }


def _child_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes (nft, ip)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_nft_single(ns: str, count: int) -> dict[str, float]:
    # An empty ruleset besides this set: nft reads the ruleset on every start.
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input="flush ruleset\nadd table inet single\n"
        "add set inet single s { type ipv4_addr; flags interval, timeout; }\n",
        text=True,
        check=True,
    )
    # One shell in the namespace runs the nft processes, so only nft's own
    # start-up and work is measured, not ``ip netns exec`` per element.
    lines = [f"nft add element inet single s '{{ {p} timeout 3600s }}'" for p in _prefixes(count)]
    cpu0 = _child_cpu()
    started = time.perf_counter()
    subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-e"], input="\n".join(lines) + "\n", text=True,
        check=True,
    )  # fmt: skip
    took = time.perf_counter() - started
    cpu = _child_cpu() - cpu0
    return {
        "elements": count,
        "seconds": took,
        "elements_per_s": count / took,
        "elements_per_cpu_s": count / cpu,
    }


def bench_flowspec(rules: int) -> dict[str, Any]:
    from voipflow.enforcement.points.flowspec import FlowSpecBackend

    tmp = Path(tempfile.mkdtemp(prefix="vfe-bench-"))
    router = Router(tmp)
    backend = FlowSpecBackend(
        EnforceConfig(backend="flowspec", bgp_peer=f"127.0.0.1:{router.bgp_port}")
    )
    try:
        backend.start()
        now = int(time.time() * 1000)
        # Wait for the session with one warm-up rule.
        warm = normalise(make_rule("warm", ["192.0.2.0/24"]))
        backend.installed({warm.handle: warm}, now)
        backend.apply(Batch(add=[warm]), now)
        deadline = time.monotonic() + 60
        while router.count() < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("BGP session did not come up")
            time.sleep(0.2)
        batch = Batch()
        for i, p in enumerate(_prefixes(rules, 1000)):
            batch.add.append(normalise(make_rule(f"fs-{i}", [p])))
        desired = {r.handle: r for r in [warm, *batch.add]}
        backend.installed(desired, now)
        started = time.perf_counter()
        backend.apply(batch, now)
        announced = time.perf_counter() - started
        want = 2 + 2 * rules
        while router.count() < want:
            if time.perf_counter() - started > 300:
                raise RuntimeError("the router did not receive every route")
            time.sleep(0.05)
        took = time.perf_counter() - started
        return {
            "rules": rules,
            "routes": 2 * rules,
            "announce_s": announced,
            "at_router_s": took,
            "rules_per_s": rules / took,
            "routes_per_s": 2 * rules / took,
        }
    finally:
        backend.stop()
        router.close()


def bench_latency(ns: str, count: int) -> dict[str, float]:
    """Publish-to-applied delay of one nftables point: ``count`` rules, one at a time.

    A local Kafka broker (from the project's jars) carries rules.v1 and
    rules-feedback.v1; the point runs in this process, its nft in ``ns``. The
    delay is from handing the rule to the producer to reading its ``applied``
    feedback, so it includes both Kafka hops.
    """
    from kafka import KafkaConsumer, KafkaProducer

    from voipflow.broker import LocalBroker, LocalBrokerConfig, fetch_jars
    from voipflow.enforcement.points.service import EnforcementPoint
    from voipflow.schemas.rules import decode_feedback, encode_rule
    from voipflow.topics import ensure_topics

    tmp = Path(tempfile.mkdtemp(prefix="vfe-bench-kafka-"))
    broker = LocalBroker(
        LocalBrokerConfig(
            jar_dir=fetch_jars(), state_dir=tmp, port=0, controller_port=0, heap_mb=512
        )
    )
    broker.start()
    point = None
    try:
        boot = broker.bootstrap
        ensure_topics(
            boot, {"rules.v1": 1, "rules-feedback.v1": 1}, 1,
            {"rules.v1": {"cleanup.policy": "compact"}},
        )  # fmt: skip
        cfg = EnforceConfig(point_id="bench", nft_netns=ns, reconcile_s=60, hits_s=600)
        point = EnforcementPoint(
            cfg,
            NftBackend(cfg),
            bootstrap=boot,
            rules_topic="rules.v1",
            feedback_topic="rules-feedback.v1",
        )
        point.start()
        point.ready.wait(60)
        producer = KafkaProducer(bootstrap_servers=boot, acks="all", linger_ms=0)
        consumer = KafkaConsumer(
            "rules-feedback.v1", bootstrap_servers=boot, auto_offset_reset="latest"
        )
        consumer.poll(timeout_ms=1000)  # join: only feedback from now on
        delays = []
        for i, p in enumerate(_prefixes(count, 5000)):
            rule = make_rule(f"lat-{i}", [p])
            sent = time.perf_counter()
            producer.send("rules.v1", key=rule["rule_id"].encode(), value=encode_rule(rule))
            producer.flush()
            done = False
            while not done:
                for batch in consumer.poll(timeout_ms=100).values():
                    for rec in batch:
                        msg = decode_feedback(rec.value)
                        if msg["rule_id"] == rule["rule_id"] and msg["status"] == "applied":
                            done = True
                if time.perf_counter() - sent > 30:
                    raise RuntimeError(f"rule {rule['rule_id']} not applied within 30 s")
            delays.append(time.perf_counter() - sent)
        producer.close()
        consumer.close()
        delays.sort()
        return {
            "rules": count,
            "p50_ms": 1000 * delays[len(delays) // 2],
            "p99_ms": 1000 * delays[min(len(delays) - 1, int(len(delays) * 0.99))],
            "max_ms": 1000 * delays[-1],
        }
    finally:
        if point is not None:
            point.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=50_000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--single", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the batched case")
    parser.add_argument(
        "--latency", type=int, default=100, help="rules for the publish-to-applied delay (0: skip)"
    )
    parser.add_argument("--flowspec-rules", type=int, default=200)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("enforce_bench: needs root for network namespaces", file=sys.stderr)
        return 2
    ns = f"vfe-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        runs = [bench_nft_batched(ns, args.elements, args.rules) for _ in range(args.repeat)]
        b = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"nftables batched: {b['elements']:,} elements in {b['rules']} rules, one "
            f"transaction ({b['script_kb']:.0f} KiB script): {b['seconds']:.2f} s = "
            f"{b['elements_per_s']:,.0f} elements/s ({b['elements_per_cpu_s']:,.0f} per CPU "
            f"second of nft); read back with nft -j in {b['read_back_s']:.2f} s "
            f"(medians of {args.repeat} runs)"
        )
        s = bench_nft_single(ns, args.single)
        print(
            f"nftables per element: {s['elements']} nft processes: {s['seconds']:.2f} s = "
            f"{s['elements_per_s']:,.0f} elements/s ({s['elements_per_cpu_s']:,.0f} per CPU "
            f"second) (batched is {b['elements_per_s'] / s['elements_per_s']:,.0f}x faster)"
        )
        if args.latency:
            lat = bench_latency(ns, args.latency)
            print(
                f"nftables point, rule published -> applied feedback read (Kafka both ways): "
                f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, max "
                f"{lat['max_ms']:.0f} ms over {lat['rules']} rules"
            )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    if args.flowspec_rules:
        f = bench_flowspec(args.flowspec_rules)
        print(
            f"flowspec: {f['rules']} rules ({f['routes']} routes) announced by gobgp in "
            f"{f['announce_s']:.2f} s, all in the router's RIB after {f['at_router_s']:.2f} s "
            f"= {f['rules_per_s']:,.0f} rules/s ({f['routes_per_s']:,.0f} routes/s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
