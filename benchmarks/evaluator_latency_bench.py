"""Delay from a usage window on voip-usage.v1 to the rule it fires on rules.v1.

A ``voipflow policy run`` subprocess on a local broker (started here on free
ports unless ``VOIPFLOW_KAFKA_BOOTSTRAP`` is set) evaluates one policy that
fires on a single hot window. The benchmark sends hot windows of new (city,
app) scopes at a steady rate, each firing one rule, and takes the delay from
each window's send time to the Kafka timestamp of its rule (both wall clock
of this machine; the rule's timestamp is set when the evaluator publishes it,
after its state was written and flushed). The delay to *applied* adds the
enforcement point's own delay (its benchmark).

Usage: ``python -m benchmarks.evaluator_latency_bench [--rules N] [--rate R]``.
Prints p50, p99 and max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.kafka_broker import bench_bootstrap
from voipflow.schemas.rules import decode_rule
from voipflow.schemas.usage import encode_usage, usage_key

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "data" / "cities" / "demo-cities.csv"
POLICY = """\
policies:
  - name: bench
    condition: {metric: call_seconds, threshold: 100, for: 1}
    action: block
    target: subscriber_prefixes
    ttl: 1h
    mode: shadow
"""


def _cities() -> list[str]:
    return sorted({line.split(",")[1] for line in TABLE.read_text().splitlines()[1:] if line})


def run(bootstrap: str, n: int, rate: float, workdir: Path) -> list[float]:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from voipflow.topics import ensure_topics

    tag = uuid.uuid4().hex[:8]
    usage_topic, rules_topic = f"bench-usage-{tag}", f"bench-rules-{tag}"
    ensure_topics(bootstrap, {usage_topic: 4, rules_topic: 4})
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        VOIPFLOW_KAFKA_BOOTSTRAP=bootstrap,
        VOIPFLOW_KAFKA_USAGE_TOPIC=usage_topic,
        VOIPFLOW_KAFKA_RULES_TOPIC=rules_topic,
        VOIPFLOW_KAFKA_RULE_EVENTS_TOPIC=f"bench-events-{tag}",
        VOIPFLOW_EVALUATOR_STATE_TOPIC=f"bench-state-{tag}",
        VOIPFLOW_EVALUATOR_GROUP_ID=f"bench-{tag}",
        VOIPFLOW_EVALUATOR_POLICIES=str(policy),
        VOIPFLOW_EVALUATOR_PREFIX_TABLE=str(TABLE),
        VOIPFLOW_GUARDRAILS_MAX_NEW_RULES_PER_MINUTE="100000",
        VOIPFLOW_GUARDRAILS_MAX_ACTIVE_RULES="100000",
        VOIPFLOW_GUARDRAILS_MAX_RULES_PER_CITY="100000",
        VOIPFLOW_METRICS_LISTEN="",
        VOIPFLOW_DATA_DIR=str(workdir / tag),
    )
    cities = _cities()
    scopes = [(cities[i % len(cities)], f"app{i // len(cities)}") for i in range(n)]
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    tps = [TopicPartition(rules_topic, p) for p in range(4)]
    consumer.assign(tps)
    with (workdir / f"evaluator-{tag}.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voipflow", "policy", "run"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    try:
        time.sleep(12)  # started, joined its group
        sent: dict[tuple[str, str], float] = {}
        window = int(time.time()) // 60 * 60_000 - 60_000
        for city, app in scopes:
            msg = {
                "schema": "voip-usage.v1", "window_start_ms": window, "window_s": 60,
                "city": city, "region": city, "country": "XX", "app": app, "flows": 1,
                "packets": 1, "bytes": 1, "subscribers": 1, "subscriber_hashes": [1],
                "call_seconds": 500.0, "voip_share": 0.1, "produced_ms": 0,
            }  # fmt: skip
            sent[(city, app)] = time.time()
            producer.send(usage_topic, key=usage_key(city, app, window).encode(),
                          value=encode_usage(msg))  # fmt: skip
            producer.flush()
            time.sleep(1 / rate)
        delays: list[float] = []
        deadline = time.monotonic() + 120
        while len(delays) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.value is None:
                        continue
                    rule = decode_rule(rec.value)
                    key = (rule["match"]["cities"][0], rule["match"]["apps"][0])
                    delays.append(rec.timestamp / 1000 - sent[key])
        return delays
    finally:
        producer.close()
        consumer.close()
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rules", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20.0, help="hot windows sent per second")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="evaluator-bench-") as tmp:
        workdir = Path(tmp)
        with bench_bootstrap(workdir) as bootstrap:
            delays = sorted(run(bootstrap, args.rules, args.rate, workdir))
    if not delays:
        print("no rule arrived")
        return 1
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print(
        json.dumps(
            {
                "rules": len(delays),
                "sent": args.rules,
                "rate_per_s": args.rate,
                "p50_ms": round(statistics.median(delays) * 1000, 1),
                "p99_ms": round(p99 * 1000, 1),
                "max_ms": round(delays[-1] * 1000, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
