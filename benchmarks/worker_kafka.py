"""The worker through Kafka, for :mod:`benchmarks.worker_bench`: N worker processes
in one consumer group, flow batches produced to them, their CPU and wall time
until every batch and every partial is committed.

The flows topic has ``partitions`` partitions and the batches go to them in
turn, so every worker gets an equal share; the internal partials topic is
keyed by city, so how the keyed agent's work splits depends on where the
cities hash. CPU is read from /proc per worker: over a few idle seconds
before sending (what an idle worker costs) and from the first send until the
commit of the last partial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from voipflow.evaluation.stopping import stop_processes


def _py_spy() -> str:
    """py-spy beside this interpreter (the project's .venv, where ``make setup``
    installs it), else on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else "py-spy"


REPO = Path(__file__).resolve().parents[1]


@dataclass(slots=True)
class KafkaRun:
    """Figures of one run."""

    workers: int
    partitions: int
    flows: int
    #: First send until every flow batch and partial is committed.
    wall_s: float
    #: Per worker, CPU seconds over ``wall_s``.
    cpu_s: list[float]
    #: Per worker, CPU seconds per second while idle in the group.
    idle_cpu: list[float]
    #: Seconds the producer took to hand over every batch.
    send_s: float
    #: Worker CPU seconds in each part of the work (all workers), from their
    #: ``voipflow_worker_cpu_seconds_total``; the rest is Kafka and Faust.
    parts: dict[str, float]
    #: Records on the internal partials topic and on the state changelog.
    partials: int
    state_writes: int
    load_before: float
    load_after: float

    @property
    def flows_per_s(self) -> float:
        return self.flows / self.wall_s

    @property
    def flows_per_cpu_s(self) -> float:
        return self.flows / sum(self.cpu_s)

    def parts_line(self) -> str:
        total = sum(self.cpu_s)
        shares = [f"{part} {cpu / total:.0%}" for part, cpu in self.parts.items()]
        rest = 1 - sum(self.parts.values()) / total
        return "worker CPU: " + ", ".join([*shares, f"Kafka, Faust and the rest {rest:.0%}"])

    def line(self) -> str:
        cpu = " + ".join(f"{c:.2f}" for c in self.cpu_s)
        idle = ", ".join(f"{c:.3f}" for c in self.idle_cpu)
        return (
            f"{self.workers} worker(s), {self.partitions} partitions: "
            f"{self.flows_per_s:,.0f} flows/s wall ({self.flows:,} flows in {self.wall_s:.1f} s, "
            f"sent in {self.send_s:.1f} s), {self.flows_per_cpu_s:,.0f} flows per worker "
            f"CPU-second (CPU s {cpu}; idle CPU s/s {idle}); "
            f"{self.state_writes:,} state writes for {self.partials:,} partials; "
            f"load average {self.load_before:.1f} -> {self.load_after:.1f}"
        )


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parts(workdir: Path, pids: list[int]) -> dict[str, float]:
    """Sum over the workers of ``voipflow_worker_cpu_seconds_total`` by part."""
    from urllib.request import urlopen

    from voipflow.endpoints import endpoint_url

    out: dict[str, float] = {}
    for i, pid in enumerate(pids):
        url = endpoint_url(workdir / str(i), "worker", pid)
        if url is None:
            continue
        with urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith('voipflow_worker_cpu_seconds_total{part="'):
                labels, _, value = line.rpartition(" ")
                part = labels.split('"')[1]
                out[part] = out.get(part, 0.0) + float(value)
    return out


def _load() -> float:
    return os.getloadavg()[0]


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        consumer.close()


def _committed(admin: object, group: str, topic: str, ends: dict[int, int]) -> bool:
    from kafka import TopicPartition

    got = admin.list_group_offsets(group).get(group, {})  # type: ignore[attr-defined]
    return all(
        (om := got.get(TopicPartition(topic, p))) is not None and om.offset >= end
        for p, end in ends.items()
        if end > 0
    )


def run(
    bootstrap: str,
    messages: list[bytes],
    flows: int,
    workdir: Path,
    env_extra: dict[str, str],
    workers: int = 1,
    partitions: int = 4,
    profile: Path | None = None,
    perf: Path | None = None,
) -> KafkaRun:
    """Run ``workers`` worker processes on ``messages``.

    Over the measured interval, ``profile`` records a py-spy profile of the
    first worker (raw collapsed stacks: where its Python time goes) and
    ``perf`` a ``perf record`` of it (on-CPU samples only: what its CPU is
    spent in, kernel and native libraries included; py-spy, on a loaded
    machine, also counts the time a thread waits to be scheduled).
    """
    from kafka import KafkaAdminClient, KafkaProducer

    from voipflow.topics import ensure_topics

    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-flows-{tag}", f"bench-{tag}"
    ensure_topics(bootstrap, {topic: partitions})
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(env_extra)
    env.update(
        {
            "VOIPFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "VOIPFLOW_KAFKA_PARTITIONS": str(partitions),
            "VOIPFLOW_KAFKA_FLOWS_TOPIC": topic,
            "VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC": f"bench-voip-{tag}",
            "VOIPFLOW_KAFKA_USAGE_TOPIC": f"bench-usage-{tag}",
            "VOIPFLOW_KAFKA_TRAFFIC_TOPIC": f"bench-traffic-{tag}",
            "VOIPFLOW_WORKER_APP_ID": group,
            "VOIPFLOW_METRICS_LISTEN": "127.0.0.1:0",  # any free port: the parts' CPU
        }
    )
    procs = []
    for i in range(workers):
        env["VOIPFLOW_DATA_DIR"] = str(workdir / tag / str(i))  # read by _parts
        with (workdir / f"worker-{tag}-{i}.log").open("ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "voipflow", "worker"],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        time.sleep(15 + 5 * (workers - 1))  # joined the group, partitions assigned
        idle0, t_idle = [cpu_s(p.pid) for p in procs], time.monotonic()
        time.sleep(3)
        idle_dt = time.monotonic() - t_idle
        cpu0 = [cpu_s(p.pid) for p in procs]
        parts0 = _parts(workdir / tag, [p.pid for p in procs])
        idle = [(c - i) / idle_dt for c, i in zip(cpu0, idle0, strict=True)]
        load_before = _load()
        spy = None
        if profile is not None:
            spy_cmd = [_py_spy(), "record", "--pid", str(procs[0].pid), "--rate", "250"]
            spy_cmd += ["--nonblocking", "--format", "raw", "--output", str(profile)]
            spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL)
        perf_proc = None
        if perf is not None:
            perf_cmd = ["perf", "record", "-F", "499", "-g", "-p", str(procs[0].pid)]
            perf_proc = subprocess.Popen(
                [*perf_cmd, "-o", str(perf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 << 20)
        t0 = time.monotonic()
        for i, m in enumerate(messages):
            # In turn over the partitions: every worker gets its share.
            producer.send(topic, key=f"192.0.2.{i % 8}".encode(), value=m, partition=i % partitions)
        producer.flush()
        send_s = time.monotonic() - t0
        producer.close()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        flows_ends = _end_offsets(bootstrap, topic)
        partials_topic = f"{group}-city-partials"
        deadline = time.monotonic() + 600
        done = False
        while time.monotonic() < deadline and not done:
            if _committed(admin, group, topic, flows_ends):
                # Every batch's partials are on their topic now: wait for those too.
                done = _committed(
                    admin, group, partials_topic, _end_offsets(bootstrap, partials_topic)
                )
            if not done:
                time.sleep(0.2)
        wall = time.monotonic() - t0
        admin.close()
        cpu = [cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        parts = _parts(workdir / tag, [p.pid for p in procs])
        parts = {k: v - parts0.get(k, 0.0) for k, v in sorted(parts.items())}
        for tool in (spy, perf_proc):
            if tool is not None:
                tool.send_signal(signal.SIGINT)
                tool.wait(timeout=60)
        if not done:
            raise RuntimeError(f"the workers did not commit everything in 600 s (see {workdir})")
        changelog = _end_offsets(bootstrap, f"{group}-city-state-changelog")
        return KafkaRun(
            workers=workers,
            partitions=partitions,
            flows=flows * len(messages),
            wall_s=wall,
            cpu_s=cpu,
            idle_cpu=idle,
            send_s=send_s,
            parts=parts,
            partials=sum(_end_offsets(bootstrap, partials_topic).values()),
            state_writes=sum(changelog.values()),
            load_before=load_before,
            load_after=_load(),
        )
    finally:
        stop_processes(procs)
