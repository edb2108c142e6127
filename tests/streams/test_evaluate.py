"""Scoring: joining records to bidirectional labels and the figures computed from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voipflow.schemas.flowbatch import text_to_addr16
from voipflow.streams import evaluate as ev

HEADER = (
    "pcap,l4,src_ip,src_port,dst_ip,dst_port,bidirectional,ndpi_proto,ndpi_app,ndpi_category,"
    "pkts_fwd,bytes_fwd,pkts_rev,bytes_rev,is_voip\n"
)
LABELS = (
    HEADER
    + """a.pcap,UDP,10.0.0.1,5000,192.0.2.1,3478,1,STUN.WhatsAppCall,WhatsAppCall,VoIP,1,1,1,1,1
a.pcap,TCP,10.0.0.1,5001,192.0.2.1,443,1,TLS,TLS,Web,1,1,1,1,0
a.pcap,ICMP,10.0.0.1,0,192.0.2.1,0,0,ICMP,ICMP,Network,1,1,0,0,0
b.pcap,UDP,2001:db8::1,6000,2001:db8::2,19302,1,STUN.GoogleCall,GoogleCall,VoIP,1,1,1,1,1
b.pcap,UDP,10.0.0.9,7000,192.0.2.9,7001,1,RTP,RTP,Media,1,1,1,1,1
"""
)


def test_join_either_direction_and_ignore_icmp_ports(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(LABELS)
    labels = ev.load_labels(path)
    assert len(labels) == 5 and labels.app[0] == "whatsapp" and labels.app[3] == "meet"
    a = lambda *t: np.array([text_to_addr16(x) for x in t], dtype="S16")  # noqa: E731
    keys = ev.record_keys(
        ["a.pcap", "a.pcap", "a.pcap", "b.pcap", "b.pcap", "a.pcap"],
        np.array([17, 17, 1, 17, 6, 17]),
        a("10.0.0.1", "192.0.2.1", "10.0.0.1", "2001:db8::2", "10.0.0.9", "10.0.0.1"),
        np.array([5000, 3478, 0, 19302, 7000, 9]),
        a("192.0.2.1", "10.0.0.1", "192.0.2.1", "2001:db8::1", "192.0.2.9", "192.0.2.1"),
        np.array([3478, 5000, 2048, 6000, 7001, 9]),
    )
    idx = ev.join(keys, labels)
    # The TCP record does not match the UDP RTP label; the last matches nothing.
    assert idx.tolist() == [0, 0, 2, 3, -1, -1]
    pred = np.array([True, False, False, True, True, True])
    app = np.array(["whatsapp", "", "", "meet", "rtp", "rtp"], dtype=object)
    rep = ev.score(idx, pred, app, labels)
    rec = rep["per_record"]
    assert (rec["tp"], rec["fp"], rec["fn"], rec["tn"]) == (2, 0, 1, 1)
    assert rec["records_unmatched"] == 2
    flow = rep["per_flow"]
    # Flow 0 counts once (one of its records said VoIP); the RTP flow no record matched.
    assert (flow["tp"], flow["fn"], flow["unmatched"], flow["unmatched_voip"]) == (2, 1, 2, 1)
    assert rep["per_app"]["rtp"]["unmatched"] == 1
    assert rep["confusion"]["whatsapp"] == {"whatsapp": 1}
    assert ev.summary_line(rep).startswith("precision=1.0000 recall=0.6667 f1=0.8000 flows=6")


def test_prf_edges() -> None:
    none = np.zeros(3, bool)
    assert ev.prf(none, none)["f1"] == 0.0
    assert ev.prf(np.array([True]), np.array([True]))["f1"] == 1.0


def test_observed_view_ceiling_and_own_app_column(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        HEADER.rstrip("\n")
        + ",app\n"
        + "c.pcap,UDP,10.0.0.1,4000,192.0.2.1,4001,1,voice,voice,VoIP,40,1,40,1,1,discord\n"
        + "c.pcap,UDP,10.0.0.1,4002,192.0.2.1,53,1,dns,dns,Network,1,1,1,1,0,\n"
        + "c.pcap,UDP,10.0.0.1,4004,192.0.2.1,3478,1,stun,stun,VoIP,2,1,2,1,1,whatsapp\n"
        + "c.pcap,UDP,10.0.0.1,4006,192.0.2.1,9000,1,game,game,Game,400,1,400,1,0,\n"
    )
    labels = ev.load_labels(path)
    assert labels.app[0] == "discord" and labels.packets.tolist() == [80, 2, 4, 800]
    # Records for the first, second and last flows; the STUN flow got none.
    idx = np.array([0, 1, 3])
    rep = ev.score(idx, np.array([True, False, True]), np.array(["discord", "", "rtp"]), labels)
    assert rep["per_flow"]["recall"] == 0.5 and rep["per_flow"]["unmatched_voip"] == 1
    seen = rep["per_flow_observed"]
    assert (seen["flows"], seen["recall"], seen["precision"]) == (3, 1.0, 0.5)
    assert seen["observed_voip_share"] == 0.5
    assert rep["false_positive_kinds"] == {"game": 1} and rep["false_negative_kinds"] == {}
    assert rep["per_app"]["discord"]["app_correct"] == 1
    ceiling = ev.sampling_ceiling(labels, 10)
    # min(1, k/10) per flow: VoIP flows of 80 and 4 packets -> (1 + 0.4) / 2
    assert ceiling["expected_observed_voip_share"] == 0.7
    assert abs(ceiling["expected_observed_share"] - (1 + 0.2 + 0.4 + 1) / 4) < 1e-12
