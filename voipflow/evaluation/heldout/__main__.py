"""Build the held-out captures, measure the classifier on them, compare with nDPI.

Usage::

    python -m voipflow.evaluation.heldout build DIR [--seed N] [--no-sipp]
    python -m voipflow.evaluation.heldout eval DIR [--json-dir OUT]
    python -m voipflow.evaluation.heldout ndpi DIR

``eval`` runs ``voipflow eval`` (softflowd -> collector decoder -> classifier)
over ``DIR/pcap`` with ``DIR/labels.csv`` four ways: NetFlow v9, IPFIX,
bidirectional IPFIX, and v9 with 1:10 packet sampling, and prints one line
each (per record, per labelled flow, per observed flow). ``ndpi`` runs
ndpiReader over the captures and reports where nDPI's verdict differs from
the construction labels and from the classifier.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from voipflow.evaluation.heldout import REPORT_SEED, build

REPO = Path(__file__).resolve().parents[3]
CONFIGS: dict[str, list[str]] = {
    "v9": ["--version", "9"],
    "ipfix": ["--version", "10"],
    "biflow": ["--biflow"],
    "v9_sampled_1in10": ["--version", "9", "--sampling", "10"],
}


def run_eval(folder: Path, json_dir: Path) -> dict[str, dict[str, object]]:
    json_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, flags in CONFIGS.items():
        path = json_dir / f"{name}.json"
        subprocess.run(
            [sys.executable, "-m", "voipflow", "eval", "--pcaps", str(folder / "pcap"),
             "--labels", str(folder / "labels.csv"), "--json", str(path), *flags],
            cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        report = json.loads(path.read_text())
        out[name] = report["runs"][0]
        pr, pf, po = (report["runs"][0][k] for k in ("per_record", "per_flow", "per_flow_observed"))
        print(
            f"{name:<17} record P={pr['precision']:.3f} R={pr['recall']:.3f} F1={pr['f1']:.3f}"
            f" | labelled flow P={pf['precision']:.3f} R={pf['recall']:.3f} F1={pf['f1']:.3f}"
            f" | observed flow F1={po['f1']:.3f} ({po['observed_voip_share']:.0%} of VoIP seen)"
        )
        fp = report["runs"][0]["false_positive_kinds"]
        fn = report["runs"][0]["false_negative_kinds"]
        print(f"{'':<17} false positives {fp or '-'}; missed {fn or '-'}")
    return out


def run_ndpi(folder: Path) -> dict[str, object]:
    from voipflow.evaluation.captures import find_captures, run_one
    from voipflow.evaluation.heldout import ndpi
    from voipflow.streams import evaluate as ev

    labels = ev.load_labels(folder / "labels.csv")
    report = run_one(find_captures(folder / "pcap"), labels, 9)
    idx, voip, _ = report["_pooled"]
    flow_pred = np.zeros(len(labels), dtype=bool)
    m = idx >= 0
    np.logical_or.at(flow_pred, idx[m], voip[m])
    seen = np.zeros(len(labels), dtype=bool)
    seen[idx[m]] = True
    predicted = {k: bool(flow_pred[i]) for i, k in enumerate(labels.key) if seen[i]}
    result = ndpi.compare(labels, ndpi.opinions(folder / "pcap"), predicted)
    print(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m voipflow.evaluation.heldout", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write DIR/pcap/*.pcap and DIR/labels.csv")
    b.add_argument("dir", type=Path)
    b.add_argument("--seed", type=int, default=REPORT_SEED)
    b.add_argument("--no-sipp", action="store_true", help="synthetic captures only")
    e = sub.add_parser("eval", help="voipflow eval four ways over a built folder")
    e.add_argument("dir", type=Path)
    e.add_argument("--json-dir", type=Path, help="reports here (default DIR/reports)")
    n = sub.add_parser("ndpi", help="ndpiReader's verdicts against labels and classifier")
    n.add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        print(build(args.dir, args.seed, sipp=not args.no_sipp))
    elif args.cmd == "eval":
        run_eval(args.dir, args.json_dir or args.dir / "reports")
    else:
        run_ndpi(args.dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
