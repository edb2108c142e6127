"""The learned component's experiment: features without addresses, folds of whole captures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.streams.classify_support import CLIENT, batch, both, voice
from voipflow.evaluation import generalise as gen
from voipflow.evaluation import learned
from voipflow.evaluation.captures import Exported, classify_all
from voipflow.schemas.flowbatch import text_to_addr16
from voipflow.streams.classify import Classifier
from voipflow.streams.providers import load_providers


def _capture(i: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Voice between two ephemeral, even ports with its STUN check; and web and DNS."""
    peer = f"198.51.100.{i % 200 + 1}"
    port = 20000 + 2 * int(rng.integers(0, 10000))
    rows = both(CLIENT, port, peer, port + 2, **voice(packets=int(rng.integers(500, 2000))))
    rows += both(CLIENT, port, "203.0.113.7", 3478, packets=2, bytes=200)
    rows += both(CLIENT, 40000 + i, "192.0.2.80", 443, protocol=6, packets=400, bytes=500_000)
    rows += both(CLIENT, 50000 + i, "192.0.2.53", 53, packets=1, bytes=80)
    return rows


def test_features_carry_no_address() -> None:
    raw = {"src_port", "dst_port", "exporter_addr"}
    assert not [f for f in learned.FEATURES if "addr" in f or f in raw]
    rows = _capture(3, np.random.default_rng(1))
    # The same flows between other hosts (a one-to-one renaming keeps the pairs).
    hosts = sorted({r["src_addr"] for r in rows} | {r["dst_addr"] for r in rows})
    rename = {h: text_to_addr16(f"10.9.{k}.1") for k, h in enumerate(hosts)}
    moved = [
        {**r, "src_addr": rename[r["src_addr"]], "dst_addr": rename[r["dst_addr"]]} for r in rows
    ]
    np.testing.assert_array_equal(
        learned.flow_features(batch(moved)), learned.flow_features(batch(rows))
    )


def test_capture_folds_keep_a_capture_whole() -> None:
    names = np.array([f"capture{i % 40}.pcap" for i in range(400)], dtype=object)
    folds = learned.capture_folds(names)
    assert set(folds.tolist()) == set(range(learned.FOLDS))
    for name in set(names):
        assert len(set(folds[names == name].tolist())) == 1


def test_trained_on_the_tune_half_finds_voice_in_the_report_half() -> None:
    pytest.importorskip("sklearn", reason="the learn extra (scikit-learn) is not installed")
    rng = np.random.default_rng(7)
    exported = Exported(batches=[(f"c{i}.pcap", batch(_capture(i, rng))) for i in range(40)])
    names = [n for n, b in exported.batches for _ in range(len(b))]
    clf = Classifier(load_providers(), ice_memory=False)
    verdicts = classify_all(exported, clf, names, np.full(len(names), -1, dtype=np.int64))
    x = learned.features(exported, verdicts)
    assert x.shape == (len(names), len(learned.FEATURES))
    truth = np.tile(np.array([True] * 4 + [False] * 4), 40)  # rows of _capture in order
    name_arr = np.array(names, dtype=object)
    tune = np.array([gen.capture_half(n) == 0 for n in names])
    assert 0 < tune.sum() < len(names)
    fitted = learned.fit(x[tune], truth[tune], verdicts.is_voip[tune], name_arr[tune])
    assert fitted.alone <= 1.0  # the tune side supports a threshold at precision >= 0.95
    score = learned.score_out_of_sample(fitted, x, name_arr, tune)
    report = ~tune
    pred = score[report] >= fitted.alone
    assert pred[truth[report]].mean() > 0.9
    assert not pred[~truth[report]].any()
