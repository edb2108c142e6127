"""Measure the classifier against labelled captures (the pure part of ``voipflow eval``).

The capture -> exporter -> collector part lives in the command
(``voipflow/commands/eval.py``); this module takes the flow records it got,
the classifier's verdicts and the corpus's ``labels.csv`` and computes:

* per flow record: precision, recall, F1 of ``is_voip`` over the records that
  matched a labelled flow (records that match none are counted apart);
* per labelled flow: a flow is predicted VoIP when any of its records is; a
  labelled flow that no record matched counts as predicted not-VoIP (so it
  costs recall) and is reported as ``unmatched_share``;
* per labelled flow that got at least one record (``per_flow_observed``):
  what the classifier could decide at all. With 1:N packet sampling a flow of
  fewer than N packets often gets no record, so the plain per-flow recall is
  capped by ``observed_voip_share``; this view separates that cap from the
  classifier's own errors;
* per app: recall of each main app's labelled flows and a confusion table
  (labelled app x predicted app) over labelled flows;
* false positives and missed (observed) VoIP flows by the label's protocol
  column, so an error shows what the flow really was.

Labels may carry an ``app`` column (the held-out captures, labelled by
construction) naming the project's app; otherwise nDPI's ``ndpi_app`` maps.
A ``role`` column (held-out captures too) names the flow's role in the call.

Records and labels join by capture and 5-tuple in either direction (labels are
bidirectional, records usually not). Ports are ignored for protocols other
than TCP, UDP and SCTP, whose "ports" exporters fill with ICMP type/code.

Errors::

    LabelError      a labels file that cannot be read (names the line)
"""

from __future__ import annotations

import csv
import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voipflow.schemas.flowbatch import addr_to_text

L4_NUMBERS = {
    "ICMP": 1, "IGMP": 2, "TCP": 6, "UDP": 17, "GRE": 47, "ESP": 50, "AH": 51,
    "ICMPV6": 58, "OSPF": 89, "PIM": 103, "VRRP": 112, "PGM": 113, "SCTP": 132,
}  # fmt: skip
PORTED = (6, 17, 132)

#: nDPI application names (labels' ``ndpi_app``) -> the project's app names,
#: for the main apps of the evaluation; everything else is ``other``.
NDPI_APPS: dict[str, str] = {
    "Skype_TeamsCall": "teams",
    "Skype_Teams": "teams",
    "SkypeCall": "teams",
    "Teams": "teams",
    "WhatsAppCall": "whatsapp",
    "WhatsApp": "whatsapp",
    "SIP": "sip",
    "RTP": "rtp",
    "RTCP": "rtp",
    "SRTP": "rtp",
    "Zoom": "zoom",
    "SignalVoip": "signal",
    "Signal": "signal",
    "Telegram": "telegram",
    "TelegramVoip": "telegram",
    "GoogleCall": "meet",
    "GoogleMeet": "meet",
    "HangoutDuo": "meet",
}
MAIN_APPS = ("teams", "whatsapp", "sip", "rtp", "zoom", "signal", "telegram", "meet")


class LabelError(ValueError):
    """The labels file cannot be read."""


@dataclass(slots=True)
class Labels:
    """Labelled flows: parallel lists, one entry per ``labels.csv`` row."""

    pcap: list[str] = field(default_factory=list)
    key: list[tuple[Any, ...]] = field(default_factory=list)
    is_voip: np.ndarray = field(default_factory=lambda: np.zeros(0, np.bool_))
    app: list[str] = field(default_factory=list)
    ndpi_proto: list[str] = field(default_factory=list)
    #: packets of the flow, both directions (0 where the labels do not say)
    packets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: the flow's role in the call where the labels name it (a ``role`` column:
    #: held-out captures, by construction), else ''
    role: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pcap)


def norm_addr(text: str) -> str:
    """Address text in one canonical form (IPv4-mapped IPv6 as IPv4)."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return text.strip()  # nDPI prints some fuzzed captures' addresses oddly
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def flow_key(pcap: str, proto: int, a: str, a_port: int, b: str, b_port: int) -> tuple[Any, ...]:
    """Direction-free key of a 5-tuple in one capture."""
    if proto not in PORTED:
        a_port = b_port = 0
    ends = sorted([(a, a_port), (b, b_port)])
    return (pcap, proto, ends[0][0], ends[0][1], ends[1][0], ends[1][1])


def load_labels(path: Path) -> Labels:
    """Read the corpus's ``labels.csv``."""
    labels = Labels()
    voip: list[bool] = []
    pkts: list[int] = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.DictReader(f), start=2):
                try:
                    l4 = row["l4"].strip()
                    proto = L4_NUMBERS.get(l4.upper()) or int(l4)
                    key = flow_key(
                        row["pcap"],
                        proto,
                        norm_addr(row["src_ip"]),
                        int(row["src_port"] or 0),
                        norm_addr(row["dst_ip"]),
                        int(row["dst_port"] or 0),
                    )
                except (KeyError, ValueError) as exc:
                    raise LabelError(f"{path}:{lineno}: {exc}") from exc
                labels.pcap.append(row["pcap"])
                labels.key.append(key)
                voip.append(row["is_voip"].strip() == "1")
                # An ``app`` column (held-out captures labelled by construction)
                # names the project's app directly; else nDPI's name is mapped.
                own = (row.get("app") or "").strip().lower()
                labels.app.append(own or NDPI_APPS.get(row.get("ndpi_app", "").strip(), "other"))
                labels.ndpi_proto.append(row.get("ndpi_proto", ""))
                labels.role.append((row.get("role") or "").strip().lower())
                try:
                    pkts.append(int(row.get("pkts_fwd") or 0) + int(row.get("pkts_rev") or 0))
                except ValueError:
                    pkts.append(0)
    except OSError as exc:
        raise LabelError(f"{path}: {exc}") from exc
    labels.packets = np.array(pkts, dtype=np.int64)
    labels.is_voip = np.array(voip, dtype=np.bool_)
    return labels


def record_keys(
    pcap: Iterable[str],
    protocol: np.ndarray,
    src_addr: np.ndarray,
    src_port: np.ndarray,
    dst_addr: np.ndarray,
    dst_port: np.ndarray,
) -> list[tuple[Any, ...]]:
    """Direction-free keys of flow records (Python per record: evaluation only)."""
    texts: dict[bytes, str] = {}

    def text(a: bytes) -> str:
        t = texts.get(a)
        if t is None:
            t = texts[a] = addr_to_text(a)
        return t

    return [
        flow_key(pc, int(p), text(s), int(sp), text(d), int(dp))
        for pc, p, s, sp, d, dp in zip(
            pcap,
            protocol.tolist(),
            src_addr.tolist(),
            src_port.tolist(),
            dst_addr.tolist(),
            dst_port.tolist(),
            strict=True,
        )
    ]


def join(keys: list[tuple[Any, ...]], labels: Labels) -> np.ndarray:
    """Index of the labelled flow each record belongs to, -1 for none."""
    index: dict[tuple[Any, ...], int] = {}
    for i, k in enumerate(labels.key):
        index.setdefault(k, i)
    return np.array([index.get(k, -1) for k in keys], dtype=np.int64)


def prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    """Precision, recall, F1 and the confusion counts of boolean predictions."""
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = int(np.count_nonzero(~pred & ~truth))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def score(
    label_idx: np.ndarray,
    is_voip: np.ndarray,
    app: list[str] | np.ndarray,
    labels: Labels,
) -> dict[str, Any]:
    """The evaluation report of one run: records joined to labels and verdicts."""
    is_voip = np.asarray(is_voip, dtype=np.bool_)
    app = np.asarray(app, dtype=object)
    matched = label_idx >= 0
    per_record = prf(is_voip[matched], labels.is_voip[label_idx[matched]])
    per_record["records"] = len(label_idx)
    per_record["records_unmatched"] = int(np.count_nonzero(~matched))

    n = len(labels)
    flow_pred = np.zeros(n, dtype=np.bool_)
    np.logical_or.at(flow_pred, label_idx[matched], is_voip[matched])
    flow_seen = np.zeros(n, dtype=np.bool_)
    flow_seen[label_idx[matched]] = True
    # The app a labelled flow got: that of its VoIP record with the most
    # packets would need packets here; the first VoIP record's app is enough.
    flow_app = np.full(n, "not_voip", dtype=object)
    for rec in np.flatnonzero(matched & is_voip)[::-1]:
        flow_app[label_idx[rec]] = app[rec]
    per_flow = prf(flow_pred, labels.is_voip)
    per_flow["flows"] = n
    per_flow["unmatched"] = int(np.count_nonzero(~flow_seen))
    per_flow["unmatched_share"] = float(np.count_nonzero(~flow_seen) / n) if n else 0.0
    per_flow["unmatched_voip"] = int(np.count_nonzero(~flow_seen & labels.is_voip))
    # Only the labelled flows that got at least one record: what the classifier
    # could decide at all. Under packet sampling most short flows get no record,
    # so the per-flow figure above is bounded by ``observed_voip_share``.
    per_flow_observed = prf(flow_pred[flow_seen], labels.is_voip[flow_seen])
    per_flow_observed["flows"] = int(np.count_nonzero(flow_seen))
    n_voip = int(np.count_nonzero(labels.is_voip))
    per_flow_observed["observed_voip_share"] = (
        float(np.count_nonzero(flow_seen & labels.is_voip) / n_voip) if n_voip else 0.0
    )

    truth_app = np.array(
        [a if v else "not_voip" for a, v in zip(labels.app, labels.is_voip, strict=True)],
        dtype=object,
    )
    truth_app[labels.is_voip & (truth_app == "other")] = "other_voip"
    per_app: dict[str, Any] = {}
    # The main apps, then any other app the labels name (held-out labels may).
    extra = sorted(set(truth_app.tolist()) - {*MAIN_APPS, "other_voip", "not_voip"})
    for name in (*MAIN_APPS, *extra, "other_voip"):
        rows = truth_app == name
        if not rows.any():
            continue
        per_app[name] = {
            "flows": int(np.count_nonzero(rows)),
            "detected": int(np.count_nonzero(flow_pred & rows)),
            "recall": float(np.count_nonzero(flow_pred & rows) / np.count_nonzero(rows)),
            "app_correct": int(np.count_nonzero(rows & (flow_app == name))),
            "unmatched": int(np.count_nonzero(rows & ~flow_seen)),
        }
    # False positives by the predicted app, so a noisy rule shows up by name;
    # errors by the label's protocol (``ndpi_proto``: what the flow really is).
    fp_apps = Counter(flow_app[flow_pred & ~labels.is_voip].tolist())
    kinds = np.asarray(labels.ndpi_proto, dtype=object)
    fp_kinds = Counter(kinds[flow_pred & ~labels.is_voip].tolist())
    fn_kinds = Counter(kinds[flow_seen & ~flow_pred & labels.is_voip].tolist())
    confusion: dict[str, dict[str, int]] = {}
    for t, p in zip(truth_app.tolist(), flow_app.tolist(), strict=True):
        if t == "not_voip" and p == "not_voip":
            continue
        confusion.setdefault(t, {}).setdefault(p, 0)
        confusion[t][p] += 1
    return {
        "per_record": per_record,
        "per_flow": per_flow,
        "per_flow_observed": per_flow_observed,
        "per_app": per_app,
        "false_positive_apps": dict(fp_apps.most_common()),
        "false_positive_kinds": dict(fp_kinds.most_common()),
        "false_negative_kinds": dict(fn_kinds.most_common()),
        "confusion": confusion,
    }


def sampling_ceiling(labels: Labels, sampling: int) -> dict[str, float]:
    """Share of labelled flows that 1-in-N packet sampling can be expected to see.

    A flow of ``k`` packets gets about ``k / N`` sampled packets, so at least
    one with probability ~``min(1, k / N)`` (periodic sampling with a random
    phase; random sampling gives ``1 - (1 - 1/N)**k``, a little lower). No
    classifier's per-labelled-flow recall can beat the VoIP share.
    """
    n = max(sampling, 1)
    p = np.minimum(1.0, labels.packets / n)
    voip = labels.is_voip
    return {
        "sampling": float(n),
        "expected_observed_share": float(p.mean()) if len(p) else 0.0,
        "expected_observed_voip_share": float(p[voip].mean()) if voip.any() else 0.0,
    }


def per_capture(
    pcaps: list[str], label_idx: np.ndarray, is_voip: np.ndarray, labels: Labels
) -> dict[str, dict[str, int]]:
    """Per capture: records, labelled flows, VoIP flows found / labelled, false positives."""
    out: dict[str, dict[str, int]] = {}
    pcap_arr = np.asarray(pcaps, dtype=object)
    for name in sorted(set(labels.pcap)):
        lab = np.array([p == name for p in labels.pcap])
        recs = pcap_arr == name
        m = recs & (label_idx >= 0)
        truth = labels.is_voip[label_idx[m]]
        out[name] = {
            "records": int(np.count_nonzero(recs)),
            "flows": int(np.count_nonzero(lab)),
            "voip_flows": int(np.count_nonzero(lab & labels.is_voip)),
            "tp_records": int(np.count_nonzero(is_voip[m] & truth)),
            "fp_records": int(np.count_nonzero(is_voip[m] & ~truth)),
            "fn_records": int(np.count_nonzero(~is_voip[m] & truth)),
        }
    return out


def summary_line(report: Mapping[str, Any]) -> str:
    """The last line ``voipflow eval`` prints (per flow record)."""
    r = report["per_record"]
    return (
        f"precision={r['precision']:.4f} recall={r['recall']:.4f} "
        f"f1={r['f1']:.4f} flows={r['records']}"
    )
