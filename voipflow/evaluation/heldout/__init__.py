"""Held-out captures for the VoIP classifier, labelled by construction.

The classifier was developed on the nDPI corpus; these captures were not used
to write its rules (the synthetic scenarios' parameters come from protocol
and vendor documents, and the seed used for the reported figures is not the
one looked at while developing). Two kinds:

* real SIP calls with RTP media made by sipp in network namespaces and
  captured by dumpcap (:mod:`voipflow.evaluation.heldout.sipcalls`);
* synthetic captures written by :mod:`voipflow.collectors.pcapfile` from
  :mod:`voipflow.evaluation.heldout.scenarios`: calls of several apps, and the traffic
  that looks like calls (games, tunnels, QUIC video, DNS/NTP, IoT, non-call
  traffic to VoIP providers).

:func:`build` writes ``DIR/pcap/*.pcap`` and ``DIR/labels.csv`` (the corpus's
columns plus ``app``), ready for ``voipflow eval --pcaps DIR/pcap --labels
DIR/labels.csv``. ``python -m voipflow.evaluation.heldout --help`` builds, evaluates
and compares with ndpiReader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voipflow.collectors.pcapfile import write_packets
from voipflow.evaluation.heldout.scenarios import ADDED_SCENARIOS, SCENARIOS
from voipflow.evaluation.heldout.traffic import LABEL_HEADER, Addresses, Capture
from voipflow.streams.providers import load_providers

#: The seed of the reported held-out figures (development used others).
REPORT_SEED = 20250301
T0 = 1_740_787_200.0  # 2025-03-01 00:00 UTC


def build_synthetic(out: Path, seed: int = REPORT_SEED) -> list[str]:
    """Write the synthetic captures into ``out/pcap``; returns their label rows."""
    (out / "pcap").mkdir(parents=True, exist_ok=True)
    providers = load_providers()
    rows: list[str] = []
    for i, (name, make) in enumerate([*sorted(SCENARIOS.items()), *ADDED_SCENARIOS.items()]):
        rng = np.random.default_rng([seed, i])
        cap = Capture(name, rng, T0 + 3600 * i)
        make(cap, Addresses(rng, providers))
        write_packets(out / "pcap" / name, cap.packets())
        rows += cap.label_rows()
    return rows


def build_sipp(out: Path) -> list[str]:
    """Record the sipp calls into ``out/pcap/sipp_calls.pcap``; returns its label rows."""
    from voipflow.evaluation.heldout import sipcalls

    (out / "pcap").mkdir(parents=True, exist_ok=True)
    rows = sipcalls.record(out / "pcap" / "sipp_calls.pcap", out / "sipp")
    return [",".join(r) for r in rows]


def build(out: Path, seed: int = REPORT_SEED, sipp: bool = True) -> Path:
    """Both kinds of captures and one ``labels.csv``; returns the labels path."""
    rows = build_synthetic(out, seed)
    if sipp:
        rows += build_sipp(out)
    labels = out / "labels.csv"
    labels.write_text("\n".join([LABEL_HEADER, *rows]) + "\n", encoding="utf-8")
    return labels
