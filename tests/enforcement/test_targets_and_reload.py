"""Observed peers from voip-flows.v1 batches, app port ranges, and policy reloads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.enforcement.helpers import T0, usage
from voipflow.enforcement.config import EvaluatorConfig, GuardrailConfig
from voipflow.enforcement.errors import PolicyFileError
from voipflow.enforcement.evaluator import Publish, Withdraw
from voipflow.enforcement.evaluator_process import EvaluatorProcess, EvaluatorSetup
from voipflow.enforcement.targets import PeerSet, app_ports
from voipflow.schemas import voipflows
from voipflow.schemas.flowbatch import ipv4_to_addr16
from voipflow.schemas.topics import KafkaConfig

POLICY = """\
policies:
  - name: peers
    match: {apps: [whatsapp]}
    condition: {metric: call_seconds, threshold: 10, for: 1}
    action: block
    target: observed_peers
    ttl: 1h
"""


def _batch(peers: list[str], ends: list[int], cities: list[str]) -> voipflows.VoipFlowBatch:
    return voipflows.decode(
        voipflows.encode(
            voipflows.make_voip_batch(
                {
                    "peer_addr": ipv4_to_addr16(
                        np.array(
                            [int.from_bytes(bytes(map(int, p.split(".")))) for p in peers],
                            dtype=np.uint32,
                        )
                    ),
                    "flow_end_ms": np.array(ends, dtype=np.uint64),
                    "city": cities,
                    "app": ["whatsapp"] * len(peers),
                    "is_voip": np.ones(len(peers), dtype=np.uint8),
                }
            )
        )
    )


def test_peers_from_a_batch_with_timeouts() -> None:
    peers = PeerSet(timeout_ms=60_000, max_peers=2)
    batch = _batch(
        ["192.0.2.1", "192.0.2.1", "198.51.100.7", "203.0.113.9", "192.0.2.44"],
        [T0, T0 + 5_000, T0 + 1_000, T0 + 2_000, T0 + 3_000],
        ["Berlin", "Berlin", "Berlin", "Berlin", "Hamburg"],
    )
    cols = {
        "city": batch["city"].to_numpy(zero_copy_only=False),
        "app": batch["app"].to_numpy(zero_copy_only=False),
        "peer_addr": batch["peer_addr"],
        "flow_end_ms": batch["flow_end_ms"],
    }
    assert peers.add_batch(cols) == 4  # distinct (city, app, peer)
    # the two most recently seen of Berlin, sorted
    assert peers.peers("Berlin", "whatsapp", T0 + 10_000) == ["192.0.2.1/32", "203.0.113.9/32"]
    assert peers.peers("Hamburg", "whatsapp", T0 + 10_000) == ["192.0.2.44/32"]
    # 60 s after it was last seen a peer is gone
    assert peers.peers("Berlin", "whatsapp", T0 + 62_500) == ["192.0.2.1/32"]
    peers.expire(T0 + 70_000)
    assert peers.seen == {}


def test_app_ports_from_the_classifier_tables() -> None:
    assert app_ports("zoom") == ("udp", ((8801, 8810),))
    assert app_ports("sip") == ("any", ((5060, 5061),))
    assert app_ports("whatsapp") == ("udp", ())


def _process(policies: Path) -> EvaluatorProcess:
    setup = EvaluatorSetup(
        EvaluatorConfig(policies=policies, reload_s=0.1),
        GuardrailConfig(),
        KafkaConfig(),
        None,
        None,
    )
    return EvaluatorProcess(setup, "127.0.0.1:9")  # the constructor does no I/O


def test_a_bad_policy_file_fails_the_start(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("block", "drop"))
    with pytest.raises(PolicyFileError) as info:
        _process(path)
    assert info.value.line == 5


def test_a_failed_reload_keeps_the_running_policies(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    proc = _process(path)
    proc.peers.add("Berlin", "whatsapp", ["192.0.2.1/32"], T0)
    ev = proc.owned[0] = proc.new_evaluator()  # as if the group gave it partition 0
    adm = proc.admission = proc.new_admission()  # and the proposals partition
    (rule,) = [
        o
        for o in ev.on_usage(usage("Berlin", "whatsapp", 0, call_seconds=50), T0)
        if isinstance(o, Publish)
    ]
    assert rule.rule["target"]["prefixes"] == ["192.0.2.1/32"]
    assert adm.on_proposal(rule.rule, rule.run_start, T0)[0] == "admitted"
    path.write_text(POLICY + "    bogus: 1\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert proc._reload() == []  # refused: nothing withdrawn
    assert [p.name for p in ev.policies] == ["peers"]
    path.write_text(POLICY.replace("name: peers", "name: other"))
    os.utime(path, (time.time() + 10, time.time() + 10))
    (gone,) = proc._reload()  # a good reload without the policy withdraws its rule
    assert isinstance(gone, Withdraw) and gone.reason == "withdrawn"
    assert [p.name for p in ev.policies] == ["other"] == [p.name for p in adm.policies]
    assert ev.active_rules() == {} == adm.active_rules()
