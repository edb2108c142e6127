"""``voipflow eval``: measure VoIP classification on labelled captures, end to end.

Each capture goes through a real exporter and the project's own collector
decoder, exactly as ``docs/evaluation.md`` asks (the pipeline is
:mod:`voipflow.evaluation.captures`, scoring is :mod:`voipflow.streams.evaluate`).
Progress goes to stderr, the full report to ``--json``, and the last line on
stdout is ``precision=P recall=R f1=F flows=N`` (the app verdict per flow
record, over all runs). The role verdict is scored beside it, media level and
per role (:mod:`voipflow.evaluation.roles`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from voipflow.evaluation import generalise as gen
from voipflow.evaluation.captures import (
    classify_all,
    export_all,
    find_captures,
    join_labels,
    score_run,
)
from voipflow.settings import Settings
from voipflow.streams import evaluate as ev
from voipflow.streams.classify import CLASSIFIER_VERSION, Classifier
from voipflow.streams.providers import load_providers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pcaps", type=Path, required=True, help="folder of captures")
    parser.add_argument("--labels", type=Path, required=True, help="labels.csv of the captures")
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument(
        "--sampling", type=int, default=1, help="softflowd -s N: sample 1 packet in N"
    )
    parser.add_argument(
        "--biflow", action="store_true", help="bidirectional IPFIX (softflowd -v 10 -b)"
    )
    parser.add_argument(
        "--version",
        type=int,
        choices=(9, 10),
        action="append",
        help="export version; repeat for both (default: 9, or 10 with --biflow)",
    )
    parser.add_argument(
        "--only", metavar="NAME", action="append", help="only these capture file names"
    )
    parser.add_argument(
        "--softflowd", default="softflowd", help="softflowd binary (default: %(default)s)"
    )
    parser.add_argument(
        "--leave-one-app-out",
        action="store_true",
        help="for each app family, score its flows with its own ranges, ports and ids off",
    )
    parser.add_argument(
        "--split",
        choices=("half",),
        help="half: report the tune half and the report half of the captures apart "
        "(split by a hash of the capture's name)",
    )
    parser.add_argument(
        "--learned",
        action="store_true",
        help="also train and score gradient-boosted trees beside the rules (capture split "
        "and leave one app out; needs the 'learn' extra: scikit-learn)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep softflowd's export datagrams here and reuse them on the next run",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if shutil.which(args.softflowd) is None:
        print(f"voipflow eval: {args.softflowd} not found (apt install softflowd)", file=sys.stderr)
        return 2
    if not args.pcaps.is_dir():
        print(f"voipflow eval: --pcaps {args.pcaps} is not a folder", file=sys.stderr)
        return 2
    try:
        labels = ev.load_labels(args.labels)
    except ev.LabelError as exc:
        print(f"voipflow eval: --labels: {exc}", file=sys.stderr)
        return 2
    captures = find_captures(args.pcaps, args.only)
    if not captures:
        print(f"voipflow eval: no captures in {args.pcaps}", file=sys.stderr)
        return 2
    if args.learned and importlib.util.find_spec("sklearn") is None:
        print(
            "voipflow eval: --learned needs scikit-learn (pip install -e '.[learn]')",
            file=sys.stderr,
        )
        return 2
    versions = args.version or ([10] if args.biflow else [9])
    providers = load_providers()
    runs = []
    for v in versions:
        exported = export_all(
            captures,
            v,
            softflowd=args.softflowd,
            sampling=args.sampling,
            biflow=args.biflow,
            cache=args.cache,
        )
        names, label_idx = join_labels(exported, labels)
        verdicts = classify_all(exported, Classifier(providers), names, label_idx)
        runs.append(
            score_run(exported, verdicts, labels, v, args.sampling, args.biflow, len(captures))
        )
        matched = label_idx >= 0
        extra: dict[str, Any] = {
            "calibration": gen.calibration(
                verdicts.confidence[matched], labels.is_voip[label_idx[matched]]
            )
        }
        if args.split == "half":
            extra["split_half"] = gen.halves(verdicts, labels, [c.name for c in captures])
        if args.leave_one_app_out:
            extra["leave_one_app_out"] = gen.leave_one_app_out(
                exported, verdicts, labels, providers
            )
        if args.learned:
            from voipflow.evaluation import learned

            extra["learned"] = learned.run(
                exported, verdicts, labels, providers, [c.name for c in captures]
            )
        runs[-1].update(extra)
    pooled = [r.pop("_pooled") for r in runs]
    if len(runs) == 1:
        overall = {k: runs[0][k] for k in ("per_record", "per_flow", "per_flow_observed")}
    else:
        # Each run scores every labelled flow once; pooled records of all runs.
        idx = np.concatenate([p[0] for p in pooled])
        voip = np.concatenate([p[1] for p in pooled])
        app = np.concatenate([p[2] for p in pooled])
        overall = {"per_record": ev.score(idx, voip, app, labels)["per_record"]}
    report = {
        "classifier_version": CLASSIFIER_VERSION,
        "pcaps": str(args.pcaps),
        "labels": str(args.labels),
        "labelled_flows": len(labels),
        "overall": overall,
        "runs": runs,
    }
    for r in runs:
        pr, pf, po = r["per_record"], r["per_flow"], r["per_flow_observed"]
        print(
            f"v{r['run']['version']} sampling={args.sampling} biflow={r['run']['biflow']}: "
            f"app verdict per record {_prf(pr)} ({pr['records']} records); "
            f"per labelled flow {_prf(pf)}, unmatched {pf['unmatched_share']:.1%}; "
            f"per observed flow P={po['precision']:.3f} R={po['recall']:.3f} "
            f"F1={po['f1']:.3f} ({po['flows']} flows with a record, "
            f"{po['observed_voip_share']:.1%} of VoIP flows)"
        )
        if "sampling_ceiling" in r:
            c = r["sampling_ceiling"]
            print(
                f"  1:{args.sampling} sampling can be expected to leave a record for "
                f"{c['expected_observed_voip_share']:.1%} of VoIP flows "
                f"({c['expected_observed_share']:.1%} of all): the per labelled flow ceiling"
            )
        for app_name, a in r["per_app"].items():
            print(f"  {app_name:<11} {a['detected']:>3}/{a['flows']:<3} recall={a['recall']:.2f}")
        print_roles(r["roles"])
        print_generalisation(r)
        if "learned" in r:
            from voipflow.evaluation import learned

            learned.print_table(r["learned"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(ev.summary_line(overall))
    return 0


def _prf(x: dict[str, Any]) -> str:
    return f"P={x['precision']:.3f} R={x['recall']:.3f} F1={x['f1']:.3f}"


def print_roles(roles: dict[str, Any]) -> None:
    """Media-level figures and the per-role table of one run (evaluation/roles.py)."""
    mr, mf = roles["media_per_record"], roles["media_per_flow"]
    print(
        f"  media level (role media or relay; truth where the labels state a role): "
        f"per record {_prf(mr)} ({mr['decided']} records, {mr['media_truth']} media); "
        f"per observed flow {_prf(mf)} ({mf['decided']} flows, {mf['media_truth']} media)"
    )
    print("  roles (true role: records, right, what they were called):")
    for truth, x in roles["per_role"].items():
        right = "-" if x["right"] is None else str(x["right"])
        called = ", ".join(f"{k} {v}" for k, v in x["predicted"].items())
        print(f"    {truth:<12} {x['records']:>6} {right:>6}  {called}")


def print_generalisation(run: dict[str, Any]) -> None:
    """The calibration, capture-split and leave-one-app-out tables of one run."""
    cal = run["calibration"]
    print(
        f"  calibration (confidence bin: records, mean confidence, share VoIP), "
        f"ECE={cal['ece']:.3f}"
    )
    for b in cal["bins"]:
        print(f"    {b['bin']}: {b['records']:>6} {b['mean_confidence']:.2f} {b['share_voip']:.3f}")
    if "split_half" in run:
        print("  capture split (per record P/R/F1; per labelled flow P/R/F1):")
        for title, h in run["split_half"].items():
            pr, pf = h["per_record"], h["per_flow"]
            print(
                f"    {title:<6} {h['captures']:>3} captures {h['voip_flows']:>3}/"
                f"{h['labelled_flows']:<5} VoIP flows: {pr['precision']:.3f} "
                f"{pr['recall']:.3f} {pr['f1']:.3f}; {pf['precision']:.3f} "
                f"{pf['recall']:.3f} {pf['f1']:.3f}; media per record "
                f"{_prf(h['roles']['media_per_record'])}"
            )
    if "leave_one_app_out" in run:
        print(
            "  leave one app out (family: flows, found with all knowledge, found with its "
            "own off, recall; whole run P/F1 per labelled flow):"
        )
        for fam, x in run["leave_one_app_out"].items():
            print(
                f"    {fam:<9} {x['flows']:>3} {x['found_all']:>3} {x['found_left_out']:>3} "
                f"{x['recall_left_out']:.2f}  P={x['precision_run']:.3f} F1={x['f1_run']:.3f}"
            )
