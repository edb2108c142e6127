"""Flow records and a classifier run that the classification tests share.

``both`` builds a conversation as its two unidirectional records, ``voice``
the statistics of a voice stream, and ``run`` classifies rows as one batch
with the shipped provider ranges.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from voipflow.schemas import flowbatch as fb
from voipflow.streams.classify import Classifier
from voipflow.streams.providers import load_providers

T0 = 1_700_000_000_000
CLIENT = "192.168.1.10"


def flow(src: str, sport: int, dst: str, dport: int, **kw: Any) -> dict[str, Any]:
    row = {
        "src_addr": fb.text_to_addr16(src),
        "dst_addr": fb.text_to_addr16(dst),
        "src_port": sport,
        "dst_port": dport,
        "protocol": 17,
        "packets": 1,
        "bytes": 100,
        "flow_start_ms": T0,
        "flow_end_ms": T0 + 100,
        "sampling_rate": 1,
        "l7_proto": 0,
        "tos": 0,
    }
    row.update(kw)
    return row


def both(src: str, sport: int, dst: str, dport: int, **kw: Any) -> list[dict[str, Any]]:
    """A conversation as two unidirectional records."""
    return [flow(src, sport, dst, dport, **kw), flow(dst, dport, src, sport, **kw)]


def batch(rows: list[dict[str, Any]], names: list[str] | None = None) -> fb.FlowBatch:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["src_addr"] = np.array(cols["src_addr"], dtype="S16")
    cols["dst_addr"] = np.array(cols["dst_addr"], dtype="S16")
    if names is not None:
        cols["application_name"] = pa.array(names)
    return fb.make_batch(cols)


def voice(**kw: Any) -> dict[str, Any]:
    # 20 s of 50 packets/s of 160-byte voice packets
    base = {"packets": 1000, "bytes": 160_000, "flow_end_ms": T0 + 20_000}
    base.update(kw)
    return base


CLF = Classifier(load_providers(), ice_memory=False)


def run(rows: list[dict[str, Any]], clf: Classifier = CLF, **kw: Any) -> Any:
    return clf.classify(batch(rows, **kw))
