"""Scoring the role verdict: truth from the labels' protocol names, media-level figures."""

from __future__ import annotations

import numpy as np
import pytest

from voipflow.evaluation.roles import ICE_OR_MEDIA, NONE, UNKNOWN, role_truth, score_roles
from voipflow.streams import evaluate as ev


def labels(protos: list[str], voip: list[bool]) -> ev.Labels:
    n = len(protos)
    return ev.Labels(
        pcap=["c.pcap"] * n,
        key=[("c.pcap", 17, "10.0.0.1", i, "10.0.0.2", i) for i in range(n)],
        is_voip=np.array(voip, dtype=bool),
        app=["other"] * n,
        ndpi_proto=protos,
        packets=np.zeros(n, dtype=np.int64),
    )


LABELS = labels(
    ["RTP", "SIP", "STUN.WhatsAppCall", "TLS.Skype_Teams", "Zoom", "DNS", "RTCP", "STUN"],
    [True, True, True, True, True, False, True, False],
)


def test_truth_only_where_the_protocol_name_states_a_role() -> None:
    assert role_truth(LABELS).tolist() == [
        "media",
        "signalling",
        ICE_OR_MEDIA,
        "control",
        UNKNOWN,  # the label names the app, not what the flow does for it
        NONE,
        "control",  # RTCP: RFC 3550's control protocol
        NONE,  # a STUN flow the label rule does not count as a call
    ]


def test_a_role_column_wins_where_it_names_a_role() -> None:
    own = labels(["voice.opus", "RTP", "STUN.WhatsAppCall", "game.fps"], [True] * 3 + [False])
    own.role = ["relay", "", "ice", "media"]  # held-out labels, by construction
    assert role_truth(own).tolist() == ["relay", "media", "ice", NONE]
    # Media through a relay is media at the media level, whichever was said.
    got = score_roles(np.arange(4), np.array(["media", "media", "ice", ""]), own)
    assert got["per_role"]["relay"] == {"records": 1, "predicted": {"media": 1}, "right": 0}
    m = got["media_per_record"]
    assert (m["decided"], m["tp"], m["fp"], m["fn"], m["media_truth"]) == (4, 2, 0, 0, 2)


def test_per_role_table_and_media_level_figures() -> None:
    idx = np.array([0, 0, 1, 2, 3, 4, 5, -1, 6])
    role = np.array(["media", "ice", "signalling", "relay", "", "media", "media", "media", ""])
    got = score_roles(idx, role, LABELS)
    per_role = got["per_role"]
    assert per_role["media"] == {"records": 2, "predicted": {"media": 1, "ice": 1}, "right": 1}
    assert per_role["signalling"]["right"] == 1
    assert per_role[ICE_OR_MEDIA]["right"] == 1  # relay is media
    assert per_role["control"] == {"records": 2, "predicted": {"not_voip": 2}, "right": 0}
    assert per_role[UNKNOWN]["right"] is None
    assert per_role[NONE] == {"records": 1, "predicted": {"media": 1}, "right": 0}
    # Decided records: the two RTP ones, SIP, TLS, RTCP and DNS (the unmatched
    # record and the unknown/ice-or-media ones are left out).
    m = got["media_per_record"]
    assert (m["decided"], m["tp"], m["fn"], m["fp"]) == (6, 1, 1, 1)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    # Per flow the RTP flow carries media (one of its records does).
    f = got["media_per_flow"]
    assert (f["tp"], f["fn"], f["fp"]) == (1, 0, 1)
    assert got["truth_flows"]["control"] == 2
