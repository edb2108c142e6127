"""The chaos run's short form: one of two workers is killed, the sink dies between insert
and commit and the collector restarts under load; nothing is lost or counted
twice but the UDP sent while the collector's socket was closed, which is
explained flow by flow and counted by the restarted collector itself.

The same harness as ``benchmarks/chaos.py`` (:mod:`voipflow.evaluation.chaos`)
on the session's single broker: ``voipflow collect``, ``voipflow worker`` and
``voipflow sink`` (chdb) take 1,000 IPFIX flows/s over UDP for 30 s. The
second of two workers is killed (SIGKILL) and started again 10 s later,
while the first takes over its partitions and replays what it had not
committed; the sink dies right after its 25th insert, before it commits, and
is restarted 5 s later; the collector is stopped and started again 5 s later (its
exporters sent their templates once, at the start: only its template cache
can decode what follows). Every flow carries its own id, so the test counts
against the sender's record: each flow that reached the collector once in
``traffic.v1``, once in ``flows_voip``, once in the usage rows, and every
missing one in a datagram sent while the collector was down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from voipflow.evaluation.chaos import ChaosOptions, ChaosRun

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


@dataclass
class Broker:
    bootstrap: str


def test_worker_and_sink_killed_and_collector_restarted_under_load_lose_and_duplicate_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    options = ChaosOptions(
        rate=1000,
        seconds=30,
        window_s=2,
        down_s=10.0,
        pause_s=5.0,
        sink_kill_after_inserts=25,
        lateness_s=30,
        idle_close_s=15.0,
        drain_s=240.0,
    )
    lines: list[str] = []
    faults = ["worker", "sink", "collector"]
    run = ChaosRun(Broker(kafka_bootstrap), tmp_path, faults, options, say=lines.append)
    row = run.run()
    # Every event line in full (a list would be shortened in the report).
    assert row.drained, "\n".join(lines)
    assert row.sent == 30 * 1000
    # The faults happened: the sink died and came back, the collector was down.
    assert any("sink died" in e for e in row.events), row.events
    assert any("sink back" in e for e in row.events), row.events
    assert any("collector back" in e for e in row.events), row.events
    assert any("SIGKILL worker-2" in e for e in row.events), row.events
    assert any("worker-2 back" in e for e in row.events), row.events
    # What the collector missed was sent while it was down (and nothing else).
    assert 0 < row.udp_lost < row.sent, row
    # ... and the restarted collector counted it, from the exporters' sequence
    # numbers, once the exporters' next datagrams reached it (on a loaded
    # machine its restart can take until after the load has ended; then no
    # datagram shows the gap and nothing can be counted).
    (back,) = [float(e.split()[1]) for e in row.events if e.endswith("collector back")]
    if back < options.seconds - 2:
        assert row.collector_seq_lost == row.udp_lost, row
    else:
        assert 0 <= row.collector_seq_lost <= row.udp_lost, row
    reached = row.sent - row.udp_lost
    # The harness's last lines say what the workers counted as late.
    assert row.traffic_flows == reached, (row, lines[-4:])
    assert row.traffic_voip == reached, (row, lines[-4:])
    assert row.flows_voip_distinct == reached, (row, lines[-4:])
    assert row.flows_voip_rows == row.flows_voip_distinct, row
    assert row.usage_flows == reached, (row, lines[-4:])
    assert (row.lost, row.duplicated) == (0, 0), row
