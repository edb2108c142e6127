"""Labelled captures through a real exporter and the collector's decoder, classified and scored.

What ``voipflow eval`` and the held-out evaluation share::

    capture --softflowd -r (-v 9|10, -s N, -b)--> UDP on 127.0.0.1
            --> collectors.codec.decoder.Decoder --> FlowBatch
            --> streams.classify.Classifier --> join with labels.csv

:func:`find_captures` lists a folder's captures, :func:`run_one` measures one
export version over them (scoring is :mod:`voipflow.streams.evaluate`). Progress goes
to stderr.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voipflow.collectors.codec.decoder import Decoder, DecoderConfig
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.evaluation.roles import score_roles
from voipflow.netutil import readable
from voipflow.schemas.flowbatch import FlowBatch, text_to_addr16
from voipflow.streams import evaluate as ev
from voipflow.streams.classify import Classifier
from voipflow.streams.providers import load_providers

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
#: A cached export datagram: payload length and receive time (ms), then the payload.
_FRAME = struct.Struct("<IQ")


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
            if readable(sock, 0.2 if done else 0.05):
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


@dataclass(slots=True)
class Exported:
    """The decoded flow records of every capture of one export run."""

    batches: list[tuple[str, FlowBatch]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    datagrams: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class Verdicts:
    """One classifier's verdicts over an :class:`Exported` run, joined to the labels."""

    names: list[str]
    label_idx: np.ndarray
    is_voip: np.ndarray
    app: np.ndarray
    confidence: np.ndarray
    #: role names per record ('' where not VoIP)
    role: np.ndarray
    #: evidence bits per record (``Classification.evidence``)
    evidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))


def _cache_file(cache: Path, capture: Path, version: int, sampling: int, biflow: bool) -> Path:
    return cache / f"v{version}-s{sampling}{'-b' if biflow else ''}" / f"{capture.name}.dgrams"


def _read_cached(path: Path) -> list[tuple[bytes, int]]:
    data = path.read_bytes()
    got: list[tuple[bytes, int]] = []
    at = 0
    while at < len(data):
        size, ms = _FRAME.unpack_from(data, at)
        at += _FRAME.size
        got.append((data[at : at + size], ms))
        at += size
    return got


def _write_cached(path: Path, datagrams: list[tuple[bytes, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for payload, ms in datagrams:
            f.write(_FRAME.pack(len(payload), ms))
            f.write(payload)
    tmp.replace(path)


def export_all(
    captures: list[Path],
    version: int,
    *,
    softflowd: str = "softflowd",
    sampling: int = 1,
    biflow: bool = False,
    cache: Path | None = None,
) -> Exported:
    """Every capture through softflowd and the collector's decoder, once.

    With ``cache``, softflowd's export datagrams are kept there per capture
    and export setting and read back on the next run: the records are the
    exporter's, only the exporter's run time is saved (a folder of a few MB;
    delete it when softflowd changes).
    """
    out = Exported()
    started = time.monotonic()
    biflow = biflow and version == 10
    for i, cap in enumerate(captures, 1):
        cached = _cache_file(cache, cap, version, sampling, biflow) if cache else None
        try:
            if cached is not None and cached.is_file():
                datagrams = _read_cached(cached)
            else:
                datagrams = export_capture(softflowd, cap, version, sampling, biflow)
                if cached is not None:
                    _write_cached(cached, datagrams)
            batch = decode_capture(datagrams)
        except (OSError, TimeoutError, struct.error) as exc:
            out.failures[cap.name] = str(exc)
            print(f"[{i}/{len(captures)}] {cap.name}: FAILED {exc}", file=sys.stderr)
            continue
        out.datagrams += len(datagrams)
        out.batches.append((cap.name, batch))
        print(
            f"[{i}/{len(captures)}] v{version} {cap.name}: {len(datagrams)} datagrams, "
            f"{len(batch)} records",
            file=sys.stderr,
        )
    out.seconds = round(time.monotonic() - started, 1)
    return out


def join_labels(exported: Exported, labels: ev.Labels) -> tuple[list[str], np.ndarray]:
    """Capture name and labelled flow index (-1 none) of every record, in run order."""
    names: list[str] = []
    keys: list[tuple[Any, ...]] = []
    for name, batch in exported.batches:
        n = len(batch)
        names += [name] * n
        keys += ev.record_keys(
            [name] * n,
            batch["protocol"],
            batch["src_addr"],
            batch["src_port"],
            batch["dst_addr"],
            batch["dst_port"],
        )
    return names, ev.join(keys, labels)


def classify_all(
    exported: Exported, classifier: Classifier, names: list[str], label_idx: np.ndarray
) -> Verdicts:
    """One classifier over every capture's records (context reset between captures)."""
    is_voip: list[np.ndarray] = []
    apps: list[np.ndarray] = []
    conf: list[np.ndarray] = []
    roles: list[np.ndarray] = []
    evidence: list[np.ndarray] = []
    for _, batch in exported.batches:
        classifier.reset_context()  # captures are unrelated networks
        result = classifier.classify(batch)
        is_voip.append(result.is_voip)
        apps.append(result.app_names())
        conf.append(result.confidence)
        roles.append(result.role_names())
        evidence.append(result.evidence)
    return Verdicts(
        names,
        label_idx,
        np.concatenate(is_voip) if is_voip else np.zeros(0, bool),
        np.concatenate(apps) if apps else np.zeros(0, object),
        np.concatenate(conf) if conf else np.zeros(0, np.float32),
        np.concatenate(roles) if roles else np.zeros(0, object),
        np.concatenate(evidence) if evidence else np.zeros(0, np.uint32),
    )


def score_run(
    exported: Exported,
    verdicts: Verdicts,
    labels: ev.Labels,
    version: int,
    sampling: int,
    biflow: bool,
    captures: int,
) -> dict[str, Any]:
    """The report of one export run (as :func:`run_one` gives it)."""
    v = verdicts
    report = ev.score(v.label_idx, v.is_voip, v.app, labels)
    report["roles"] = score_roles(v.label_idx, v.role, labels)
    report["per_capture"] = ev.per_capture(v.names, v.label_idx, v.is_voip, labels)
    report["failed_captures"] = exported.failures
    if sampling > 1:
        report["sampling_ceiling"] = ev.sampling_ceiling(labels, sampling)
    report["run"] = {
        "version": version,
        "sampling": sampling,
        "biflow": bool(biflow and version == 10),
        "captures": captures,
        "seconds": exported.seconds,
    }
    report["_pooled"] = (v.label_idx, v.is_voip, v.app)
    return report


def run_one(
    captures: list[Path],
    labels: ev.Labels,
    version: int,
    *,
    softflowd: str = "softflowd",
    sampling: int = 1,
    biflow: bool = False,
    cache: Path | None = None,
) -> dict[str, Any]:
    """One export version over all captures, scored against ``labels``.

    ``report["_pooled"]`` holds (label index, is_voip, app) per record for
    pooling several runs; the caller removes it before writing the report.
    """
    exported = export_all(
        captures, version, softflowd=softflowd, sampling=sampling, biflow=biflow, cache=cache
    )
    names, label_idx = join_labels(exported, labels)
    verdicts = classify_all(exported, Classifier(load_providers()), names, label_idx)
    return score_run(exported, verdicts, labels, version, sampling, biflow, len(captures))
