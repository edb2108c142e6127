"""The worker on the real broker: exact per-city and per-exporter totals with one worker,
and with two when one is SIGKILLed mid-stream; bad messages skipped.

Workers are ``python -m voipflow worker`` subprocesses. Windows close on event
time only, so the test controls when: data spans a few windows well inside the
lateness allowance, and once the group has committed every data batch, one
flush batch per exporter far in the future closes them all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError
from kafka.partitioner import murmur2

from tests.fixtures.paths import REPO
from voipflow.evaluation.stopping import stop_processes
from voipflow.schemas import flowbatch as fb
from voipflow.schemas import voipflows
from voipflow.schemas.topics import WINDOW_MESSAGE_MAX_BYTES
from voipflow.streams.aggregate import apply_partial, close_windows, new_state
from voipflow.streams.app import EXPORTER_KEY_PREFIX
from voipflow.streams.config import WorkerConfig
from voipflow.streams.pipeline import BUNDLE_KEY, FlowPipeline, decode_bundle
from voipflow.topics import ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TABLE = REPO / "data" / "cities" / "demo-cities.csv"
HOME = "10.0.0.0/8,2001:db8::/32"
WINDOW_S = 5
T0 = 1_800_000_000_000 // (WINDOW_S * 1000) * (WINDOW_S * 1000)
FLUSH_MS = T0 + 10_000_000
EXPORTERS = [f"192.0.2.{i}" for i in range(1, 5)]


def make_batch(seed: int, exporter: str, n: int, t_ms: int) -> bytes:
    rng = np.random.default_rng(seed)
    home = (0x0A000000 + rng.integers(1, 13, n) * 65536 + rng.integers(0, 60, n)).astype(np.uint32)
    other = rng.integers(0x01000000, 0x09000000, n).astype(np.uint32)
    start = t_ms + rng.integers(0, 2000, n)
    return fb.encode(
        fb.make_batch(
            {
                "src_addr": fb.ipv4_to_addr16(home),
                "dst_addr": fb.ipv4_to_addr16(other),
                "src_port": rng.integers(1024, 65535, n),
                "dst_port": rng.choice([3478, 5060, 8801, 443, 53, 40000], n),
                "protocol": np.full(n, 17),
                "packets": rng.integers(1, 200, n),
                "bytes": rng.integers(300, 40_000, n),
                "flow_start_ms": start,
                "flow_end_ms": start + rng.integers(0, 800, n),
                "sampling_rate": rng.choice([1, 10], n),
                "exporter_addr": np.full(n, fb.text_to_addr16(exporter), dtype="S16"),
            }
        )
    )


def dataset(batches: int, n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(batches):
        exporter = EXPORTERS[i % len(EXPORTERS)]
        out.append((exporter, make_batch(i, exporter, n, T0 + (i // 4) * 1000)))
    return out


def expected_windows(data: list[tuple[str, bytes]]) -> dict[str, tuple[str, int, int]]:
    """Usage key -> (city, flows, bytes) of every data window, computed in-process."""
    cfg = WorkerConfig(prefix_table=TABLE, home_networks=HOME, window_s=WINDOW_S)
    pipe = FlowPipeline(cfg)
    pipe.start()
    states: dict[str, dict[str, Any]] = {}
    for off, (_, value) in enumerate(data):
        for city, part in pipe.process(value, "ref:0", off).partials.items():
            apply_partial(states.setdefault(city, new_state()), json.loads(part))
    windows = {}
    for city, st in states.items():
        for m in close_windows(st, city, WINDOW_S, 1000, watermark_ms=2**62, produced_ms=0):
            key = f"{city}|{m['app']}|{m['window_start_ms']}"
            windows[key] = (city, m["flows"], m["bytes"])
    return windows


def expected_traffic(data: list[tuple[str, bytes]]) -> dict[str, tuple[int, int]]:
    """Per exporter: (records, sampling-corrected bytes), straight from the input batches."""
    flows: Counter[str] = Counter()
    byts: Counter[str] = Counter()
    for exporter, value in data:
        b = fb.decode(value)
        flows[exporter] += len(b)
        rate = np.maximum(b["sampling_rate"].astype(np.int64), 1)
        byts[exporter] += int((b["bytes"].astype(np.int64) * rate).sum())
    return {e: (flows[e], byts[e]) for e in flows}


def traffic_totals(bootstrap: str, topic: str) -> dict[str, tuple[int, int]]:
    """Per-exporter (flows, bytes_est) of windows before the flush (first copy per
    window)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    seen: dict[tuple[str, int, int], dict[str, Any]] = {}
    for m in consumer:
        msg = json.loads(m.value)
        assert m.key.decode() == f"{msg['exporter']}|{msg['window_start_ms']}"
        seen.setdefault(
            (msg["exporter"], msg["window_start_ms"], msg["observation_domain_id"]), msg
        )
    consumer.close()
    flows: Counter[str] = Counter()
    byts: Counter[str] = Counter()
    for msg in seen.values():
        if msg["window_start_ms"] < FLUSH_MS - 1_000_000:
            flows[msg["exporter"]] += msg["flows"]
            byts[msg["exporter"]] += msg["bytes_est"]
    return {e: (flows[e], byts[e]) for e in flows}


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "voipflow", "worker", "--loglevel", "warning"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def committed_all(bootstrap: str, group: str, topic: str, producer_ends: dict[int, int]) -> bool:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError as exc:
        if not exc.retriable:  # e.g. the coordinator is still loading: ask again
            raise
        return False
    finally:
        admin.close()
    return all(
        (om := offsets.get(TopicPartition(topic, p))) is not None and om.offset >= end
        for p, end in producer_ends.items()
    )


class VoipMessage(NamedTuple):
    """What a test checks of one voip-flows message."""

    headers: dict[str, bytes]
    city: str
    roles: list[str]


def voip_flow_messages(bootstrap: str, topic: str) -> list[VoipMessage]:
    """Headers, key and roles of every voip-flows message."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    out = [
        VoipMessage(dict(m.headers), m.key.decode(), voipflows.decode(m.value)["role"].to_pylist())
        for m in consumer
    ]
    consumer.close()
    return out


def check_source_positions(
    messages: list[VoipMessage], inputs: dict[tuple[str, int], bytes]
) -> int:
    """Every voip-flows message made from ``inputs`` ((source, offset) -> flows.v1 value)
    carries the position the worker gives it: the input's partition and offset and its
    place among that input's messages, by city (computed here in-process). Copies of a
    position (an input processed again) are the same city and rows. Returns the copies."""
    pipe = FlowPipeline(WorkerConfig(prefix_table=TABLE, home_networks=HOME, window_s=WINDOW_S))
    pipe.start()
    expected: dict[voipflows.SourcePosition, tuple[str, int]] = {}
    for (source, offset), value in inputs.items():
        out = pipe.process(value, source, offset)
        for i, (city, data) in enumerate(sorted(out.voip_flows, key=lambda m: m[0])):
            pos = voipflows.SourcePosition(source, offset, i)
            expected[pos] = (city, len(voipflows.decode(data)))
    got: dict[voipflows.SourcePosition, list[tuple[str, int]]] = {}
    for m in messages:
        pos = voipflows.read_position(m.headers)
        assert pos is not None, m.headers
        if (pos.source, pos.offset) in inputs:
            got.setdefault(pos, []).append((m.city, len(m.roles)))
    assert expected and got.keys() == expected.keys()
    for pos, copies in got.items():
        assert set(copies) == {expected[pos]}, pos
    return sum(len(c) - 1 for c in got.values())


def usage_windows(bootstrap: str, topic: str) -> dict[str, tuple[str, int, int]]:
    """Usage key -> (city, flows, bytes) of windows before the flush (first copy per
    key)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    seen: dict[str, dict[str, Any]] = {}
    for m in consumer:
        seen.setdefault(m.key.decode(), json.loads(m.value))
    consumer.close()
    return {
        key: (msg["city"], msg["flows"], msg["bytes"])
        for key, msg in seen.items()
        if msg["window_start_ms"] < FLUSH_MS - 1_000_000
    }


def run_workers(
    bootstrap: str,
    tmp_path: Path,
    data: list[tuple[str, bytes]],
    expected: dict[str, tuple[str, int, int]],
    workers: int,
    kill: bool,
    fault_batches: int = 0,
    voip_flows: list[VoipMessage] | None = None,
    inputs: dict[tuple[str, int], bytes] | None = None,
    partials: list[tuple[int, bytes, bytes]] | None = None,
    names: dict[str, str] | None = None,
) -> tuple[dict[str, tuple[str, int, int]], dict[str, tuple[int, int]]]:
    """Run ``workers`` workers over ``data``; ``kill`` SIGKILLs the first mid-stream,
    ``fault_batches`` makes it kill itself right after a commit (then it is restarted).
    ``voip_flows`` gets each voip-flows message, ``inputs`` each data batch by its
    source (``"topic:partition"``) and offset, ``partials`` each message of the
    internal partials topic as (partition, key, value), ``names`` the topics'
    names and the worker's app id (``"app_id"``)."""
    tag = uuid.uuid4().hex[:8]
    topics = {n: f"{n}-{tag}" for n in ("flows", "voip-flows", "usage", "traffic")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(
        {
            "VOIPFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "VOIPFLOW_KAFKA_PARTITIONS": "4",
            "VOIPFLOW_KAFKA_COMPRESSION": "lz4",
            "VOIPFLOW_KAFKA_FLOWS_TOPIC": topics["flows"],
            "VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC": topics["voip-flows"],
            "VOIPFLOW_KAFKA_USAGE_TOPIC": topics["usage"],
            "VOIPFLOW_KAFKA_TRAFFIC_TOPIC": topics["traffic"],
            "VOIPFLOW_WORKER_APP_ID": f"vf-test-{tag}",
            "VOIPFLOW_WORKER_PREFIX_TABLE": str(TABLE),
            "VOIPFLOW_WORKER_HOME_NETWORKS": HOME,
            "VOIPFLOW_WORKER_WINDOW_S": str(WINDOW_S),
            "VOIPFLOW_WORKER_LATENESS_S": "1000",
            "VOIPFLOW_WORKER_IDLE_CLOSE_S": "1000000",
            "VOIPFLOW_METRICS_LISTEN": "",
            "VOIPFLOW_DATA_DIR": str(tmp_path / f"data-{tag}"),
        }
    )
    if names is not None:
        names.update(topics, app_id=env["VOIPFLOW_WORKER_APP_ID"])
    # Created here, before the workers, with Kafka's default message size
    # limit, as a deployment's older topics are: the worker raises the usage
    # topic's at start (large window messages).
    ensure_topics(bootstrap, {topics[n]: 4 for n in ("flows", "usage", "voip-flows", "traffic")})
    first = dict(env)
    if fault_batches:
        first["VOIPFLOW_WORKER_FAULT_KILL_AFTER_BATCHES"] = str(fault_batches)
    procs = [
        start_worker(first if i == 0 else env, tmp_path / f"worker-{tag}-{i}.log")
        for i in range(workers)
    ]
    restarted = False

    def restart_killed() -> None:
        nonlocal restarted
        if fault_batches and not restarted and procs[0].poll() is not None:
            assert procs[0].returncode == -signal.SIGKILL, procs[0].returncode
            restarted = True
            procs.append(start_worker(env, tmp_path / f"worker-{tag}-restarted.log"))

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    ends: dict[int, int] = {}
    try:
        half = len(data) // 2
        for i, (key, value) in enumerate(data):
            md = producer.send(topics["flows"], key=key.encode(), value=value).get(timeout=30)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
            if inputs is not None:
                inputs[(f"{md.topic}:{md.partition}", md.offset)] = value
            if i == 3:
                md = producer.send(topics["flows"], key=b"bad", value=b"\x00garbage").get(30)
                ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
            if kill and i == half:
                time.sleep(8)  # let the first worker take part and apply batches
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait()
            restart_killed()
            time.sleep(0.05)
        deadline = time.monotonic() + 240
        group = env["VOIPFLOW_WORKER_APP_ID"]
        while not committed_all(bootstrap, group, topics["flows"], ends):
            restart_killed()
            assert time.monotonic() < deadline, "the workers did not consume every batch"
            assert any(p.poll() is None for p in procs), "every worker died"
            time.sleep(1)
        for i, exporter in enumerate(EXPORTERS):
            producer.send(
                topics["flows"],
                key=exporter.encode(),
                value=make_batch(10_000 + i, exporter, 400, FLUSH_MS),
            ).get(timeout=30)
        producer.flush()
        assert restarted or not fault_batches, "the fault was never injected"
        # Wait until every data window has been published at least once (a
        # window lost for good ends in the deadline), then give copies that are
        # still in flight a moment.
        got: dict[str, tuple[str, int, int]] = {}
        traffic = expected_traffic(data)
        while time.monotonic() < deadline:
            time.sleep(2)
            got = usage_windows(bootstrap, topics["usage"])
            if expected.keys() <= got.keys():
                break
        else:
            missing = sorted(expected.keys() - got.keys())
            raise AssertionError(f"windows never published: {missing[:10]} ({len(missing)} in all)")
        # Exporter windows: per-exporter totals are all the test can expect
        # without re-implementing the worker; wait for them up to the deadline.
        while (tg := traffic_totals(bootstrap, topics["traffic"])) != traffic:
            if time.monotonic() > deadline:
                break
            time.sleep(2)
        if voip_flows is not None:
            voip_flows += voip_flow_messages(bootstrap, topics["voip-flows"])
        if partials is not None:
            consumer = KafkaConsumer(
                f"{env['VOIPFLOW_WORKER_APP_ID']}-city-partials",
                bootstrap_servers=bootstrap,
                auto_offset_reset="earliest",
                consumer_timeout_ms=3000,
            )
            partials += [(m.partition, m.key, m.value) for m in consumer]
            consumer.close()
        return usage_windows(bootstrap, topics["usage"]), tg
    finally:
        producer.close()
        stop_processes(procs)


@pytest.fixture(scope="module")
def data() -> list[tuple[str, bytes]]:
    return dataset(batches=48, n=500)


@pytest.fixture(scope="module")
def expected(data: list[tuple[str, bytes]]) -> dict[str, tuple[str, int, int]]:
    return expected_windows(data)


def test_one_worker_publishes_the_input_totals(
    kafka_bootstrap: str, tmp_path: Path, data: list[tuple[str, bytes]], expected: dict
) -> None:
    flows: list[VoipMessage] = []
    inputs: dict[tuple[str, int], bytes] = {}
    partials: list[tuple[int, bytes, bytes]] = []
    got, traffic = run_workers(
        kafka_bootstrap,
        tmp_path,
        data,
        expected,
        workers=1,
        kill=False,
        voip_flows=flows,
        inputs=inputs,
        partials=partials,
    )
    assert got == expected
    assert traffic == expected_traffic(data)
    # A flow batch's partials travel as one bundle per partition, and every
    # key in a bundle is on the partition Kafka's key partitioner gives it
    # (murmur2, the same in every client): where that key's ticks and its
    # table changelog go.
    bundled: Counter[str] = Counter()
    for partition, key, value in partials:
        if key != BUNDLE_KEY.encode():
            continue
        for part_key, _ in decode_bundle(value):
            bundled[part_key] += 1
            assert (murmur2(part_key.encode()) & 0x7FFFFFFF) % 4 == partition
    assert {k for k in bundled if not k.startswith(EXPORTER_KEY_PREFIX)} == {
        city for city, _, _ in expected.values()
    }
    assert {k[1:] for k in bundled if k.startswith(EXPORTER_KEY_PREFIX)} == set(EXPORTERS)
    # The VoIP flows carry both verdicts under the schema they are written in.
    assert flows and {m.headers.get("schema") for m in flows} == {voipflows.SCHEMA_NAME.encode()}
    roles = {r for m in flows for r in m.roles}
    assert roles and roles <= set(voipflows.ROLES)
    # ... and the position of the input they were made from, each once.
    assert check_source_positions(flows, inputs) == 0


def test_two_workers_one_killed_mid_stream_give_the_same_totals(
    kafka_bootstrap: str, tmp_path: Path, data: list[tuple[str, bytes]], expected: dict
) -> None:
    flows: list[VoipMessage] = []
    inputs: dict[tuple[str, int], bytes] = {}
    got, traffic = run_workers(
        kafka_bootstrap,
        tmp_path,
        data,
        expected,
        workers=2,
        kill=True,
        voip_flows=flows,
        inputs=inputs,
    )
    assert got == expected  # window by window, first copy: none lost, none changed
    assert traffic == expected_traffic(data)  # per exporter, first copy per window
    # The VoIP flows the killed worker had published and the other published
    # again carry the same positions (what the sink drops copies by).
    check_source_positions(flows, inputs)


def test_worker_killed_right_after_a_commit_loses_and_changes_nothing(
    kafka_bootstrap: str, tmp_path: Path, data: list[tuple[str, bytes]], expected: dict
) -> None:
    """SIGKILL at the moment an offset commit returns (fault injection), then a restart:
    every window and exporter total as without the fault (first copy per key)."""
    got, traffic = run_workers(
        kafka_bootstrap, tmp_path, data, expected, workers=1, kill=False, fault_batches=12
    )
    assert got == expected
    assert traffic == expected_traffic(data)


def crowded_city(per_batch: int = 4096) -> list[tuple[str, bytes]]:
    """Every one of Berlin's 65,536 addresses (10.1.0.0/16) in one window, each
    with a STUN, a SIP and a Zoom flow: about 66,000 subscribers per app in
    one city and window, so the city's state and each usage row pass 1 MB."""
    subscribers = 0x0A010000 + np.arange(65_536, dtype=np.uint32)
    out = []
    for i, port in enumerate((3478, 5060, 8801)):
        for j, lo in enumerate(range(0, len(subscribers), per_batch)):
            home = subscribers[lo : lo + per_batch]
            n = len(home)
            rng = np.random.default_rng(1000 * i + j)
            exporter = EXPORTERS[j % len(EXPORTERS)]
            start = T0 + rng.integers(0, 2000, n)
            batch = fb.make_batch(
                {
                    "src_addr": fb.ipv4_to_addr16(home),
                    "dst_addr": fb.ipv4_to_addr16(rng.integers(0x01000000, 0x09000000, n)),
                    "src_port": rng.integers(1024, 65535, n),
                    "dst_port": np.full(n, port),
                    "protocol": np.full(n, 17),
                    "packets": rng.integers(50, 200, n),
                    "bytes": rng.integers(5_000, 40_000, n),
                    "flow_start_ms": start,
                    "flow_end_ms": start + rng.integers(500, 2000, n),
                    "sampling_rate": np.ones(n, dtype=np.int64),
                    "exporter_addr": np.full(n, fb.text_to_addr16(exporter), dtype="S16"),
                }
            )
            out.append((exporter, fb.encode(batch)))
    return out


def test_a_city_whose_state_and_usage_rows_pass_a_megabyte(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The worker's producer stopped on a city state of 1,015,152 bytes at
    340,000 flows/s (Kafka's default limit is 1 MB). Its window topics now
    take WINDOW_MESSAGE_MAX_BYTES, also the usage topic that existed before
    it started: such a city's windows come out whole."""
    data = crowded_city()
    expected = expected_windows(data)
    assert max(flows for _, flows, _ in expected.values()) > 60_000, expected
    names: dict[str, str] = {}
    got, traffic = run_workers(
        kafka_bootstrap, tmp_path, data, expected, workers=1, kill=False, names=names
    )
    assert got == expected
    assert traffic == expected_traffic(data)

    consumer = KafkaConsumer(
        names["usage"],
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    rows = {m.key.decode(): m.value for m in consumer}
    consumer.close()
    biggest = max(rows.values(), key=len)
    assert len(biggest) > 1 << 20, len(biggest)
    row = json.loads(biggest)
    assert row["subscribers"] == len(row["subscriber_hashes"]) > 60_000

    # The topics the worker created take such messages, and so does the
    # usage topic it found with the default limit.
    changelog = f"{names['app_id']}-city-state-changelog"
    partials = f"{names['app_id']}-city-partials"
    usage = names["usage"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in (changelog, partials, usage)]
        )
    finally:
        admin.close()
    for topic in (changelog, partials, usage):
        limit = int(described["topic"][topic]["max.message.bytes"]["value"])
        assert limit == WINDOW_MESSAGE_MAX_BYTES, (topic, limit)
