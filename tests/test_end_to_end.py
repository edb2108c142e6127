"""The walking skeleton end to end, against nfdump.

Real captures of the corpus go through softflowd (``-r FILE -v 5``) into a UDP
tee in this test, which forwards every export datagram both to ``voipflow
collect`` and to ``nfcapd``. The collector publishes flows.v1 to the session's
Kafka broker; ``voipflow worker`` enriches, classifies and counts them;
``voipflow sink`` inserts into embedded ClickHouse (chdb). Then ClickHouse
must hold what nfdump decodes from the same datagrams: per exporter the same
number of flows and the same packet and byte totals in
``exporter_traffic_1m``, and every row of ``flows_voip`` one of nfdump's
records by exporter, 5-tuple and counters.

Each capture is replayed from its own loopback source address, so each is one
exporter: their clocks are years apart and a replayed exporter's sysUptime
starts again, which one exporter address could not explain.

IPv6: NetFlow v5 has no IPv6 record, and softflowd 1.1.0 with ``-v 5`` leaves
IPv6 flows out of the export altogether (http_ipv6.pcap, all IPv6, exports no
datagram at all; stun_google_meet.pcapng exports 214 of its 362 packets). Both
sides see only the IPv4 flows, so the comparison holds; the IPv6 prefixes of
the captures' clients are still listed as home networks below, as they would
be for a v9/IPFIX export.

Home networks: every capture was taken on a client in a private network, so
RFC 1918 space (plus CGNAT 100.64/10, ULA fc00::/7, link-local fe80::/10 and
the global /64s of the IPv6 captures' clients) is "home". The prefix table
places 192.168/16 and 10/8 in two cities and leaves 172.16/12 at home without
a city, so placed, unlocated and unhomed flows (public addresses on both
sides: h323.pcap, rtp.pcapng, http_on_sip_port.pcap) all occur.

Deterministic close: traffic windows are of reception time, so with a 10 s
window, 2 s lateness and a 2 s idle close every window has closed some 15 s
after the last datagram, whatever the captures' own timestamps. The test waits
until the worker has published windows for every record the collector put on
flows.v1 (a property of the pipeline, not of the expected answer), then runs
the sink until it has drained every topic and stays idle
(``VOIPFLOW_SINK_EXIT_WHEN_IDLE_S``).
"""

from __future__ import annotations

import collections
import json
import os
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.collectors.collect_proc import CollectProcess
from tests.collectors.reference_decoders import Nfcapd, norm_addr
from tests.fixtures.paths import REPO
from tests.processes import stop, voipflow
from voipflow.logs import tail
from voipflow.schemas import flowbatch as fb
from voipflow.topics import ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


#: Varied on purpose: VoIP media and signalling (Teams, WhatsApp, Signal via
#: STUN/TURN, RTP, H.323, IAX, Zoom, Skype, Meet), web, QUIC and DNS, one
#: all-IPv6 capture, one with public addresses on both sides. The corpus has
#: no SIP call; http_on_sip_port.pcap is HTTP on port 5060.
CAPTURES = (
    "teams.pcap",
    "whatsapp_login_call.pcap",
    "stun_signal.pcapng",
    "rtp.pcapng",
    "h323.pcap",
    "iax.pcap",
    "zoom.pcap",
    "skype-conference-call.pcap",
    "stun_google_meet.pcapng",
    "wa_voice.pcap",
    "dns.pcap",
    "googledns_android10.pcap",
    "facebook.pcap",
    "youtube_quic.pcap",
    "netflix.pcap",
    "http_on_sip_port.pcap",
    "http_ipv6.pcap",
)
IPV6_ONLY = "http_ipv6.pcap"

HOME = ",".join(
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "fe80::/10",
        "2001:b07:a3d:c112::/64",  # stun_google_meet.pcapng's client
        "2a00:d40:1:3::/64",  # http_ipv6.pcap's client
    ]
)
PREFIX_TABLE = """prefix,city,region,country,lat,lon
192.168.0.0/16,Lab LAN,Lab,XX,0.0,0.0
10.0.0.0/8,Campus,Lab,XX,0.0,0.0
"""
WINDOW_S, LATENESS_S, IDLE_CLOSE_S = 10, 2, 2

Record = tuple[str, str, str, int, int, int, int, int]  # exporter, 5-tuple, packets, bytes


# -- the UDP tee ------------------------------------------------------------------


@dataclass
class Tee:
    """Receives a softflowd export and forwards every datagram to each target port."""

    source: str
    targets: tuple[int, ...]
    sent: int = 0
    rx: socket.socket = field(init=False)
    tx: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.rx.bind(("127.0.0.1", 0))
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind((self.source, 0))  # one exporter address per capture

    @property
    def port(self) -> int:
        return int(self.rx.getsockname()[1])

    def forward(self, datagram: bytes) -> None:
        for port in self.targets:
            self.tx.sendto(datagram, ("127.0.0.1", port))
        self.sent += 1
        if self.sent % 50 == 0:
            time.sleep(0.005)  # let the receivers on this busy machine keep up

    def run_softflowd(self, capture: Path, timeout_s: float = 60.0) -> int:
        """softflowd -v 5 over ``capture`` into this tee; returns datagrams forwarded."""
        # "-c none": softflowd 1.1.0 with -r blocks in accept() when the control
        # socket path has 13 or more characters; no control socket is needed.
        cmd = ["softflowd", "-r", str(capture), "-n", f"127.0.0.1:{self.port}"]
        cmd += ["-v", "5", "-d", "-c", "none"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                done = proc.poll() is not None
                ready, _, _ = select.select([self.rx], [], [], 0.3 if done else 0.05)
                if ready:
                    self.forward(self.rx.recv(65535))
                elif done:
                    break
            else:
                raise AssertionError(f"softflowd did not finish {capture.name} in {timeout_s} s")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        return self.sent

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


# -- processes and Kafka helpers --------------------------------------------------


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every message of ``topic`` up to its current end offsets."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def published_per_exporter(bootstrap: str, topic: str) -> collections.Counter[str]:
    """Flow records per exporter (text) on a flows.v1 topic."""
    counts: collections.Counter[str] = collections.Counter()
    for m in read_topic(bootstrap, topic):
        batch = fb.decode(m.value)
        for addr, n in collections.Counter(bytes(a) for a in batch["exporter_addr"]).items():
            counts[fb.addr_to_text(addr)] += n
    return counts


def windowed_per_exporter(bootstrap: str, topic: str) -> collections.Counter[str]:
    """Flows per exporter in the traffic.v1 windows published so far (first copies)."""
    first: dict[tuple[str, int, int], int] = {}
    for m in read_topic(bootstrap, topic):
        msg = json.loads(m.value)
        key = (msg["exporter"], msg["window_start_ms"], msg["observation_domain_id"])
        first.setdefault(key, msg["flows"])
    counts: collections.Counter[str] = collections.Counter()
    for (exporter, _, _), flows in first.items():
        counts[exporter] += flows
    return counts


def clickhouse(sql: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of ``voipflow db query --format json`` on the sink's chdb directory."""
    out = subprocess.run(
        [sys.executable, "-m", "voipflow", "db", "query", "--format", "json", sql],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def nfdump_summary(nfcapd: Nfcapd) -> tuple[int, int, int]:
    """(flows, packets, bytes) from nfcapd's own statistics record (``nfdump -I``)."""
    out = subprocess.run(
        ["nfdump", "-I", "-R", str(nfcapd.flowdir)], capture_output=True, text=True, check=True
    ).stdout
    stats = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            stats[key.strip()] = int(value.strip())
    return stats["Flows"], stats["Packets"], stats["Bytes"]


# -- the test ---------------------------------------------------------------------


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    topics = {
        "VOIPFLOW_KAFKA_FLOWS_TOPIC": f"e2e-flows-{tag}",
        "VOIPFLOW_KAFKA_VOIP_FLOWS_TOPIC": f"e2e-voip-flows-{tag}",
        "VOIPFLOW_KAFKA_USAGE_TOPIC": f"e2e-usage-{tag}",
        "VOIPFLOW_KAFKA_TRAFFIC_TOPIC": f"e2e-traffic-{tag}",
        "VOIPFLOW_KAFKA_HEALTH_TOPIC": f"e2e-health-{tag}",
    }
    ensure_topics(kafka_bootstrap, {t: 2 for t in set(topics.values())})
    prefix_table = tmp_path / "cities.csv"
    prefix_table.write_text(PREFIX_TABLE)
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env = {
        **base,
        **topics,
        "VOIPFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "VOIPFLOW_KAFKA_PARTITIONS": "2",
        "VOIPFLOW_METRICS_LISTEN": "",
        "VOIPFLOW_DATA_DIR": str(tmp_path / "data"),
        "VOIPFLOW_WORKER_APP_ID": f"e2e-{tag}",
        "VOIPFLOW_WORKER_HOME_NETWORKS": HOME,
        "VOIPFLOW_WORKER_PREFIX_TABLE": str(prefix_table),
        "VOIPFLOW_WORKER_WINDOW_S": str(WINDOW_S),
        "VOIPFLOW_WORKER_LATENESS_S": str(LATENESS_S),
        "VOIPFLOW_WORKER_IDLE_CLOSE_S": str(IDLE_CLOSE_S),
        "VOIPFLOW_WORKER_CLOSE_INTERVAL_S": "0.5",
        "VOIPFLOW_SINK_GROUP_ID": f"e2e-sink-{tag}",
        "VOIPFLOW_SINK_TOPICS": ",".join(
            topics[f"VOIPFLOW_KAFKA_{t}_TOPIC"] for t in ("VOIP_FLOWS", "USAGE", "TRAFFIC")
        ),
        "VOIPFLOW_SINK_BATCH_DELAY_S": "0.5",
        "VOIPFLOW_SINK_STATS_INTERVAL_S": "0",
        "VOIPFLOW_SINK_EXIT_WHEN_IDLE_S": "3",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    nfcapd = Nfcapd(tmp_path / "nfcapd")
    collect = CollectProcess(
        tmp_path / "collect",
        bootstrap=kafka_bootstrap,
        env={k: v for k, v in env.items() if k.startswith("VOIPFLOW_KAFKA_")},
    )
    try:
        # The schema first (chdb: one process per data directory at a time),
        # while the collector, nfcapd and the worker start.
        procs["migrate"] = voipflow(["db", "migrate"], env, tmp_path / "migrate.log")
        procs["worker"] = voipflow(["worker"], env, tmp_path / "worker.log")
        nfcapd.start()
        collect.start()
        yield {
            "env": env,
            "topics": topics,
            "procs": procs,
            "nfcapd": nfcapd,
            "collect": collect,
            "logs": tmp_path,
        }
    finally:
        collect.stop()
        nfcapd.stop()
        for proc in procs.values():
            stop(proc)


def test_clickhouse_matches_nfdump(
    stack: dict[str, Any], corpus_dir: Path, kafka_bootstrap: str
) -> None:
    started = time.monotonic()
    env, topics, procs = stack["env"], stack["topics"], stack["procs"]
    nfcapd: Nfcapd = stack["nfcapd"]
    collect: CollectProcess = stack["collect"]
    logs: Path = stack["logs"]

    # 1. softflowd -> tee -> (collector, nfcapd), one exporter address per capture.
    datagrams: dict[str, int] = {}
    exporter_of: dict[str, str] = {}
    for i, name in enumerate(CAPTURES):
        source = f"127.0.0.{20 + i}"
        tee = Tee(source, (collect.port, nfcapd.port))
        try:
            datagrams[name] = tee.run_softflowd(corpus_dir / "pcap" / name)
        finally:
            tee.close()
        exporter_of[source] = name
    assert datagrams[IPV6_ONLY] == 0, "softflowd -v 5 exported IPv6 flows"
    assert all(n > 0 for name, n in datagrams.items() if name != IPV6_ONLY), datagrams

    # 2. What nfdump decodes from the same datagrams.
    reference = nfcapd.flows()
    nf_records: list[Record] = [
        (
            f["exporter"],
            f["src_addr"],
            f["dst_addr"],
            f["src_port"],
            f["dst_port"],
            f["protocol"],
            f["packets"],
            f["bytes"],
        )
        for f in reference
    ]
    nf_totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for r in nf_records:
        acc = nf_totals[r[0]]
        acc[0] += 1
        acc[1] += r[6]
        acc[2] += r[7]
    summary = nfdump_summary(nfcapd)
    assert summary == tuple(sum(v[k] for v in nf_totals.values()) for k in range(3))
    assert set(nf_totals) == {s for s, name in exporter_of.items() if name != IPV6_ONLY}

    # 3. The collector published every record (it decodes on its own; nfdump is
    #    only the reference at the end).
    total = len(nf_records)
    got = collect.wait_metric("voipflow_collector_kafka_records_total", total, timeout_s=60)
    assert got == total, tail(collect.log)
    assert collect.metric("voipflow_collector_packets_total") == sum(datagrams.values())
    published = published_per_exporter(kafka_bootstrap, topics["VOIPFLOW_KAFKA_FLOWS_TOPIC"])

    # 4. The worker has closed and published every window of those records.
    assert procs["migrate"].wait(timeout=120) == 0, tail(logs / "migrate.log")
    deadline = time.monotonic() + 120
    windowed = windowed_per_exporter(kafka_bootstrap, topics["VOIPFLOW_KAFKA_TRAFFIC_TOPIC"])
    while windowed != published and time.monotonic() < deadline:
        assert procs["worker"].poll() is None, tail(logs / "worker.log")
        time.sleep(1)
        windowed = windowed_per_exporter(kafka_bootstrap, topics["VOIPFLOW_KAFKA_TRAFFIC_TOPIC"])
    assert windowed == published, f"worker windows {windowed} != flows.v1 {published}"

    # 5. The sink drains every topic into chdb and exits once idle.
    procs["sink"] = voipflow(["sink"], env, logs / "sink.log")
    assert procs["sink"].wait(timeout=120) == 0, tail(logs / "sink.log")

    # 6. ClickHouse against nfdump, per exporter and in total.
    rows = clickhouse(
        "SELECT toString(exporter) AS exporter, sum(flows) AS flows, sum(packets) AS packets, "
        "sum(bytes) AS bytes, sum(packets_est) AS packets_est, sum(bytes_est) AS bytes_est, "
        "sum(placed_flows) AS placed, sum(unlocated_flows) AS unlocated, "
        "sum(unhomed_flows) AS unhomed, sum(voip_flows) AS voip, count() AS windows, "
        "uniqExact(window_start, exporter, observation_domain_id) AS distinct_windows "
        "FROM exporter_traffic_1m GROUP BY exporter",
        env,
    )
    ch_totals = {norm_addr(r["exporter"]): [r["flows"], r["packets"], r["bytes"]] for r in rows}
    assert ch_totals == dict(nf_totals)
    for r in rows:
        assert (r["packets_est"], r["bytes_est"]) == (r["packets"], r["bytes"])  # unsampled
        assert r["placed"] + r["unlocated"] + r["unhomed"] == r["flows"]
        assert r["windows"] == r["distinct_windows"]  # one row per window: first copies
    placed, unlocated, unhomed, voip = (
        sum(r[k] for r in rows) for k in ("placed", "unlocated", "unhomed", "voip")
    )
    assert placed and unlocated and unhomed and voip, (placed, unlocated, unhomed, voip)

    # 7. Every VoIP row is one of nfdump's records, seen from the subscriber.
    voip_rows = clickhouse(
        "SELECT toString(exporter_addr) AS exporter, toString(subscriber_addr) AS sub, "
        "toString(peer_addr) AS peer, subscriber_port, peer_port, protocol, direction, "
        "packets, bytes, app, city FROM flows_voip",
        env,
    )
    assert len(voip_rows) == voip
    pool = collections.Counter(nf_records)
    for r in voip_rows:
        sub = (norm_addr(r["sub"]), r["subscriber_port"])
        peer = (norm_addr(r["peer"]), r["peer_port"])
        src, dst = (sub, peer) if r["direction"] == 0 else (peer, sub)
        record = (norm_addr(r["exporter"]), src[0], dst[0], src[1], dst[1], r["protocol"])
        key = (*record, r["packets"], r["bytes"])
        assert pool[key] > 0, f"flows_voip row {r} is not one of nfdump's records"
        pool[key] -= 1
    by_capture = collections.Counter(exporter_of[norm_addr(r["exporter"])] for r in voip_rows)

    elapsed = time.monotonic() - started
    print(
        f"\nend to end: {len(CAPTURES)} captures, {sum(datagrams.values())} datagrams, "
        f"{total} flows, {summary[1]} packets, {summary[2]} bytes; ClickHouse equal per "
        f"exporter; placed {placed}, unlocated {unlocated}, unhomed {unhomed}, VoIP {voip} "
        f"({dict(by_capture)}); {elapsed:.0f} s"
    )
