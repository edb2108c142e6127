"""Does the classifier generalise? Capture split, leave-one-app-out and calibration.

``docs/evaluation.md`` asks for three views beyond the corpus's own figures:

* **Split by capture** (:func:`capture_half`, :func:`halves`): flows of one
  capture share hosts and timing, so the corpus is split by capture, never by
  flow. Half 0 is the half rules may be tuned on, half 1 the half that is
  only reported; the split is a hash of the capture's file name, so it is the
  same on every machine and for every version of the classifier.
* **Leave one app out** (:func:`leave_one_app_out`): for each app family the
  classifier is rebuilt without that family's own knowledge (its provider
  ranges, documented ports and exporter ids, ``Classifier(without=...)``) and
  the family's labelled flows are scored: what the generic evidence (STUN,
  ICE, RTP shape, session context) still finds.
* **Calibration** (:func:`calibration`): the confidence the classifier gives
  against the share of records in that confidence bin that really are VoIP,
  and the expected calibration error (the bins' gaps weighted by their
  records), so that ``confidence`` means what it says.

All of it works on verdicts already joined to the labels
(:class:`~voipflow.evaluation.captures.Verdicts`): the exporter runs once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from voipflow.evaluation.captures import Exported, Verdicts, classify_all
from voipflow.evaluation.roles import score_roles
from voipflow.streams import evaluate as ev
from voipflow.streams.classify import Classifier
from voipflow.streams.providers import ProviderRanges

#: App families of the leave-one-app-out table: the evaluation's main apps,
#: and ``other`` for every other app the classifier knows (H.323, Viber, ...).
FAMILIES: tuple[str, ...] = (*ev.MAIN_APPS, "other")


def capture_digest(name: str) -> bytes:
    """SHA-256 of a capture's name: what splits and folds captures, whole."""
    return hashlib.sha256(name.encode("utf-8")).digest()


def capture_half(name: str) -> int:
    """0 (tune) or 1 (report): the low bit of the SHA-256 of the capture's name."""
    return capture_digest(name)[0] & 1


def subset(labels: ev.Labels, keep: np.ndarray) -> tuple[ev.Labels, np.ndarray]:
    """The labelled flows where ``keep``, and old index -> new index (-1 dropped)."""
    rows = np.flatnonzero(keep)
    out = ev.Labels(
        pcap=[labels.pcap[i] for i in rows],
        key=[labels.key[i] for i in rows],
        is_voip=labels.is_voip[rows],
        app=[labels.app[i] for i in rows],
        ndpi_proto=[labels.ndpi_proto[i] for i in rows],
        packets=labels.packets[rows],
        role=[labels.role[i] for i in rows] if labels.role else [],
    )
    remap = np.full(len(labels) + 1, -1, dtype=np.int64)  # last slot: index -1 stays -1
    remap[rows] = np.arange(len(rows))
    return out, remap


def halves(verdicts: Verdicts, labels: ev.Labels, captures: list[str]) -> dict[str, Any]:
    """Per half of the capture split: per record and per labelled flow P/R/F1, per app.

    Only the labelled flows of ``captures`` (those run) count."""
    names = sorted(set(captures))
    run = set(names)
    label_half = np.array([capture_half(p) if p in run else -1 for p in labels.pcap], dtype=np.int8)
    out: dict[str, Any] = {}
    for half, title in ((0, "tune"), (1, "report")):
        sub, remap = subset(labels, label_half == half)
        idx = remap[verdicts.label_idx]
        rec = np.array([capture_half(n) == half for n in verdicts.names], dtype=bool)
        s = ev.score(idx[rec], verdicts.is_voip[rec], verdicts.app[rec], sub)
        out[title] = {
            "captures": sum(1 for n in names if capture_half(n) == half),
            "labelled_flows": len(sub),
            "voip_flows": int(np.count_nonzero(sub.is_voip)),
            "per_record": s["per_record"],
            "per_flow": s["per_flow"],
            "per_app": s["per_app"],
            "roles": score_roles(idx[rec], verdicts.role[rec], sub),
        }
    return out


def calibration(confidence: np.ndarray, truth: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Confidence bins against the share that is VoIP, and the expected calibration error."""
    conf = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    truth = np.asarray(truth, dtype=bool)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    right = np.bincount(which, weights=truth.astype(np.float64), minlength=bins)
    table = []
    ece = 0.0
    total = max(len(conf), 1)
    for b in range(bins):
        if not count[b]:
            continue
        mean_conf = conf_sum[b] / count[b]
        share = right[b] / count[b]
        ece += count[b] / total * abs(mean_conf - share)
        table.append(
            {
                "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
                "records": int(count[b]),
                "mean_confidence": float(mean_conf),
                "share_voip": float(share),
            }
        )
    return {"bins": table, "ece": float(ece), "records": len(conf)}


def truth_apps(labels: ev.Labels) -> np.ndarray:
    """Family of each labelled VoIP flow (``not_voip`` for the rest)."""
    fam = np.array([a if a in ev.MAIN_APPS else "other" for a in labels.app], dtype=object)
    fam[~labels.is_voip] = "not_voip"
    return fam


def family_apps(family: str, classifier_apps: tuple[str, ...]) -> frozenset[str]:
    """The app names whose knowledge goes off when ``family`` is left out."""
    if family == "other":
        return frozenset(a for a in classifier_apps if a and a not in ev.MAIN_APPS)
    return frozenset({family})


def family_runs(
    exported: Exported,
    verdicts: Verdicts,
    labels: ev.Labels,
    providers: ProviderRanges,
) -> Iterator[tuple[str, np.ndarray, Verdicts]]:
    """Per family with labelled flows: the family, its labelled flows (mask) and
    the verdicts of a classifier without that family's own knowledge."""
    fam = truth_apps(labels)
    full_apps = Classifier(providers).apps
    for family in FAMILIES:
        rows = fam == family
        if not rows.any():
            continue
        clf = Classifier(providers, without=family_apps(family, full_apps))
        yield family, rows, classify_all(exported, clf, verdicts.names, verdicts.label_idx)


def leave_one_app_out(
    exported: Exported,
    verdicts: Verdicts,
    labels: ev.Labels,
    providers: ProviderRanges,
) -> dict[str, Any]:
    """Per family: its flows found with all knowledge and without its own, and the
    whole run's per labelled flow precision with it left out."""
    out: dict[str, Any] = {}
    full_pred = flow_pred(verdicts, len(labels))
    for family, rows, v in family_runs(exported, verdicts, labels, providers):
        out[family] = family_row(rows, full_pred, flow_pred(v, len(labels)), labels)
    return out


def family_row(
    rows: np.ndarray, full_pred: np.ndarray, pred: np.ndarray, labels: ev.Labels
) -> dict[str, Any]:
    """One row of the leave-one-app-out table from per labelled flow predictions."""
    whole = ev.prf(pred, labels.is_voip)
    return {
        "flows": int(np.count_nonzero(rows)),
        "found_all": int(np.count_nonzero(full_pred & rows)),
        "found_left_out": int(np.count_nonzero(pred & rows)),
        "recall_left_out": float(np.count_nonzero(pred & rows) / np.count_nonzero(rows)),
        "precision_run": whole["precision"],
        "f1_run": whole["f1"],
    }


def flow_pred(v: Verdicts, n: int) -> np.ndarray:
    """Per labelled flow: any of its records VoIP."""
    pred = np.zeros(n, dtype=bool)
    m = v.label_idx >= 0
    np.logical_or.at(pred, v.label_idx[m], v.is_voip[m])
    return pred
