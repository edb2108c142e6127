"""What the learned component would cost the worker per flow, beside the classifier.

    python -m benchmarks.learned_cost [--corpus ../shared/corpus/ndpi] [--cache .cache/eval]

Trains the trees of ``voipflow/evaluation/learned.py`` on the whole corpus
(the fit is not what is timed), then, over the worker benchmark's synthetic
5,000-flow batches, times per batch in one process: ``Classifier.classify``,
the model's features and ``predict_proba``. Prints the medians in CPU
microseconds per flow (the first of three rounds is warm-up). scikit-learn
predicts with OpenMP threads: set ``OMP_NUM_THREADS=1`` for one core's cost.
Needs the ``learn`` extra and softflowd (or a filled ``--cache``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

import numpy as np

from benchmarks.worker_bench import make_messages
from voipflow.evaluation import learned
from voipflow.evaluation.captures import classify_all, export_all, find_captures, join_labels
from voipflow.schemas import flowbatch as fb
from voipflow.streams import evaluate as ev
from voipflow.streams.classify import Classifier
from voipflow.streams.providers import load_providers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("../shared/corpus/ndpi"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/eval"))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--flows", type=int, default=5000)
    args = parser.parse_args()
    labels = ev.load_labels(args.corpus / "labels.csv")
    with contextlib.redirect_stderr(io.StringIO()):
        exported = export_all(find_captures(args.corpus / "pcap"), 9, cache=args.cache)
    names, idx = join_labels(exported, labels)
    verdicts = classify_all(exported, Classifier(load_providers()), names, idx)
    x = learned.features(exported, verdicts)
    matched = idx >= 0
    model = learned._model().fit(x[matched], labels.is_voip[idx[matched]])

    batches = [fb.decode(m) for m in make_messages(args.batches, args.flows)]
    clf = Classifier(load_providers())
    took: dict[str, list[float]] = {"classify": [], "features": [], "predict": []}
    for rnd in range(3):
        for b in batches:
            t0 = time.process_time()
            r = clf.classify(b)
            t1 = time.process_time()
            xb = np.hstack(
                [learned.flow_features(b), learned.rule_features(r.evidence, r.confidence)]
            )
            t2 = time.process_time()
            model.predict_proba(xb)
            t3 = time.process_time()
            if rnd:
                took["classify"].append(t1 - t0)
                took["features"].append(t2 - t1)
                took["predict"].append(t3 - t2)
    for part, seconds in took.items():
        per_flow = float(np.median(seconds)) / args.flows * 1e6
        print(f"{part:<9} median {per_flow:.2f} us per flow ({args.flows}-flow batches)")


if __name__ == "__main__":
    main()
