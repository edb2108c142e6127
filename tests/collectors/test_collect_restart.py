"""``voipflow collect`` restarted: what an exporter sent while it was down is counted.

A real collector process (``voipflow collect``, null output) receives IPFIX
and NetFlow v9 made by the project's encoder over loopback UDP, from one
source address and to one port across its restarts, as an exporter
configured with the collector's address would send. Its own Prometheus
counter ``voipflow_collector_sequence_lost_total`` must show the datagrams
sent while no collector listened: records for IPFIX, packets for v9.
"""

from __future__ import annotations

import json
import re
import signal
import struct
import time
from pathlib import Path

import pytest

from tests.collectors.collect_proc import CollectProcess
from tests.collectors.flows import BOOT, T0, random_flows
from tests.collectors.reference_decoders import send_paced
from voipflow.collectors.codec.encoder import ExportEncoder, make_encoder

SOURCE = "127.0.0.5"
LOST = "voipflow_collector_sequence_lost_total"
PACKETS = "voipflow_collector_packets_total"
RESTARTS = "voipflow_collector_exporter_restarts_total"
STATE = "collector/collector-templates.sequences-0.json"


def _encoder(version: int) -> ExportEncoder:
    extra = {"boot_time_ms": BOOT} if version == 9 else {}
    return make_encoder(
        version,
        observation_domain_id=7,
        template_refresh_packets=10**6,  # templates in the first datagram only:
        template_refresh_ms=10**9,  # after a restart they come from the cache
        **extra,
    )


class Exporter:
    """An encoder with what it sent counted in the sequence's units."""

    def __init__(self, version: int) -> None:
        self.enc = _encoder(version)
        self.seed = 0

    def units(self) -> int:
        return self.enc.packets if self.enc.version == 9 else self.enc.data_records

    def export(self, flows: int) -> tuple[list[bytes], int]:
        """Datagrams carrying ``flows`` records, and the sequence units they take."""
        self.seed += 1
        before = self.units()
        datagrams = self.enc.encode(random_flows(flows, self.seed), T0 + 200_000)
        return datagrams, self.units() - before


def _receive(collect: CollectProcess, datagrams: list[bytes]) -> None:
    """Send, and wait until the collector has decoded every datagram."""
    want = collect.metric(PACKETS) + len(datagrams)
    send_paced(datagrams, collect.port, source=SOURCE)
    assert collect.wait_metric(PACKETS, want) == want


def _ipfix_seq(datagram: bytes) -> int:
    return int(struct.unpack_from(">I", datagram, 8)[0])


def _wait_saved(state: Path, last: bytes) -> None:
    """Wait until the saved sequence state ends with the IPFIX datagram ``last``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            trackers = json.loads((state / STATE).read_text())["trackers"]
        except (OSError, ValueError):
            trackers = []
        if trackers and trackers[0]["prev_seq"] == _ipfix_seq(last):
            return
        time.sleep(0.1)
    raise AssertionError("the sequence state was not saved")


@pytest.mark.slow
@pytest.mark.parametrize("version", [9, 10])
def test_datagrams_sent_while_stopped_are_counted_lost(tmp_path: Path, version: int) -> None:
    exporter = Exporter(version)
    before, _ = exporter.export(2_000)
    missed, gap = exporter.export(1_500)
    after, _ = exporter.export(2_000)
    assert gap == (len(missed) if version == 9 else 1_500)

    state = tmp_path / "state"
    with CollectProcess(state, output="null") as first:
        _receive(first, before)
        assert first.metric(LOST) == 0
    assert first.returncode == 0

    send_paced(missed, first.port, source=SOURCE)  # nobody listens

    with CollectProcess(state, output="null", port=first.port) as second:
        _receive(second, after)
        assert second.metric(LOST, exporter=SOURCE) == gap
        assert second.metric(RESTARTS) == 0
    lines = second.log_text().splitlines()
    counted = [line for line in lines if "sent while the collector was down" in line]
    assert len(counted) == 1 and f" lost={gap}" in counted[0]
    # the same loss in the exporter-health reports (logged by the null output)
    health = [line for line in lines if "exporter health" in line]
    assert health
    assert sum(int(n) for h in health for n in re.findall(r" sequence_lost=(\d+)", h)) == gap


@pytest.mark.slow
def test_after_sigkill_the_last_save_is_the_reference(tmp_path: Path) -> None:
    """No save at a SIGKILL: the restarted collector counts from the last
    save, so the loss counted is exact when nothing arrived after that save,
    and also covers what the killed process received after it. A gap counted
    once is saved at once and not counted again after a second kill."""
    exporter = Exporter(10)
    d1, _ = exporter.export(1_000)
    g1, g1_units = exporter.export(700)
    d2a, _ = exporter.export(10)
    assert len(d2a) == 1
    d2b, d2b_units = exporter.export(800)
    g2, g2_units = exporter.export(600)
    d3, _ = exporter.export(500)
    state = tmp_path / "state"

    # A: saves every second; killed once a save holds everything it received.
    fast = {"VOIPFLOW_COLLECTOR_TEMPLATE_SAVE_INTERVAL_S": "1"}
    a = CollectProcess(state, output="null", env=fast).start()
    _receive(a, d1)
    _wait_saved(state, d1[-1])
    a.stop(signal.SIGKILL)

    send_paced(g1, a.port, source=SOURCE)

    # B: no periodic save of its own; nothing arrived after A's last save:
    # the loss is exactly g1's records, and it is saved right away.
    slow = {"VOIPFLOW_COLLECTOR_TEMPLATE_SAVE_INTERVAL_S": "3600"}
    b = CollectProcess(state, output="null", port=a.port, env=slow).start()
    _receive(b, d2a)
    assert b.wait_metric(LOST, g1_units) == g1_units
    assert "did not stop in order" in b.log_text()
    _wait_saved(state, d2a[-1])
    _receive(b, d2b)
    b.stop(signal.SIGKILL)

    send_paced(g2, a.port, source=SOURCE)

    # C: the reference is B's save after d2a: g1 is not counted again, but
    # what B received after that save (d2b) is counted with g2.
    with CollectProcess(state, output="null", port=a.port) as c:
        _receive(c, d3)
        assert c.wait_metric(LOST, d2b_units + g2_units) == d2b_units + g2_units
        assert c.metric(RESTARTS) == 0


@pytest.mark.slow
def test_a_corrupt_state_file_is_a_warning_not_a_failed_start(tmp_path: Path) -> None:
    exporter = Exporter(10)
    before, _ = exporter.export(500)
    exporter.export(500)  # sent while the collector was down
    after, _ = exporter.export(500)
    state = tmp_path / "state"
    with CollectProcess(state, output="null") as first:
        _receive(first, before)
    (state / STATE).write_bytes(b'{"format": "voipflow-sequence-state", "vers')
    with CollectProcess(state, output="null", port=first.port) as second:
        _receive(second, after)
        assert second.metric(LOST) == 0  # nothing to count from: a fresh start
    assert second.returncode == 0
    log = second.log_text()
    assert "sequence state not loaded" in log and str(state / STATE) in log


@pytest.mark.slow
def test_two_workers_count_the_gap_once_whichever_gets_the_exporter(tmp_path: Path) -> None:
    """Each worker loads every worker's state: the kernel may send the
    exporter (a new source port here, each send) to the other one."""
    exporter = Exporter(10)
    runs = [exporter.export(600) for _ in range(5)]  # sent, missed, sent, missed, sent
    env = {"VOIPFLOW_COLLECTOR_WORKERS": "2"}
    state = tmp_path / "state"
    port = 0
    for i in range(3):
        with CollectProcess(state, output="null", env=env, port=port or None) as collect:
            port = collect.port
            _receive(collect, runs[2 * i][0])
            want = runs[2 * i - 1][1] if i else 0
            assert collect.wait_metric(LOST, want) == want
        assert collect.returncode == 0
        if i < 2:
            send_paced(runs[2 * i + 1][0], port, source=SOURCE)
