"""The simulator's traffic through the classifier, in process: per-app recall and precision.

Measuring code only; the model and scoring are
:mod:`voipflow.evaluation.simclassify`. Run it::

    python -m benchmarks.sim_classify [--rate 1000] [--seconds 300] [--sampling 1] [--seed 1]
"""

from __future__ import annotations

import argparse

from voipflow.evaluation.simclassify import make_model, score_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    p.add_argument("--rate", type=float, default=1000.0, help="flow records per second")
    p.add_argument("--seconds", type=float, default=300.0, help="simulated seconds")
    p.add_argument("--sampling", type=int, default=1, help="1:N packet sampling")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    model = make_model(rate=args.rate, sampling=args.sampling, seed=args.seed)
    score = score_model(model, args.seconds)
    print(
        f"simulator {args.seconds:.0f} s at {args.rate:.0f} records/s, 1:{args.sampling}: "
        f"precision={score.precision:.3f} recall={score.recall:.3f} "
        f"byte precision={score.byte_precision:.4f} byte recall={score.byte_recall:.4f}"
    )
    for a in score.apps.values():
        what = "recall" if a.is_voip else "called VoIP"
        named = ", ".join(f"{k}:{v}" for k, v in sorted(a.named.items(), key=lambda kv: -kv[1]))
        print(
            f"  {a.app:<9} {a.records:>7} records  {what} {a.record_share:.3f} by record, "
            f"{a.byte_share:.4f} by byte  {named}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
