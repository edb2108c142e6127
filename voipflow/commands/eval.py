"""``voipflow eval``: measure VoIP classification on labelled captures, end to end.

Each capture goes through a real exporter and the project's own collector
decoder, exactly as ``docs/evaluation.md`` asks::

    capture --softflowd -r (-v 9|10, -s N, -b)--> UDP on 127.0.0.1
            --> collectors.codec.decoder.Decoder --> FlowBatch
            --> streams.classify.Classifier --> join with labels.csv

Scoring is :mod:`streams.evaluate`. Progress goes to stderr, the full report
to ``--json``, and the last line on stdout is
``precision=P recall=R f1=F flows=N`` (per flow record, over all runs).
"""

from __future__ import annotations

import argparse
import json
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from collectors.codec.decoder import Decoder, DecoderConfig
from collectors.codec.templates import TemplateCache
from schemas.flowbatch import FlowBatch, text_to_addr16
from streams import evaluate as ev
from streams.classify import CLASSIFIER_VERSION, Classifier
from streams.providers import load_providers
from voipflow.settings import Settings

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")


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


def export_capture(
    softflowd: str, capture: Path, version: int, sampling: int, biflow: bool, timeout_s: float = 120
) -> list[tuple[bytes, int]]:
    """Run softflowd over one capture and return the export datagrams it sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # "-c none": softflowd 1.1.0 given a control socket path of 13+ characters
    # blocks in accept() instead of reading the capture; none is needed here.
    cmd = [softflowd, "-r", str(capture), "-n", f"127.0.0.1:{port}", "-d", "-c", "none"]
    cmd += ["-v", str(version)]
    if sampling > 1:
        cmd += ["-s", str(sampling)]
    if biflow:
        cmd += ["-b"]
    got: list[tuple[bytes, int]] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            done = proc.poll() is not None
            ready, _, _ = select.select([sock], [], [], 0.2 if done else 0.05)
            if ready:
                data = sock.recv(65535)
                got.append((data, int(time.time() * 1000)))
                continue
            if done:
                break  # exited and the socket stayed quiet for 0.2 s
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"softflowd did not finish {capture.name} in {timeout_s} s")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        sock.close()
    return got


def decode_capture(datagrams: list[tuple[bytes, int]]) -> FlowBatch:
    """The project's collector decoder over one capture's export (fresh templates)."""
    exporter = text_to_addr16("127.0.0.1")
    decoder = Decoder(TemplateCache(), DecoderConfig())
    result = decoder.decode([(payload, exporter, ms) for payload, ms in datagrams])
    return result.batch


def _captures(folder: Path, only: list[str] | None) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in CAPTURE_SUFFIXES)
    if only:
        files = [p for p in files if p.name in set(only)]
    return files


def run_one(
    args: argparse.Namespace, captures: list[Path], labels: ev.Labels, version: int
) -> dict[str, Any]:
    classifier = Classifier(load_providers())
    names: list[str] = []
    keys: list[tuple[Any, ...]] = []
    is_voip: list[np.ndarray] = []
    apps: list[np.ndarray] = []
    failures: dict[str, str] = {}
    records = 0
    started = time.monotonic()
    for i, cap in enumerate(captures, 1):
        try:
            datagrams = export_capture(
                args.softflowd, cap, version, args.sampling, args.biflow and version == 10
            )
            batch = decode_capture(datagrams)
        except (OSError, TimeoutError) as exc:
            failures[cap.name] = str(exc)
            print(f"[{i}/{len(captures)}] {cap.name}: FAILED {exc}", file=sys.stderr)
            continue
        classifier.reset_context()  # captures are unrelated networks
        result = classifier.classify(batch)
        n = len(batch)
        records += n
        names += [cap.name] * n
        keys += ev.record_keys(
            [cap.name] * n,
            batch["protocol"],
            batch["src_addr"],
            batch["src_port"],
            batch["dst_addr"],
            batch["dst_port"],
        )
        is_voip.append(result.is_voip)
        apps.append(result.app_names())
        rate = records / max(time.monotonic() - started, 1e-9)
        print(
            f"[{i}/{len(captures)}] v{version} {cap.name}: {len(datagrams)} datagrams, "
            f"{n} records, {int(np.count_nonzero(result.is_voip))} VoIP ({rate:.0f} records/s)",
            file=sys.stderr,
        )
    voip = np.concatenate(is_voip) if is_voip else np.zeros(0, bool)
    app = np.concatenate(apps) if apps else np.zeros(0, object)
    label_idx = ev.join(keys, labels)
    report = ev.score(label_idx, voip, app, labels)
    report["per_capture"] = ev.per_capture(names, label_idx, voip, labels)
    report["failed_captures"] = failures
    if args.sampling > 1:
        report["sampling_ceiling"] = ev.sampling_ceiling(labels, args.sampling)
    report["run"] = {
        "version": version,
        "sampling": args.sampling,
        "biflow": bool(args.biflow and version == 10),
        "captures": len(captures),
        "seconds": round(time.monotonic() - started, 1),
    }
    report["_pooled"] = (label_idx, voip, app)
    return report


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
    captures = _captures(args.pcaps, args.only)
    if not captures:
        print(f"voipflow eval: no captures in {args.pcaps}", file=sys.stderr)
        return 2
    versions = args.version or ([10] if args.biflow else [9])
    runs = [run_one(args, captures, labels, v) for v in versions]
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
            f"per record P={pr['precision']:.3f} R={pr['recall']:.3f} F1={pr['f1']:.3f} "
            f"({pr['records']} records); per labelled flow P={pf['precision']:.3f} "
            f"R={pf['recall']:.3f} F1={pf['f1']:.3f}, unmatched {pf['unmatched_share']:.1%}; "
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(ev.summary_line(overall))
    return 0
