"""Delay from a usage row's publication to its rule's ``applied`` feedback, end to end.

The whole decision path as it runs in production, through real Kafka: a
``voipflow policy run`` process (the evaluator) and a ``voipflow enforce``
process (log backend, or nftables in a throwaway network namespace with
``--backend nftables``, root) on a local broker started here on free ports
(or ``VOIPFLOW_KAFKA_BOOTSTRAP``). The benchmark publishes usage windows on
voip-usage.v1 as the worker does when a window closes, each for a new (city,
app) and hot enough to fire a rule at once (``for: 1``), at a steady rate,
and times each one:

* ``usage -> rule``: from handing the usage row to the producer to the
  Kafka timestamp of the rule on rules.v1 (set by the evaluator's producer,
  after its state was written and flushed);
* ``rule -> applied``: from there to the Kafka timestamp of the point's
  ``applied`` feedback on rules-feedback.v1 (set after the backend changed);
* ``usage -> applied``: the sum, the figure of the loop.

All timestamps are this machine's wall clock. What comes before the usage
row -- a window closes at its end plus the worker's lateness, and the worker
publishes it within a second of that (``benchmarks.e2e_bench``, "window end
-> voip_usage_1m") -- is the worker's and not measured here.

    python -m benchmarks.loop_latency_bench [--rules 200] [--rate 5] [--backend log|nftables]

Prints p50, p99 and max of each, and the load average; asserts nothing.
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
from typing import Any

from benchmarks.kafka_broker import bench_bootstrap
from voipflow.enforcement.evaluator import rule_id
from voipflow.enforcement.policy import load_policies
from voipflow.evaluation.stopping import stop_processes
from voipflow.schemas.rules import decode_feedback
from voipflow.schemas.usage import encode_usage, usage_key

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "data" / "cities" / "demo-cities.csv"
POLICY = """\
policies:
  - name: loop-bench
    condition: {metric: call_seconds, threshold: 100, for: 1}
    action: block
    target: subscriber_prefixes
    ttl: 1h
    mode: shadow
"""
PARTITIONS = 4


def _cities() -> list[str]:
    return sorted({line.split(",")[1] for line in TABLE.read_text().splitlines()[1:] if line})


def _quantiles(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {}
    return {
        "p50_ms": round(statistics.median(v) * 1000, 1),
        "p99_ms": round(v[min(len(v) - 1, int(len(v) * 0.99))] * 1000, 1),
        "max_ms": round(v[-1] * 1000, 1),
    }


class Loop:
    """The evaluator and the enforcement point as subprocesses on their own topics."""

    def __init__(self, bootstrap: str, workdir: Path, backend: str, netns: str) -> None:
        from voipflow.topics import ensure_topics

        tag = uuid.uuid4().hex[:8]
        self.usage, self.rules, self.feedback = (
            f"loop-usage-{tag}",
            f"loop-rules-{tag}",
            f"loop-feedback-{tag}",
        )
        ensure_topics(
            bootstrap,
            {self.usage: PARTITIONS, self.rules: PARTITIONS, self.feedback: PARTITIONS},
            1,
            {self.rules: {"cleanup.policy": "compact"}},
        )
        self.policy_file = workdir / "policy.yaml"
        self.policy_file.write_text(POLICY)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
        env.update(
            VOIPFLOW_KAFKA_BOOTSTRAP=bootstrap,
            VOIPFLOW_KAFKA_PARTITIONS=str(PARTITIONS),
            VOIPFLOW_KAFKA_USAGE_TOPIC=self.usage,
            VOIPFLOW_KAFKA_RULES_TOPIC=self.rules,
            VOIPFLOW_KAFKA_FEEDBACK_TOPIC=self.feedback,
            VOIPFLOW_KAFKA_RULE_EVENTS_TOPIC=f"loop-events-{tag}",
            VOIPFLOW_EVALUATOR_STATE_TOPIC=f"loop-state-{tag}",
            VOIPFLOW_EVALUATOR_GROUP_ID=f"loop-{tag}",
            VOIPFLOW_EVALUATOR_POLICIES=str(self.policy_file),
            VOIPFLOW_EVALUATOR_PREFIX_TABLE=str(TABLE),
            VOIPFLOW_GUARDRAILS_MAX_NEW_RULES_PER_MINUTE="100000",
            VOIPFLOW_GUARDRAILS_MAX_ACTIVE_RULES="100000",
            VOIPFLOW_GUARDRAILS_MAX_RULES_PER_CITY="100000",
            VOIPFLOW_ENFORCE_POINT_ID="loop-bench",
            VOIPFLOW_ENFORCE_GROUP=f"loop-enforce-{tag}",
            VOIPFLOW_ENFORCE_LOG_OUTPUT=str(workdir / "actions.log"),
            VOIPFLOW_ENFORCE_NFT_NETNS=netns,
            VOIPFLOW_ENFORCE_NFT_TABLE="loopbench",
            VOIPFLOW_METRICS_LISTEN="",
            VOIPFLOW_DATA_DIR=str(workdir / tag),
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        for name, args in (
            ("enforce", ["enforce", "--backend", backend]),
            ("evaluator", ["policy", "run"]),
        ):
            with (workdir / f"{name}.log").open("ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "voipflow", *args],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def stop(self) -> None:
        stop_processes(self.procs)


def run(bootstrap: str, n: int, rate: float, backend: str, workdir: Path, netns: str) -> Any:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    loop = Loop(bootstrap, workdir, backend, netns)
    (policy,) = load_policies(loop.policy_file)
    cities = _cities()
    scopes = [(cities[i % len(cities)], f"app{i // len(cities)}") for i in range(n)]
    ids = {rule_id(policy, c, a): (c, a) for c, a in scopes}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    tps = [TopicPartition(t, p) for t in (loop.rules, loop.feedback) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    sent: dict[tuple[str, str], float] = {}
    ruled: dict[tuple[str, str], float] = {}
    applied: dict[tuple[str, str], float] = {}

    def send(city: str, app: str) -> None:
        msg = {
            "schema": "voip-usage.v1", "window_start_ms": window, "window_s": 60,
            "city": city, "region": city, "country": "XX", "app": app, "flows": 1,
            "packets": 1, "bytes": 1, "subscribers": 1, "subscriber_hashes": [1],
            "call_seconds": 500.0, "voip_share": 0.1, "produced_ms": int(time.time() * 1000),
        }  # fmt: skip
        sent[(city, app)] = time.time()
        producer.send(loop.usage, key=usage_key(city, app, window).encode(),
                      value=encode_usage(msg))  # fmt: skip
        producer.flush()

    window = int(time.time()) // 60 * 60_000 - 60_000
    try:
        # Warm-up: one rule all the way to applied, so the figures are of a
        # running loop, not of the evaluator joining its group.
        warm = (cities[0], "warmup")
        ids[rule_id(policy, *warm)] = warm
        send(*warm)
        deadline = time.monotonic() + 180
        while warm not in applied and time.monotonic() < deadline:
            _collect(consumer, loop, ids, ruled, applied, timeout_ms=500)
        if warm not in applied:
            raise RuntimeError("the warm-up rule was not applied within 180 s (see the logs)")
        for key in (ruled, applied, sent):
            key.pop(warm, None)
        for city, app in scopes:
            send(city, app)
            _collect(consumer, loop, ids, ruled, applied, timeout_ms=0)
            time.sleep(1 / rate)
        deadline = time.monotonic() + 120
        while len(applied) < n and time.monotonic() < deadline:
            _collect(consumer, loop, ids, ruled, applied, timeout_ms=500)
    finally:
        producer.close()
        consumer.close()
        loop.stop()
    to_rule = [ruled[k] - sent[k] for k in ruled]
    to_applied = [applied[k] - ruled[k] for k in applied if k in ruled]
    total = [applied[k] - sent[k] for k in applied]
    return to_rule, to_applied, total


def _collect(
    consumer: Any,
    loop: Loop,
    ids: dict[str, tuple[str, str]],
    ruled: dict[tuple[str, str], float],
    applied: dict[tuple[str, str], float],
    timeout_ms: int,
) -> None:
    for tp, records in consumer.poll(timeout_ms=timeout_ms).items():
        for rec in records:
            if rec.value is None:
                continue
            if tp.topic == loop.rules:
                scope = ids.get(rec.key.decode())
                if scope is not None:
                    ruled.setdefault(scope, rec.timestamp / 1000)
                continue
            fb = decode_feedback(rec.value)
            scope = ids.get(fb["rule_id"])
            if scope is not None and fb["status"] == "applied":
                applied.setdefault(scope, rec.timestamp / 1000)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rules", type=int, default=200, help="usage windows, each firing a rule")
    ap.add_argument("--rate", type=float, default=5.0, help="usage windows sent per second")
    ap.add_argument("--backend", choices=("log", "nftables"), default="log")
    args = ap.parse_args()
    netns = ""
    if args.backend == "nftables":
        netns = f"loop-bench-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", netns], check=True)
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="loop-bench-") as tmp:
            workdir = Path(tmp)
            with bench_bootstrap(workdir) as bootstrap:
                to_rule, to_applied, total = run(
                    bootstrap, args.rules, args.rate, args.backend, workdir, netns
                )
    finally:
        if netns:
            subprocess.run(["ip", "netns", "del", netns], check=False)
    load_after = os.getloadavg()
    print(
        json.dumps(
            {
                "backend": args.backend,
                "rules_sent": args.rules,
                "rules_applied": len(total),
                "rate_per_s": args.rate,
                "usage_to_rule": _quantiles(to_rule),
                "rule_to_applied": _quantiles(to_applied),
                "usage_to_applied": _quantiles(total),
                "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
                "cpus": os.cpu_count(),
            }
        )
    )
    return 0 if total else 1


if __name__ == "__main__":
    sys.exit(main())
