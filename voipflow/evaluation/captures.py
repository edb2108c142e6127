"""Labelled captures through a real exporter and the collector's decoder, classified and scored.

What ``voipflow eval`` and the held-out evaluation share::

    capture --softflowd -r (-v 9|10, -s N, -b)--> UDP on 127.0.0.1
            --> collectors.codec.decoder.Decoder --> FlowBatch
            --> streams.classify.Classifier --> join with labels.csv

:func:`find_captures` lists a folder's captures, :func:`run_one` measures one
export version over them (scoring is :mod:`streams.evaluate`). Progress goes
to stderr.
"""

from __future__ import annotations

import select
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
from streams.classify import Classifier
from streams.providers import load_providers

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")


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


def find_captures(folder: Path, only: list[str] | None = None) -> list[Path]:
    """The capture files of ``folder`` (by suffix), sorted; only those named when ``only``."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in CAPTURE_SUFFIXES)
    if only:
        files = [p for p in files if p.name in set(only)]
    return files


def run_one(
    captures: list[Path],
    labels: ev.Labels,
    version: int,
    *,
    softflowd: str = "softflowd",
    sampling: int = 1,
    biflow: bool = False,
) -> dict[str, Any]:
    """One export version over all captures, scored against ``labels``.

    ``report["_pooled"]`` holds (label index, is_voip, app) per record for
    pooling several runs; the caller removes it before writing the report.
    """
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
            datagrams = export_capture(softflowd, cap, version, sampling, biflow and version == 10)
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
    if sampling > 1:
        report["sampling_ceiling"] = ev.sampling_ceiling(labels, sampling)
    report["run"] = {
        "version": version,
        "sampling": sampling,
        "biflow": bool(biflow and version == 10),
        "captures": len(captures),
        "seconds": round(time.monotonic() - started, 1),
    }
    report["_pooled"] = (label_idx, voip, app)
    return report
