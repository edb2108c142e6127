"""An independent opinion on the held-out captures: nDPI's ``ndpiReader``.

ndpiReader (Debian ``libndpi-bin``) classifies each capture's flows by
payload; :func:`opinions` runs it with ``-C`` (one CSV line per flow) and
:func:`compare` sets its verdict (VoIP or not, by protocol name) beside the
construction label and the classifier's verdict, so disagreements show where
the labels, nDPI or the classifier see a flow differently.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from voipflow.streams import evaluate as ev

#: nDPI protocol names (either part of "MASTER.APP") that are calls or call media.
VOIP_PROTOCOLS = {
    "RTP", "RTCP", "SRTP", "SIP", "H323", "IAX", "MGCP", "CiscoSkinny", "Megaco",
    "Skype_TeamsCall", "SkypeCall", "WhatsAppCall", "GoogleCall", "SignalVoip",
    "FacebookVoip", "ViberVoip", "TelegramVoip", "TeamSpeak", "Mumble", "Zoom",
    "Discord", "Webex", "FaceTime", "Truphone", "IMO", "KakaoTalk_Voice",
}  # fmt: skip


#: Apps whose STUN/DTLS/SRTP flows are calls (nDPI 4.2 names a WhatsApp call's
#: STUN "STUN.WhatsApp", later versions "STUN.WhatsAppCall").
CALLING_APPS = {
    "WhatsApp", "GoogleHangoutDuo", "HangoutDuo", "GoogleCall", "Skype", "Skype_Teams",
    "Teams", "Zoom", "Signal", "Facebook", "Messenger", "Discord", "Viber", "Webex",
}  # fmt: skip
MEDIA_MASTERS = {"STUN", "DTLS", "SRTP", "RTP"}


def is_voip_protocol(name: str) -> bool:
    parts = name.split(".")
    if any(part in VOIP_PROTOCOLS for part in parts):
        return True
    return len(parts) == 2 and parts[0] in MEDIA_MASTERS and parts[1] in CALLING_APPS


def opinions(pcap_dir: Path, ndpi_reader: str = "ndpiReader") -> dict[tuple[Any, ...], str]:
    """nDPI's protocol per flow key of every capture.

    Keys as :func:`voipflow.streams.evaluate.flow_key` makes them.
    """
    if shutil.which(ndpi_reader) is None:
        raise FileNotFoundError(f"{ndpi_reader} not found (apt-get install libndpi-bin)")
    out: dict[tuple[Any, ...], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pcap in sorted(pcap_dir.glob("*.pcap")):
            csv_path = Path(tmp) / f"{pcap.name}.csv"
            subprocess.run(
                [ndpi_reader, "-i", str(pcap), "-C", str(csv_path), "-q"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=600,
                check=False,
            )
            if not csv_path.exists():
                continue
            with csv_path.open(newline="") as f:
                rows = csv.reader(f)
                header = [h.lstrip("#") for h in next(rows, [])]
                for row in rows:
                    r = dict(zip(header, row, strict=False))
                    try:
                        key = ev.flow_key(
                            pcap.name, int(r["protocol"]), ev.norm_addr(r["src_ip"]),
                            int(r["src_port"]), ev.norm_addr(r["dst_ip"]), int(r["dst_port"]),
                        )  # fmt: skip
                    except (KeyError, ValueError):
                        continue
                    out[key] = r.get("ndpi_proto", "")
    return out


def compare(
    labels: ev.Labels, ndpi: dict[tuple[Any, ...], str], predicted: dict[tuple[Any, ...], bool]
) -> dict[str, Any]:
    """Agreement of nDPI with the construction labels and with the classifier, per flow."""
    agree_label = agree_clf = seen = 0
    vs_label: Counter[str] = Counter()
    vs_clf: Counter[str] = Counter()
    for i, key in enumerate(labels.key):
        # ndpiReader's CSV leaves out flows it could not classify: Unknown.
        proto = ndpi.get(key)
        if proto is None:
            proto = "Unknown (not listed)"
        else:
            seen += 1
        nd = is_voip_protocol(proto)
        truth = bool(labels.is_voip[i])
        clf = predicted.get(key)
        agree_label += nd == truth
        if nd != truth:
            vs_label[f"{labels.ndpi_proto[i]} (label {int(truth)}) nDPI {proto}"] += 1
        if clf is not None:
            agree_clf += nd == clf
            if nd != clf:
                vs_clf[f"{labels.ndpi_proto[i]} (classifier {int(clf)}) nDPI {proto}"] += 1
    return {
        "flows": len(labels),
        "flows_ndpi_listed": seen,
        "ndpi_agrees_with_label": agree_label,
        "ndpi_agrees_with_classifier": agree_clf,
        "ndpi_vs_label": dict(vs_label.most_common()),
        "ndpi_vs_classifier": dict(vs_clf.most_common()),
    }
