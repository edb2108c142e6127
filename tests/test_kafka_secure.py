"""Every voipflow client against a real broker that requires SASL_SSL.

The broker (tests/fixtures/kafka_secure.py) listens only with TLS and SASL;
its certificates come from a CA the fixture makes. The tests check that:

* kafka-python clients built from :func:`kafka_client_options` connect with
  SCRAM-SHA-512, SCRAM-SHA-256, PLAIN over TLS, and a client certificate
  whose key is encrypted;
* the pipeline runs through it: ``voipflow collect`` publishes flows.v1,
  ``voipflow worker`` (Faust over aiokafka) consumes it and publishes
  traffic windows, ``voipflow sink`` consumes those and inserts them into
  chdb, where every flow sent is counted;
* no log line of those processes (at DEBUG, the Kafka libraries' own
  included) holds the password;
* a wrong password, a wrong CA or a PLAINTEXT client fail at start with one
  line naming the setting (exit status 2).
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.collectors.collect_proc import CollectProcess
from tests.fixtures.kafka_secure import SecureKafka, make_tls_files
from tests.fixtures.paths import REPO
from tests.processes import stop, voipflow
from voipflow.collectors.codec.encoder import make_encoder
from voipflow.logs import tail
from voipflow.schemas import flowbatch as fb
from voipflow.schemas.kafka_security import KafkaSecurity, kafka_client_options
from voipflow.topics import AuthenticationFailed, BrokerUnreachable, ensure_topics, wait_for_broker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def security(secure_kafka: SecureKafka, **fields: Any) -> KafkaSecurity:
    base: dict[str, Any] = {
        "security_protocol": "SASL_SSL",
        "sasl_username": secure_kafka.user,
        "sasl_password": secure_kafka.password,
        "ssl_cafile": secure_kafka.tls.ca,
    }
    return KafkaSecurity(**{**base, **fields})


def round_trip(bootstrap: str, sec: KafkaSecurity, topic: str) -> list[bytes]:
    opts = kafka_client_options(sec)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **opts)
    for i in range(3):
        producer.send(topic, f"m{i}".encode())
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **opts)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
        return got
    finally:
        consumer.close()


@pytest.mark.parametrize(
    "fields",
    [
        {"sasl_mechanism": "SCRAM-SHA-512"},
        {"sasl_mechanism": "SCRAM-SHA-256"},
        {"sasl_mechanism": "PLAIN"},
        {"client_cert": True},
    ],
    ids=["scram-sha-512", "scram-sha-256", "plain-over-tls", "client-certificate"],
)
def test_kafka_python_clients_connect_with_each_mechanism(
    secure_kafka: SecureKafka, fields: dict[str, Any]
) -> None:
    if fields.pop("client_cert", False):
        tls = secure_kafka.tls
        fields = {
            "ssl_certfile": tls.client_cert,
            "ssl_keyfile": tls.client_key_encrypted,
            "ssl_key_password": tls.client_key_password,
        }
    sec = security(secure_kafka, **fields)
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    wait_for_broker(secure_kafka.bootstrap, 30.0, security=sec)
    assert ensure_topics(secure_kafka.bootstrap, {topic: 1}, security=sec) == {topic: 1}
    assert round_trip(secure_kafka.bootstrap, sec, topic) == [b"m0", b"m1", b"m2"]


# kafka-python leaves the socket of a refused TLS handshake to the garbage
# collector (ResourceWarning); collected here so the warning stays in this test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_wrong_password_wrong_ca_and_plaintext_fail_in_one_line(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    bootstrap = secure_kafka.bootstrap
    with pytest.raises(AuthenticationFailed) as err:
        wait_for_broker(bootstrap, 15.0, security=security(secure_kafka, sasl_password="nope"))
    assert "VOIPFLOW_KAFKA_SASL_USERNAME=voipflow" in str(err.value)
    assert "this user's password is wrong" in str(err.value)

    other = make_tls_files(tmp_path / "other-ca")
    with pytest.raises(AuthenticationFailed) as err:
        wait_for_broker(bootstrap, 15.0, security=security(secure_kafka, ssl_cafile=other.ca))
    assert f"VOIPFLOW_KAFKA_SSL_CAFILE={other.ca}" in str(err.value)

    with pytest.raises(BrokerUnreachable) as unreachable:
        wait_for_broker(bootstrap, 5.0, security=KafkaSecurity())
    assert "VOIPFLOW_KAFKA_SECURITY_PROTOCOL" in str(unreachable.value)
    for exc in (err.value, unreachable.value):
        assert "\n" not in str(exc) and secure_kafka.password not in str(exc)
    gc.collect()


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update(VOIPFLOW_DATA_DIR=str(tmp_path / "data"), VOIPFLOW_METRICS_LISTEN="")
    return env


@pytest.mark.parametrize("command", ["sink", "worker", "collect"])
def test_a_wrong_password_stops_each_process_at_start(
    secure_kafka: SecureKafka, tmp_path: Path, command: str
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    env = base_env(tmp_path)
    env.update(secure_kafka.env(sasl_password_file=str(wrong)))
    if command == "collect":
        env["VOIPFLOW_COLLECTOR_LISTEN"] = "127.0.0.1:0"
    # The broker answers at once with the refusal; no need for the default wait.
    env["VOIPFLOW_KAFKA_CONNECT_TIMEOUT_S"] = "10"
    out = subprocess.run(
        [sys.executable, "-m", "voipflow", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "VOIPFLOW_KAFKA_SASL_USERNAME=voipflow" in lines[0]
    assert "VOIPFLOW_KAFKA_SASL_PASSWORD_FILE" in lines[0]
    assert "not-the-password" not in out.stderr + out.stdout


# -- the pipeline through SASL_SSL ---------------------------------------------------

FLOWS = 600
WINDOW_S = 2


def flow_columns(n: int, now_ms: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    start = now_ms - 5_000 + rng.integers(0, 2_000, n)
    return {
        "src_addr": fb.ipv4_to_addr16(
            (0x0A000000 + rng.integers(1, 13, n) * 65536 + rng.integers(0, 60, n)).astype(np.uint32)
        ),
        "dst_addr": fb.ipv4_to_addr16(rng.integers(0x01000000, 0x09000000, n).astype(np.uint32)),
        "src_port": rng.integers(1024, 65535, n),
        "dst_port": rng.choice([3478, 5060, 443, 53], n),
        "protocol": np.full(n, 17),
        "packets": rng.integers(1, 200, n),
        "bytes": rng.integers(300, 40_000, n),
        "flow_start_ms": start,
        "flow_end_ms": start + rng.integers(0, 800, n),
    }


def windowed_flows(bootstrap: str, sec: KafkaSecurity, topic: str) -> int:
    """Flows in the traffic windows published so far (first copy of each window)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_client_options(sec)
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        first: dict[tuple[str, int, int], int] = {}
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    m = json.loads(r.value)
                    key = (m["exporter"], m["window_start_ms"], m["observation_domain_id"])
                    first.setdefault(key, m["flows"])
        return sum(first.values())
    finally:
        consumer.close()


def test_collector_worker_and_sink_through_sasl_ssl_never_log_the_password(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = {
        "VOIPFLOW_KAFKA_FLOWS_TOPIC": f"sec-flows-{tag}",
        "VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC": f"sec-voip-flows-{tag}",
        "VOIPFLOW_KAFKA_USAGE_TOPIC": f"sec-usage-{tag}",
        "VOIPFLOW_KAFKA_TRAFFIC_TOPIC": f"sec-traffic-{tag}",
        "VOIPFLOW_KAFKA_HEALTH_TOPIC": f"sec-health-{tag}",
    }
    sec = security(secure_kafka)
    ensure_topics(secure_kafka.bootstrap, {t: 2 for t in topics.values()}, security=sec)
    env = base_env(tmp_path)
    # The password itself in the environment (the riskiest way to pass it);
    # the collector reads it from a file.
    env.update(secure_kafka.env(password_file=False))
    env.update(topics)
    env.update(
        {
            "VOIPFLOW_LOG_LEVEL": "DEBUG",
            "VOIPFLOW_KAFKA_PARTITIONS": "2",
            "VOIPFLOW_WORKER_APP_ID": f"sec-{tag}",
            "VOIPFLOW_WORKER_HOME_NETWORKS": "10.0.0.0/8",
            "VOIPFLOW_WORKER_WINDOW_S": str(WINDOW_S),
            "VOIPFLOW_WORKER_LATENESS_S": "1",
            "VOIPFLOW_WORKER_IDLE_CLOSE_S": "2",
            "VOIPFLOW_WORKER_CLOSE_INTERVAL_S": "0.5",
            "VOIPFLOW_SINK_GROUP_ID": f"sec-sink-{tag}",
            "VOIPFLOW_SINK_TOPICS": ",".join(
                topics[f"VOIPFLOW_KAFKA_{t}_TOPIC"] for t in ("VOIP_FLOWS", "USAGE", "TRAFFIC")
            ),
            "VOIPFLOW_SINK_BATCH_DELAY_S": "0.5",
            "VOIPFLOW_SINK_STATS_INTERVAL_S": "0",
            "VOIPFLOW_SINK_EXIT_WHEN_IDLE_S": "3",
        }
    )
    collect_env = {k: v for k, v in env.items() if k.startswith("VOIPFLOW_KAFKA_")}
    del collect_env["VOIPFLOW_KAFKA_SASL_PASSWORD"]
    collect_env["VOIPFLOW_KAFKA_SASL_PASSWORD_FILE"] = str(secure_kafka.password_file)
    collect_env["VOIPFLOW_LOG_LEVEL"] = "DEBUG"
    logs = tmp_path / "logs"
    logs.mkdir()
    collect = CollectProcess(tmp_path / "collect", env=collect_env)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["migrate"] = voipflow(["db", "migrate"], env, logs / "migrate.log")
        procs["worker"] = voipflow(["worker", "--loglevel", "info"], env, logs / "worker.log")
        collect.start()

        # 1. NetFlow v9 datagrams to the collector, which publishes them over SASL_SSL.
        encoder = make_encoder(9, observation_domain_id=1)
        datagrams = encoder.encode(
            flow_columns(FLOWS, int(time.time() * 1000)), int(time.time() * 1000)
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for d in datagrams:
                tx.sendto(d, ("127.0.0.1", collect.port))
        got = collect.wait_metric("voipflow_collector_kafka_records_total", FLOWS, timeout_s=60)
        assert got == FLOWS, tail(collect.log)

        # 2. The worker (Faust, aiokafka) consumes them and publishes their windows.
        assert procs["migrate"].wait(timeout=180) == 0, tail(logs / "migrate.log")
        deadline = time.monotonic() + 180
        traffic = topics["VOIPFLOW_KAFKA_TRAFFIC_TOPIC"]
        windowed = windowed_flows(secure_kafka.bootstrap, sec, traffic)
        while windowed < FLOWS and time.monotonic() < deadline:
            assert procs["worker"].poll() is None, tail(logs / "worker.log")
            time.sleep(1)
            windowed = windowed_flows(secure_kafka.bootstrap, sec, traffic)
        assert windowed == FLOWS, tail(logs / "worker.log")

        # 3. The sink consumes the windows and inserts them into chdb, then exits idle.
        procs["sink"] = voipflow(["sink"], env, logs / "sink.log")
        assert procs["sink"].wait(timeout=180) == 0, tail(logs / "sink.log")
        out = subprocess.run(
            [sys.executable, "-m", "voipflow", "db", "query", "--format", "json",
             "SELECT sum(flows) AS flows FROM exporter_traffic_1m"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        assert json.loads(out.stdout.splitlines()[0])["flows"] == FLOWS
    finally:
        collect.stop()
        for proc in procs.values():
            stop(proc)

    # 4. Every log line of every process, at DEBUG: the password is in none.
    files = [*logs.glob("*.log"), collect.log, collect.stdout]
    text = "\n".join(p.read_text(errors="replace") for p in files if p.exists())
    for log in (logs / "worker.log", logs / "sink.log", collect.log):
        assert log.read_text(errors="replace").strip(), f"{log.name} is empty: nothing to check"
    assert secure_kafka.password not in text
