"""``voipflow collect`` end to end: softflowd -> collector -> Kafka, against nfdump.

Real parts only: softflowd exports real captures of the corpus, the export
datagrams are captured once and replayed, from one loopback source address
per capture, to the collector (a subprocess) and to nfcapd; what reaches
Kafka is consumed and compared with what nfdump decodes.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.collectors.collect_proc import CollectProcess, softflowd_export
from tests.collectors.consume import consume
from tests.collectors.reference_decoders import Nfcapd, send_paced
from voipflow.broker import LocalBroker
from voipflow.schemas import flowbatch as fb

CAPTURES = ("teams.pcap", "zoom.pcap", "whatsapp_login_call.pcap")
SOURCES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")

Tuple = tuple[str, str, int, int, int, int, int]


def _topics() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "VOIPFLOW_KAFKA_FLOWS_TOPIC": f"flows-{tag}",
        "VOIPFLOW_KAFKA_HEALTH_TOPIC": f"health-{tag}",
        "VOIPFLOW_KAFKA_PARTITIONS": "2",
    }


def _exports(corpus_dir: Path, version: int) -> list[list[bytes]]:
    out = [softflowd_export(corpus_dir / "pcap" / name, version) for name in CAPTURES]
    assert all(out), "softflowd exported nothing"
    return out


def _nfdump_tuples(flows: list[dict[str, Any]]) -> list[Tuple]:
    return sorted(
        (
            f["src_addr"],
            f["dst_addr"],
            f["src_port"],
            f["dst_port"],
            f["protocol"],
            f["packets"],
            f["bytes"],
        )
        for f in flows
    )


def _batch_tuples(batches: list[fb.FlowBatch]) -> list[Tuple]:
    out: list[Tuple] = []
    for b in batches:
        src = [fb.addr_to_text(bytes(a)) for a in b["src_addr"]]
        dst = [fb.addr_to_text(bytes(a)) for a in b["dst_addr"]]
        out.extend(
            zip(
                src,
                dst,
                b["src_port"].tolist(),
                b["dst_port"].tolist(),
                b["protocol"].tolist(),
                b["packets"].tolist(),
                b["bytes"].tolist(),
                strict=True,
            )
        )
    return sorted(out)


def _read_flows(bootstrap: str, topic: str, records: int) -> tuple[list[fb.FlowBatch], list[str]]:
    """Consume until ``records`` flow records were read (or nothing more comes)."""
    deadline = time.monotonic() + 60
    batches: list[fb.FlowBatch] = []
    keys: list[str] = []
    while time.monotonic() < deadline:
        msgs = consume(bootstrap, topic, timeout_s=20, quiet_s=2)
        batches = [fb.decode(m.value) for m in msgs]
        keys = [m.key.decode() for m in msgs]
        for m in msgs:
            assert dict(m.headers).get("schema") == b"flows.v1"
        if sum(b.num_rows for b in batches) >= records:
            break
    return batches, keys


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("version", [9, 10])
def test_softflowd_export_through_kafka_matches_nfdump(
    version: int, corpus_dir: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    exports = _exports(corpus_dir, version)
    topics = _topics()
    env = {**topics, "VOIPFLOW_COLLECTOR_HEALTH_INTERVAL_S": "1"}
    # Both places for the compression: inside the Arrow stream, by Kafka.
    env["VOIPFLOW_COLLECTOR_COMPRESSION_LAYER"] = "arrow" if version == 10 else "kafka"
    nfcapd = Nfcapd(tmp_path / "nfcapd")
    nfcapd.start()
    with CollectProcess(tmp_path / "collect", bootstrap=kafka_bootstrap, env=env) as collect:
        for datagrams, source in zip(exports, SOURCES, strict=True):
            send_paced(datagrams, collect.port, source=source)
            send_paced(datagrams, nfcapd.port, source=source)
        reference = nfcapd.flows()
        assert len(reference) > 100
        delivered = collect.wait_metric("voipflow_collector_kafka_records_total", len(reference))
        assert delivered == len(reference), collect.log_text()[-3000:]
        assert collect.metric("voipflow_collector_packets_total") == sum(map(len, exports))
        time.sleep(1.5)  # one more health report after the last datagram
        lost = collect.metric("voipflow_collector_sequence_lost_total")
    assert collect.returncode == 0

    batches, keys = _read_flows(
        kafka_bootstrap, topics["VOIPFLOW_KAFKA_FLOWS_TOPIC"], len(reference)
    )
    got = _batch_tuples(batches)
    want = _nfdump_tuples(reference)
    assert len(got) == len(want)
    assert sum(t[5] for t in got) == sum(t[5] for t in want)  # packets
    assert sum(t[6] for t in got) == sum(t[6] for t in want)  # bytes
    assert got == want
    # Keyed by exporter: every message holds one exporter's records only.
    assert set(keys) == set(SOURCES)
    for key, b in zip(keys, batches, strict=True):
        assert {fb.addr_to_text(bytes(a)) for a in b["exporter_addr"]} == {key}

    health = [
        json.loads(m.value)
        for m in consume(kafka_bootstrap, topics["VOIPFLOW_KAFKA_HEALTH_TOPIC"], quiet_s=2)
    ]
    assert health and {h["schema"] for h in health} == {"exporter-health.v1"}
    fields = {
        "ts_ms",
        "collector",
        "exporter",
        "observation_domain_id",
        "netflow_version",
        "packets",
        "records",
        "bytes",
        "decode_errors",
        "templates",
        "records_held",
        "sequence_lost",
        "exporter_restarts",
        "sampling_rate",
        "kernel_drops",
    }
    assert all(fields <= set(h) for h in health)
    packets = collections.Counter[str]()
    records = collections.Counter[str]()
    for h in health:
        packets[h["exporter"]] += h["packets"]
        records[h["exporter"]] += h["records"]
        assert h["netflow_version"] == version
        assert h["decode_errors"] == 0
    # softflowd's IPFIX sequence numbers do not count what it sends (its first
    # message says 24), so loss is not asserted; it is reported consistently.
    assert sum(h["sequence_lost"] for h in health) == lost
    # Health counters are deltas: summed they give what each exporter sent.
    assert dict(packets) == {s: len(d) for s, d in zip(SOURCES, exports, strict=True)}
    assert sum(records.values()) == len(reference)


@pytest.mark.slow
def test_jsonl_output_writes_every_record_nfdump_sees(corpus_dir: Path, tmp_path: Path) -> None:
    exports = _exports(corpus_dir, 10)
    out = tmp_path / "flows.jsonl"
    nfcapd = Nfcapd(tmp_path / "nfcapd")
    nfcapd.start()
    with CollectProcess(tmp_path / "collect", output=f"jsonl:{out}") as collect:
        for datagrams, source in zip(exports, SOURCES, strict=True):
            send_paced(datagrams, collect.port, source=source)
            send_paced(datagrams, nfcapd.port, source=source)
        reference = nfcapd.flows()
        collect.wait_metric("voipflow_collector_output_records_total", len(reference))
    assert collect.returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(reference)
    assert set(rows[0]) >= set(fb.FLOW_COLUMNS)
    assert {r["exporter_addr"] for r in rows} == set(SOURCES)
    got = sorted(
        (
            r["src_addr"],
            r["dst_addr"],
            r["src_port"],
            r["dst_port"],
            r["protocol"],
            r["packets"],
            r["bytes"],
        )
        for r in rows
    )
    assert got == _nfdump_tuples(reference)


@pytest.mark.slow
def test_jsonl_to_stdout(corpus_dir: Path, tmp_path: Path) -> None:
    datagrams = _exports(corpus_dir, 9)[0]
    with CollectProcess(tmp_path / "collect", output="jsonl:-") as collect:
        send_paced(datagrams, collect.port)
        n = collect.wait_metric("voipflow_collector_output_records_total", 1)
        time.sleep(0.5)
    lines = collect.stdout.read_text().splitlines()
    assert n > 0 and len(lines) == n
    assert all(json.loads(line)["exporter_addr"] == "127.0.0.5" for line in lines)


@pytest.mark.slow
def test_allowlist_and_rate_limit_refuse_and_count(corpus_dir: Path, tmp_path: Path) -> None:
    datagrams = _exports(corpus_dir, 10)[0] * 2
    env = {
        "VOIPFLOW_COLLECTOR_ALLOW": "127.0.0.11/32,127.0.0.12",
        "VOIPFLOW_COLLECTOR_RATE_LIMIT_PPS": "1",
        "VOIPFLOW_COLLECTOR_RATE_LIMIT_BURST": "3",
    }
    with CollectProcess(tmp_path / "collect", output="null", env=env) as collect:
        send_paced(datagrams, collect.port, source="127.0.0.99")  # not allowed
        send_paced(datagrams, collect.port, source="127.0.0.11")  # allowed, rate limited
        n = len(datagrams)
        refused = "voipflow_collector_refused_packets_total"
        collect.wait_metric(refused, n, exporter="127.0.0.99", reason="not_allowed")
        collect.wait_metric(refused, n - 3, exporter="127.0.0.11", reason="rate_limited")
        time.sleep(1.2)  # metrics are pushed once a second
        assert collect.metric(refused, exporter="127.0.0.99", reason="not_allowed") == n
        limited = collect.metric(refused, exporter="127.0.0.11", reason="rate_limited")
        # The bucket holds 3 and refills 1/s while the datagrams go out.
        assert n - 5 <= limited <= n - 3
        assert collect.metric("voipflow_collector_packets_total", exporter="127.0.0.99") == 0
        assert collect.metric("voipflow_collector_packets_total", exporter="127.0.0.11") == (
            n - limited
        )
        assert collect.metric(refused, exporter="127.0.0.11", reason="not_allowed") == 0


@pytest.mark.slow
def test_kernel_drops_are_counted_in_metrics(corpus_dir: Path, tmp_path: Path) -> None:
    datagrams = _exports(corpus_dir, 10)[0]
    env = {"VOIPFLOW_COLLECTOR_RCVBUF_BYTES": "65536", "VOIPFLOW_COLLECTOR_HEALTH_INTERVAL_S": "1"}
    with CollectProcess(tmp_path / "collect", output="null", env=env) as collect:
        name = "voipflow_collector_kernel_drops_total"
        assert f'{name}{{socket="127.0.0.1:{collect.port}"}} 0.0' in collect.metrics_text()
        assert collect.metric("voipflow_collector_rcvbuf_bytes") > 0
        # A collector that does not read (stopped) lets its small buffer overflow.
        assert collect.proc is not None
        collect.proc.send_signal(signal.SIGSTOP)
        try:
            sent = send_paced(datagrams * 200, collect.port, per_burst=10_000)
        finally:
            collect.proc.send_signal(signal.SIGCONT)
        drops = collect.wait_metric(name, 1)
        assert drops > 0
        decoded = collect.wait_metric("voipflow_collector_packets_total", sent - drops)
        assert decoded + drops == sent
        time.sleep(1.5)
    # The exporter health reports (logged with this output) carry the drops.
    reported = re.findall(r"exporter health.* kernel_drops=(\d+)", collect.log_text())
    assert sum(map(int, reported)) == drops


@pytest.mark.slow
def test_bad_settings_fail_at_start_with_one_line(tmp_path: Path) -> None:
    import socket as socketlib

    holder = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    try:
        busy = CollectProcess(tmp_path / "a", output="null", port=holder.getsockname()[1])
        busy.start(wait=False)
        assert busy.proc is not None
        assert busy.proc.wait(60) == 2
        err = busy.log_text().strip().splitlines()
        assert len(err) == 1 and "VOIPFLOW_COLLECTOR_LISTEN" in err[0] and "in use" in err[0]
    finally:
        holder.close()
    nobroker = CollectProcess(tmp_path / "b", bootstrap="127.0.0.1:9")
    nobroker.start(wait=False)
    assert nobroker.proc is not None
    assert nobroker.proc.wait(90) == 2
    err = nobroker.log_text().strip().splitlines()
    assert len(err) == 1 and "VOIPFLOW_KAFKA_BOOTSTRAP" in err[0]


@pytest.mark.kafka
def test_sigterm_publishes_the_pending_batch_and_saves_templates(
    corpus_dir: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    datagrams = _exports(corpus_dir, 10)[0]
    topics = _topics()
    env = {**topics, "VOIPFLOW_COLLECTOR_BATCH_MAX_DELAY_MS": "600000"}
    data_dir = tmp_path / "collect"
    with CollectProcess(data_dir, bootstrap=kafka_bootstrap, env=env) as collect:
        send_paced(datagrams, collect.port)
        n = collect.wait_metric("voipflow_collector_records_total", 1)
        time.sleep(0.5)
        # A batch waits for its 10 minutes: nothing published yet.
        assert collect.metric("voipflow_collector_output_records_total") == 0
    assert collect.returncode == 0
    batches, _ = _read_flows(kafka_bootstrap, topics["VOIPFLOW_KAFKA_FLOWS_TOPIC"], int(n))
    assert sum(b.num_rows for b in batches) == n
    saved = json.loads((data_dir / "collector" / "collector-templates-0.json").read_text())
    assert saved["templates"], "no template was saved"


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_restart_mid_stream_loses_no_record(
    corpus_dir: Path, kafka_broker: LocalBroker, kafka_bootstrap: str, tmp_path: Path
) -> None:
    exports = _exports(corpus_dir, 9)
    topics = _topics()
    with CollectProcess(tmp_path / "collect", bootstrap=kafka_bootstrap, env=topics) as collect:
        send_paced(exports[0], collect.port, source=SOURCES[0])
        first = collect.wait_metric("voipflow_collector_kafka_records_total", 1)
        assert first > 0
        kafka_broker.stop()
        try:
            # The stream goes on while the broker is away.
            for datagrams, source in zip(exports[1:], SOURCES[1:], strict=True):
                send_paced(datagrams, collect.port, source=source)
            decoded = collect.wait_metric("voipflow_collector_records_total", first + 1)
            time.sleep(2)
            assert collect.metric("voipflow_collector_kafka_records_total") == first
        finally:
            kafka_broker.start()
        total = collect.metric("voipflow_collector_records_total")
        assert total >= decoded
        delivered = collect.wait_metric("voipflow_collector_kafka_records_total", total, 120)
        assert delivered == total
        assert collect.metric("voipflow_collector_buffer_dropped_records_total") == 0
    batches, _ = _read_flows(kafka_bootstrap, topics["VOIPFLOW_KAFKA_FLOWS_TOPIC"], int(total))
    rows = np.concatenate([b["packets"] for b in batches]) if batches else np.array([])
    assert len(rows) == total


@pytest.mark.slow
def test_two_workers_share_the_port_and_one_metrics_endpoint(
    corpus_dir: Path, tmp_path: Path
) -> None:
    datagrams = _exports(corpus_dir, 10)[0]
    env = {"VOIPFLOW_COLLECTOR_WORKERS": "2", "VOIPFLOW_COLLECTOR_HEALTH_INTERVAL_S": "1"}
    sources = [f"127.0.0.{20 + i}" for i in range(12)]
    with CollectProcess(tmp_path / "collect", output="null", env=env) as collect:
        for source in sources:
            send_paced(datagrams, collect.port, source=source)
        want = len(datagrams) * len(sources)
        # One endpoint sums both workers' counters.
        assert collect.wait_metric("voipflow_collector_packets_total", want) == want
        time.sleep(1.5)
    assert collect.returncode == 0
    log = collect.log_text()
    started = re.findall(r"collector started.*pid=(\d+)", log)
    assert len(set(started)) == 2
    # Health reports name the process that decoded: exporters were spread
    # over both workers (all 12 on one has odds 2 * 2**-12).
    reporting = set(re.findall(r"exporter health.* collector=(\S+)", log))
    assert len(reporting) == 2


def _flows(n: int) -> dict[str, np.ndarray]:
    now = int(time.time() * 1000)
    return {
        "src_addr": fb.ipv4_to_addr16(np.arange(0x0A000001, 0x0A000001 + n, dtype=np.uint32)),
        "dst_addr": fb.ipv4_to_addr16(np.full(n, 0xC0000201, dtype=np.uint32)),
        "src_port": np.arange(n, dtype=np.uint16) + 1000,
        "dst_port": np.full(n, 3478, np.uint16),
        "protocol": np.full(n, 17, np.uint8),
        "packets": np.arange(n, dtype=np.uint64) + 1,
        "bytes": (np.arange(n, dtype=np.uint64) + 1) * 100,
        "flow_start_ms": np.full(n, now - 60_000, np.uint64),
        "flow_end_ms": np.full(n, now - 1_000, np.uint64),
    }


@pytest.mark.slow
def test_templates_persist_across_a_restart(tmp_path: Path) -> None:
    from voipflow.collectors.codec.encoder import make_encoder

    enc = make_encoder(
        10, observation_domain_id=7, template_refresh_packets=10**6, template_refresh_ms=10**9
    )
    now = int(time.time() * 1000)
    templates = enc.template_datagram(now)
    data = enc.encode(_flows(500), now)  # data sets only: no template inside
    held = "voipflow_collector_records_held"
    out = "voipflow_collector_output_records_total"

    # Without the saved templates the data waits for them (held, not decoded).
    with CollectProcess(tmp_path / "fresh", output="null") as fresh:
        send_paced(data, fresh.port)
        assert fresh.wait_metric(held, len(data)) == len(data)
        assert fresh.metric(out) == 0

    state = tmp_path / "state"
    with CollectProcess(state, output="null") as first:
        send_paced([templates], first.port)
        assert first.wait_metric("voipflow_collector_templates", 1) >= 1
    assert first.returncode == 0
    assert (state / "collector" / "collector-templates-0.json").is_file()

    with CollectProcess(state, output=f"jsonl:{tmp_path / 'after.jsonl'}") as second:
        send_paced(data, second.port)
        assert second.wait_metric(out, 500) == 500
        assert second.metric(held) == 0
    rows = [json.loads(line) for line in (tmp_path / "after.jsonl").read_text().splitlines()]
    assert sorted(r["packets"] for r in rows) == list(range(1, 501))


def test_exporter_labels_and_health_domains_stay_bounded_under_many_sources(
    tmp_path: Path,
) -> None:
    # Datagrams from 12 source addresses, as a flood of spoofed sources
    # would send, to a collector that labels 4 exporters and reports 6
    # (exporter, domain) pairs: every datagram is still counted.
    from voipflow.collectors.codec.encoder import make_encoder

    now = int(time.time() * 1000)
    sources = [f"127.0.3.{i + 1}" for i in range(12)]
    env = {
        "VOIPFLOW_COLLECTOR_MAX_EXPORTER_LABELS": "4",
        "VOIPFLOW_COLLECTOR_MAX_HEALTH_DOMAINS": "6",
    }
    packets = "voipflow_collector_packets_total"
    with CollectProcess(tmp_path / "collect", output="null", env=env) as collect:
        for src in sources:
            enc = make_encoder(10, observation_domain_id=1)
            send_paced(enc.encode(_flows(20), now), collect.port, source=src)
        assert collect.wait_metric(packets, len(sources)) == len(sources)
        time.sleep(1.2)  # pushed once a second
        per_label = {
            s.labels["exporter"]: s.value
            for family in text_string_to_metric_families(collect.metrics_text())
            for s in family.samples
            if s.name == packets
        }
        untracked = collect.metric("voipflow_collector_untracked_domain_packets_total")
    assert sum(per_label.values()) == len(sources)
    assert len(per_label) == 5 and per_label["other"] == len(sources) - 4
    assert set(per_label) - {"other"} <= set(sources)
    assert untracked == len(sources) - 6


def test_compression_layer_arrow_refuses_a_codec_arrow_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voipflow.commands.collect import compression_codecs
    from voipflow.settings import SettingsError, load_settings

    for var in [v for v in os.environ if v.startswith("VOIPFLOW_")]:
        monkeypatch.delenv(var)
    assert compression_codecs(load_settings()) == ("none", "lz4")
    monkeypatch.setenv("VOIPFLOW_COLLECTOR_COMPRESSION_LAYER", "kafka")
    assert compression_codecs(load_settings()) == ("lz4", None)
    monkeypatch.setenv("VOIPFLOW_KAFKA_COMPRESSION", "gzip")
    assert compression_codecs(load_settings()) == ("gzip", None)
    monkeypatch.setenv("VOIPFLOW_COLLECTOR_COMPRESSION_LAYER", "arrow")
    with pytest.raises(SettingsError, match="VOIPFLOW_KAFKA_COMPRESSION='gzip'"):
        compression_codecs(load_settings())


@pytest.mark.slow
def test_ipv4_and_ipv6_listen_addresses_on_one_port(tmp_path: Path) -> None:
    import socket as socketlib

    from voipflow.collectors.codec.encoder import make_encoder

    probe = socketlib.socket(socketlib.AF_INET6, socketlib.SOCK_DGRAM)
    try:
        probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    finally:
        probe.close()
    out = tmp_path / "flows.jsonl"
    collect = CollectProcess(tmp_path / "collect", output=f"jsonl:{out}")
    port = collect.port
    collect.env["VOIPFLOW_COLLECTOR_LISTEN"] = f"127.0.0.1:{port},[::1]:{port}"
    with collect:
        for family, host in ((socketlib.AF_INET, "127.0.0.1"), (socketlib.AF_INET6, "::1")):
            enc = make_encoder(10, observation_domain_id=1)
            with socketlib.socket(family, socketlib.SOCK_DGRAM) as tx:
                for d in enc.encode(_flows(100), int(time.time() * 1000)):
                    tx.sendto(d, (host, port))
        assert collect.wait_metric("voipflow_collector_output_records_total", 200) == 200
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert collections.Counter(r["exporter_addr"] for r in rows) == {"127.0.0.1": 100, "::1": 100}
