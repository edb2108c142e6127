"""A learned component tried beside the rules: gradient-boosted trees on flow features.

Issue 10 asks whether a model beside rules-7 generalises better under the two
measurements of :mod:`voipflow.evaluation.generalise`. This module is that
experiment, an evaluation only (the worker does not use it):

* **Features** (:func:`flow_features`, :func:`features`): per flow record,
  generic ones only: packets, bytes, mean packet size, the conversation's
  (reverse direction's) counters, duration, packets/s, protocol, DSCP, the
  port class of each side (system / registered / dynamic) and its parity,
  the sampling rate, then the rules' evidence bits and confidence from the
  classifier run being measured. No address and no port number goes in:
  the app-specific knowledge reaches the model only through the evidence
  bits, and in leave one app out those come from the classifier with that
  app's knowledge off, exactly as the rules' own leave-one-app-out row.
* **Capture split**: trained on the tune half's records, the report half
  scored. The threshold comes from the tune half alone: out-of-fold scores
  over folds of whole tune captures (:func:`capture_folds`), the threshold
  with the most recall at per record precision >= 0.95 there.
* **Leave one app out**: for each family, a model trained on the tune
  half's records minus the family's, with the family's knowledge off in
  its evidence, thresholded on the tune half's out-of-fold scores. Every
  record is scored by a model that never saw its capture (tune-half
  records by their capture fold's model), so the whole run's precision is
  out of sample, and the family's records were in no training set.
* Two verdicts: the model alone (score >= threshold) and the rules OR the
  model (rules-7's verdict, or the model's score >= its own threshold).

``voipflow eval --learned`` prints the table beside rules-7's figures of the
same run (needs the optional ``learn`` extra: scikit-learn).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from voipflow.evaluation import generalise as gen
from voipflow.evaluation.captures import Exported, Verdicts
from voipflow.schemas.flowbatch import FlowBatch
from voipflow.schemas.voipflows import Evidence
from voipflow.streams import evaluate as ev
from voipflow.streams.flowpairs import pair_directions
from voipflow.streams.providers import ProviderRanges

#: Per record precision the threshold must keep on the training side.
MIN_PRECISION = 0.95
#: Folds of whole captures for the out-of-fold scores the threshold is chosen on.
FOLDS = 3
EVIDENCE_BITS: tuple[Evidence, ...] = tuple(Evidence)
FLOW_FEATURES: tuple[str, ...] = (
    "log_packets",
    "log_bytes",
    "mean_bytes",
    "log_reverse_packets",
    "conversation_mean_bytes",
    "duration_s",
    "packets_per_s",
    "protocol",
    "dscp",
    "src_port_class",
    "dst_port_class",
    "src_port_odd",
    "dst_port_odd",
    "sampling_rate",
)
#: Every column of the model's input, in order.
FEATURES: tuple[str, ...] = (
    *FLOW_FEATURES,
    *(f"evidence_{b.name.lower()}" for b in EVIDENCE_BITS if b.name),
    "rule_confidence",
)


def _port_class(port: np.ndarray) -> np.ndarray:
    """0 system (< 1024), 1 registered (< 49152), 2 dynamic (IANA's classes)."""
    return (port >= 1024).astype(np.float32) + (port >= 49152).astype(np.float32)


def flow_features(batch: FlowBatch) -> np.ndarray:
    """The generic flow columns (:data:`FLOW_FEATURES`) of one batch, float32.

    Addresses are used only to pair a record with its reverse direction (as
    the classifier does); none is a feature."""
    n = len(batch)
    pkts = batch["packets"].astype(np.float64)
    byts = batch["bytes"].astype(np.float64)
    partner = pair_directions(batch)
    has = partner >= 0
    rpkts = batch["reverse_packets"].astype(np.float64) + np.where(has, pkts[partner], 0.0)
    rbyts = batch["reverse_bytes"].astype(np.float64) + np.where(has, byts[partner], 0.0)
    dur = np.maximum(batch["flow_end_ms"].astype(np.int64) - batch["flow_start_ms"], 0) / 1000.0
    rate = np.maximum(batch["sampling_rate"].astype(np.float64), 1.0)
    sp = batch["src_port"].astype(np.int64)
    dp = batch["dst_port"].astype(np.int64)
    out = np.empty((n, len(FLOW_FEATURES)), dtype=np.float32)
    out[:, 0] = np.log1p(pkts * rate)
    out[:, 1] = np.log1p(byts * rate)
    out[:, 2] = np.divide(byts, pkts, out=np.zeros(n), where=pkts > 0)
    out[:, 3] = np.log1p(rpkts * rate)
    all_pk = pkts + rpkts
    out[:, 4] = np.divide(byts + rbyts, all_pk, out=np.zeros(n), where=all_pk > 0)
    out[:, 5] = dur
    out[:, 6] = np.divide(pkts * rate, dur, out=np.zeros(n), where=(pkts >= 2) & (dur > 0))
    out[:, 7] = batch["protocol"]
    out[:, 8] = batch["tos"] >> 2
    out[:, 9] = _port_class(sp)
    out[:, 10] = _port_class(dp)
    out[:, 11] = sp & 1
    out[:, 12] = dp & 1
    out[:, 13] = rate
    return out


def rule_features(evidence: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """The rules' evidence bits (one column each) and confidence, float32."""
    ev_bits = np.asarray(evidence, dtype=np.uint32)
    bits = np.array([int(b) for b in EVIDENCE_BITS], dtype=np.uint32)
    out = np.empty((len(ev_bits), len(bits) + 1), dtype=np.float32)
    out[:, :-1] = (ev_bits[:, None] & bits[None, :]) > 0
    out[:, -1] = confidence
    return out


def features(exported: Exported, verdicts: Verdicts) -> np.ndarray:
    """The model's input for every record of a run, in run order."""
    flows = [flow_features(b) for _, b in exported.batches]
    flow = np.concatenate(flows) if flows else np.zeros((0, len(FLOW_FEATURES)), np.float32)
    return np.hstack([flow, rule_features(verdicts.evidence, verdicts.confidence)])


def capture_folds(names: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Fold number of each record: whole captures per fold (by a hash of the
    name, other bits than the capture split's), never one capture in two."""
    uniq, inv = np.unique(names, return_inverse=True)
    digests = [gen.capture_digest(str(u)) for u in uniq]  # per capture, not per record
    fold_of = np.array([int.from_bytes(d[1:5], "little") % folds for d in digests])
    out: np.ndarray = fold_of[inv]
    return out


def _model() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=10,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=0,
    )


def pick_threshold(score: np.ndarray, truth: np.ndarray, rules: np.ndarray | None = None) -> float:
    """The threshold with the most recall at precision >= :data:`MIN_PRECISION`
    (of ``score >= t``, or ``rules | score >= t``), the most precise of those
    on a tie (the lowest would add false positives for no recall); above 1
    (never) if none."""
    best_t, best = 1.01, (-1.0, -1.0)
    for t in np.unique(np.round(score, 3)):
        pred = score >= t
        if rules is not None:
            pred = pred | rules
        s = ev.prf(pred, truth)
        key = (float(s["recall"]), float(s["precision"]))
        if s["tp"] and s["precision"] >= MIN_PRECISION and key > best:
            best_t, best = float(t), key
    return best_t


@dataclass(slots=True)
class Fitted:
    """A model trained on the tune side, the models of its capture folds, and two
    thresholds from those folds' out-of-fold scores."""

    model: Any
    fold_models: list[Any]
    alone: float
    combined: float


def _fit_one(x: np.ndarray, y: np.ndarray) -> Any:
    if y.all() or not y.any():
        return float(y.mean()) if len(y) else 0.0  # a constant score
    return _model().fit(x, y)


def _score(model: Any, x: np.ndarray) -> np.ndarray:
    if isinstance(model, float):
        return np.full(len(x), model)
    out: np.ndarray = model.predict_proba(x)[:, 1]
    return out


def fit(x: np.ndarray, y: np.ndarray, rules: np.ndarray, names: np.ndarray) -> Fitted:
    """Train on ``x``/``y`` (the tune side's rows); the thresholds come from
    out-of-fold scores over folds of whole captures of these rows only."""
    folds = capture_folds(names)
    fold_models = [_fit_one(x[folds != f], y[folds != f]) for f in range(FOLDS)]
    oof = np.zeros(len(y), dtype=np.float64)
    for f in range(FOLDS):
        oof[folds == f] = _score(fold_models[f], x[folds == f])
    return Fitted(
        _fit_one(x, y), fold_models, pick_threshold(oof, y), pick_threshold(oof, y, rules)
    )


def score_out_of_sample(
    fitted: Fitted, x: np.ndarray, names: np.ndarray, tune: np.ndarray
) -> np.ndarray:
    """Scores of every record from a model that never saw its capture: tune-half
    records from the model of their capture's fold, the others from the whole
    tune side's model."""
    out = np.zeros(len(x), dtype=np.float64)
    folds = capture_folds(names)
    for f in range(FOLDS):
        rows = tune & (folds == f)
        out[rows] = _score(fitted.fold_models[f], x[rows])
    out[~tune] = _score(fitted.model, x[~tune])
    return out


def _with(v: Verdicts, is_voip: np.ndarray) -> Verdicts:
    return replace(v, is_voip=np.asarray(is_voip, dtype=bool))


def _truth(verdicts: Verdicts, labels: ev.Labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Capture names, tune-half mask and the label of every record (False unmatched)."""
    names = np.asarray(verdicts.names, dtype=object)
    uniq, inv = np.unique(names, return_inverse=True)
    tune = np.array([gen.capture_half(str(u)) == 0 for u in uniq], dtype=bool)[inv.reshape(-1)]
    matched = verdicts.label_idx >= 0
    truth = np.zeros(len(names), dtype=bool)
    truth[matched] = labels.is_voip[verdicts.label_idx[matched]]
    return names, tune, truth


def split_half(
    x: np.ndarray, verdicts: Verdicts, labels: ev.Labels, captures: list[str]
) -> dict[str, Any]:
    """Trained on the tune half; per record and per labelled flow figures of both
    halves (the tune half's from its out-of-fold scores), model alone and rules OR model."""
    names, tune, truth = _truth(verdicts, labels)
    train = tune & (verdicts.label_idx >= 0)
    fitted = fit(x[train], truth[train], verdicts.is_voip[train], names[train])
    score = score_out_of_sample(fitted, x, names, tune)
    out: dict[str, Any] = {"threshold_alone": fitted.alone, "threshold_combined": fitted.combined}
    for title, pred in (
        ("rules", verdicts.is_voip),
        ("model", score >= fitted.alone),
        ("rules_or_model", verdicts.is_voip | (score >= fitted.combined)),
    ):
        out[title] = gen.halves(_with(verdicts, pred), labels, captures)
    return out


def leave_one_app_out(
    exported: Exported, verdicts: Verdicts, labels: ev.Labels, providers: ProviderRanges
) -> dict[str, Any]:
    """Per family: rules without its knowledge, the model alone and rules OR
    model. The model is trained on the tune half's records minus the family's,
    on features from the classifier without the family's knowledge, and
    thresholded there; every record is scored out of sample (the family's
    records were in no training set at all)."""
    names, tune, truth = _truth(verdicts, labels)
    matched = verdicts.label_idx >= 0
    fam = gen.truth_apps(labels)
    rec_fam = np.where(matched, fam[np.maximum(verdicts.label_idx, 0)], "unmatched")
    full_pred = gen.flow_pred(verdicts, len(labels))
    n = len(labels)
    out: dict[str, Any] = {}
    for family, rows, v in gen.family_runs(exported, verdicts, labels, providers):
        x = features(exported, v)
        train = tune & matched & (rec_fam != family)
        fitted = fit(x[train], truth[train], v.is_voip[train], names[train])
        score = score_out_of_sample(fitted, x, names, tune)
        alone = score >= fitted.alone
        combined = v.is_voip | (score >= fitted.combined)
        out[family] = {
            "rules": gen.family_row(rows, full_pred, gen.flow_pred(v, n), labels),
            "model": gen.family_row(rows, full_pred, gen.flow_pred(_with(v, alone), n), labels),
            "rules_or_model": gen.family_row(
                rows, full_pred, gen.flow_pred(_with(v, combined), n), labels
            ),
            "thresholds": [fitted.alone, fitted.combined],
        }
    return out


def predict_cost(
    x: np.ndarray, model: Any, exported: Exported, rows: int = 5000
) -> dict[str, float]:
    """Microseconds per flow of the features and of ``predict_proba`` over batches of ``rows``."""
    batches = [b for _, b in exported.batches]
    reps = max(1, rows * 4 // max(len(x), 1))
    big = np.tile(x, (reps, 1))[: rows * 4]
    started = time.process_time()
    for i in range(0, len(big), rows):
        model.predict_proba(big[i : i + rows])
    predict_us = (time.process_time() - started) / len(big) * 1e6
    started = time.process_time()
    flows = 0
    for b in batches:
        flow_features(b)
        flows += len(b)
    feature_us = (time.process_time() - started) / max(flows, 1) * 1e6
    return {"predict_us_per_flow": predict_us, "features_us_per_flow": feature_us, "rows": rows}


def run(
    exported: Exported,
    verdicts: Verdicts,
    labels: ev.Labels,
    providers: ProviderRanges,
    captures: list[str],
) -> dict[str, Any]:
    """The whole experiment over one export run."""
    x = features(exported, verdicts)
    out: dict[str, Any] = {"features": list(FEATURES)}
    out["split_half"] = split_half(x, verdicts, labels, captures)
    out["leave_one_app_out"] = leave_one_app_out(exported, verdicts, labels, providers)
    matched = verdicts.label_idx >= 0
    model = _model().fit(x[matched], labels.is_voip[verdicts.label_idx[matched]])
    out["cost"] = predict_cost(x, model, exported)
    return out


def print_table(result: dict[str, Any]) -> None:
    """The learned component's figures beside rules-7's of the same run."""
    sh = result["split_half"]
    print(
        f"  learned component (gradient-boosted trees), thresholds from the tune half: "
        f"model alone {sh['threshold_alone']:.3f}, rules OR model {sh['threshold_combined']:.3f}"
    )
    print("    capture split, per record P/R/F1 (tune half: out-of-fold) | per labelled flow")
    for title in ("rules", "model", "rules_or_model"):
        for h in ("tune", "report"):
            pr, pf = sh[title][h]["per_record"], sh[title][h]["per_flow"]
            print(
                f"      {title:<15} {h:<6} {pr['precision']:.3f} {pr['recall']:.3f} "
                f"{pr['f1']:.3f} | {pf['precision']:.3f} {pf['recall']:.3f} {pf['f1']:.3f}"
            )
    print("    leave one app out, found/flows (whole run P per labelled flow):")
    print(f"      {'family':<9} {'rules':>16} {'model':>16} {'rules OR model':>16}")
    for fam, x in result["leave_one_app_out"].items():
        cells = []
        for title in ("rules", "model", "rules_or_model"):
            r = x[title]
            cells.append(f"{r['found_left_out']:>3}/{r['flows']:<3} ({r['precision_run']:.3f})")
        print(f"      {fam:<9} " + " ".join(f"{c:>16}" for c in cells))
    c = result["cost"]
    print(
        f"    cost on {c['rows']}-row batches: features {c['features_us_per_flow']:.2f} us/flow, "
        f"predict {c['predict_us_per_flow']:.2f} us/flow (CPU time)"
    )
