"""The generalisation measurement: capture split, calibration, the leave-one-app-out switch."""

from __future__ import annotations

import numpy as np

from tests.streams.classify_support import CLIENT, batch, both, run, voice
from voipflow.evaluation import generalise as gen
from voipflow.streams import evaluate as ev
from voipflow.streams.classify import Classifier
from voipflow.streams.providers import load_providers


def test_capture_half_is_a_stable_hash_of_the_name() -> None:
    names = [f"capture{i}.pcap" for i in range(200)]
    halves = [gen.capture_half(n) for n in names]
    assert set(halves) == {0, 1}
    # Roughly half each way, and the same answer every time.
    assert 60 < sum(halves) < 140
    assert halves == [gen.capture_half(n) for n in names]


def test_calibration_bins_and_error() -> None:
    conf = np.array([0.05, 0.05, 0.95, 0.95, 0.95, 0.95])
    truth = np.array([False, False, True, True, True, False])
    cal = gen.calibration(conf, truth)
    assert [b["bin"] for b in cal["bins"]] == ["0.0-0.1", "0.9-1.0"]
    assert cal["bins"][1]["share_voip"] == 0.75
    # |0.05 - 0| * 2/6 + |0.95 - 0.75| * 4/6
    assert abs(cal["ece"] - (0.05 * 2 / 6 + 0.2 * 4 / 6)) < 1e-9


def test_without_switches_off_an_apps_ports_and_ranges() -> None:
    providers = load_providers()
    zoom_media = both(CLIENT, 50000, "203.0.113.9", 8801, **voice())
    full = run(zoom_media)
    assert full.is_voip.all()
    assert set(full.app_names()) == {"zoom"}
    blind = Classifier(providers, ice_memory=False, without=frozenset({"zoom"}))
    left = blind.classify(batch(zoom_media))
    assert not left.is_voip.any()  # nothing but Zoom's port said it was a call
    # The family's apps: "other" takes every app outside the main ones.
    other = gen.family_apps("other", Classifier(providers).apps)
    assert "viber" in other and "zoom" not in other and "" not in other


def test_subset_remaps_label_indices() -> None:
    labels = ev.Labels(
        pcap=["a", "b", "a"],
        key=[("a", 1), ("b", 2), ("a", 3)],
        is_voip=np.array([True, False, False]),
        app=["sip", "other", "other"],
        ndpi_proto=["SIP", "DNS", "DNS"],
        packets=np.array([1, 2, 3]),
    )
    sub, remap = gen.subset(labels, np.array([True, False, True]))
    assert sub.pcap == ["a", "a"]
    assert remap[np.array([0, 1, 2, -1])].tolist() == [0, -1, 1, -1]
