"""Running ``voipflow policy run`` against the session's Kafka broker: topics,
usage windows of several cities, the processes, and the rules one pure
evaluator publishes on the same windows (the reference the runs must match)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.enforcement.helpers import evaluator, read_all
from tests.fixtures.paths import REPO
from voipflow.enforcement.config import GuardrailConfig
from voipflow.enforcement.evaluator import Publish
from voipflow.enforcement.kafka_io import COMPACTED
from voipflow.enforcement.policy import parse_policies
from voipflow.enforcement.targets import load_city_prefixes
from voipflow.schemas.rules import decode_rule
from voipflow.schemas.usage import encode_usage, usage_key

CITIES_CSV = REPO / "data" / "cities" / "demo-cities.csv"
APPS = ["teams", "zoom"]


def usage_window(t0: int, minute: int, city: str, app: str, hot: bool) -> dict[str, Any]:
    subs = 8 if (hot and minute >= 2) else 1
    return {
        "schema": "voip-usage.v1",
        "window_start_ms": t0 + minute * 60_000,
        "window_s": 60,
        "city": city,
        "region": city,
        "country": "DE",
        "app": app,
        "flows": 10,
        "packets": 100,
        "bytes": 10_000,
        "subscribers": subs,
        "subscriber_hashes": list(range(subs)),
        "call_seconds": 500.0 if hot else 20.0,
        "voip_share": 0.1,
        "produced_ms": t0,
    }


def produce(bootstrap: str, topic: str, windows: list[dict[str, Any]]) -> None:
    """Produce windows as the worker does: keyed by window, the default partitioner."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for w in windows:
            key = usage_key(w["city"], w["app"], w["window_start_ms"]).encode()
            producer.send(topic, key=key, value=encode_usage(w))
        producer.flush()
    finally:
        producer.close()


def evaluator_env(
    bootstrap: str, topic_factory: Any, tmp_path: Path, policy: str, *, state_partitions: int = 4
) -> dict[str, Any]:
    """Topics of one evaluator group, and the environment of its processes."""
    policies = tmp_path / "policies.yaml"
    policies.write_text(policy)
    topics = {
        "usage": topic_factory(partitions=4, prefix="ev-usage"),
        "rules": topic_factory(partitions=2, configs=COMPACTED, prefix="ev-rules"),
        "events": topic_factory(partitions=2, prefix="ev-events"),
        "state": topic_factory(partitions=state_partitions, configs=COMPACTED, prefix="ev-state"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        VOIPFLOW_DATA_DIR=str(tmp_path / "var"),
        VOIPFLOW_KAFKA_BOOTSTRAP=bootstrap,
        VOIPFLOW_KAFKA_PARTITIONS=str(state_partitions),
        VOIPFLOW_KAFKA_USAGE_TOPIC=topics["usage"],
        VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC=topic_factory(prefix="ev-flows"),
        VOIPFLOW_KAFKA_RULES_TOPIC=topics["rules"],
        VOIPFLOW_KAFKA_RULE_EVENTS_TOPIC=topics["events"],
        VOIPFLOW_EVALUATOR_STATE_TOPIC=topics["state"],
        VOIPFLOW_EVALUATOR_GROUP_ID=f"ev-group-{topics['usage']}",
        VOIPFLOW_EVALUATOR_POLICIES=str(policies),
        VOIPFLOW_EVALUATOR_PREFIX_TABLE=str(CITIES_CSV),
        VOIPFLOW_EVALUATOR_EXIT_WHEN_IDLE_S="8",
        VOIPFLOW_METRICS_LISTEN="",
    )
    t0 = (int(time.time()) - 30 * 60) // 60 * 60_000
    return {"env": env, "topics": topics, "bootstrap": bootstrap, "t0": t0, "policy": policy}


def start(env: dict[str, str], **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "voipflow", "policy", "run"],
        cwd=REPO,
        env={**env, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], want: int) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == want, out[-3000:]
    return out


def reference(
    policy: str, windows: list[dict[str, Any]], guard: GuardrailConfig | None = None
) -> dict[str, dict[str, Any]]:
    """``"rule_id@version"`` -> rule the pure evaluator publishes on ``windows`` in one run."""
    ev = evaluator(
        list(parse_policies(policy).policies),
        guard,
        city_prefixes=load_city_prefixes(CITIES_CSV),
    )
    now = int(time.time() * 1000)
    rules: dict[str, dict[str, Any]] = {}
    for w in windows:
        for out in ev.on_usage(w, now):
            if isinstance(out, Publish):
                rules[f"{out.rule['rule_id']}@{out.rule['version']}"] = out.rule
    return rules


def published(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every rule version on the rules topic, in offset order (tombstones left out)."""
    return [decode_rule(v) for _, v in read_all(bootstrap, topic) if v]


def same_rule(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two versions of a rule say the same (all but when they were produced)."""
    skip = {"produced_ms"}
    return {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


class Running:
    """One ``voipflow policy run`` process whose output is read as it comes."""

    def __init__(self, env: dict[str, str], **extra: str) -> None:
        import threading

        self.proc = start(env, **extra)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def owned_scopes(self) -> list[str]:
        """The scopes partitions of the last "evaluator owns" line ("" when none yet)."""
        owns = [ln for ln in self.lines if "evaluator owns" in ln]
        return [] if not owns else [owns[-1].split("scopes=")[1].split("]")[0] + "]"]

    def wait_for(self, what: Any, timeout_s: float = 120.0) -> None:
        """Wait until ``what()`` is true; fail if the process ends or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not what():
            assert self.proc.poll() is None, self.output[-3000:]
            assert time.monotonic() < deadline, (
                f"not reached in {timeout_s} s\n{self.output[-3000:]}"
            )
            time.sleep(0.3)

    def finish(self, want: int) -> str:
        self.proc.wait(timeout=300)
        self._reader.join(timeout=10)
        assert self.proc.returncode == want, self.output[-3000:]
        return self.output

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)


def owns_scopes(run: Running) -> bool:
    """The process owns at least one scopes partition now (by its last log line)."""
    last = run.owned_scopes()
    return bool(last) and last[0] != "[]"


def topic_size(bootstrap: str, topic: str) -> int:
    """Messages written to ``topic`` so far (the sum of its end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def peer_of(i: int) -> str:
    """The peer of the ``i``-th city (never .0: S16 arrays drop trailing zero bytes)."""
    return f"198.51.100.{i + 1}/32"


def produce_peers(bootstrap: str, topic: str, cities: list[str], app: str, at_ms: int) -> None:
    """One voip-flows batch with one peer per city (:func:`peer_of` its index), on partition 0."""
    import numpy as np
    from kafka import KafkaProducer

    from voipflow.schemas import voipflows

    n = len(cities)
    addrs = [b"\x00" * 10 + b"\xff\xff" + bytes([198, 51, 100, i + 1]) for i in range(n)]
    batch = voipflows.make_voip_batch(
        {
            "flow_end_ms": np.full(n, at_ms, dtype=np.int64),
            "city": np.array(cities, dtype=object),
            "app": np.array([app] * n, dtype=object),
            "peer_addr": np.array(addrs, dtype="S16"),
        }
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=b"peers", value=voipflows.encode(batch), partition=0)
        producer.flush()
    finally:
        producer.close()
