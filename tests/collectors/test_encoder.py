"""NetFlow v5/v9 and IPFIX encoders, checked by decoders that are not ours.

Every encoded stream is decoded by tshark (from a pcap) and by nfcapd/nfdump
(over loopback UDP), and the decoded records must equal the encoded columns
field by field. Header bookkeeping (sequence numbers, template refresh,
sampling announcements, MTU) is checked on tshark's view of the datagrams.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.collectors.flows import BOOT, T0, random_flows
from tests.collectors.reference_decoders import (
    FLOW_KEYS,
    Nfcapd,
    send_paced,
    tshark_flows,
)
from voipflow.collectors.codec.encoder import (
    EncodeError,
    IPFIXEncoder,
    NetFlowV5Encoder,
    NetFlowV9Encoder,
    make_encoder,
)
from voipflow.collectors.pcapfile import PcapWriter
from voipflow.netutil import free_port
from voipflow.schemas.flowbatch import addr_to_text, make_batch

EXPORTER = "127.0.0.5"


def expected_records(cols: dict[str, Any], scale: int = 1) -> list[dict[str, Any]]:
    n = len(cols["packets"])
    rows = []
    for i in range(n):
        row = {k: int(cols[k][i]) for k in FLOW_KEYS if k not in ("src_addr", "dst_addr")}
        row["src_addr"] = addr_to_text(cols["src_addr"][i])
        row["dst_addr"] = addr_to_text(cols["dst_addr"][i])
        row["packets"] *= scale
        row["bytes"] *= scale
        rows.append(row)
    return sorted(rows, key=_key)


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in FLOW_KEYS)


def _only_flow_keys(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({k: r[k] for k in FLOW_KEYS} for r in rows), key=_key)


def _nfdump_view(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flow keys as nfdump 1.7.1 shows them: its raw output omits ToS for ICMP."""
    out = []
    for r in rows:
        row = {k: r.get(k) for k in FLOW_KEYS}
        if row["protocol"] in (1, 58):
            row["tos"] = None
        out.append(row)
    return sorted(out, key=lambda r: tuple(-1 if v is None else v for v in r.values()))


def encode_in_exports(encoder: Any, cols: dict[str, Any], chunk: int = 333) -> list[bytes]:
    """Encode in several export rounds, one per simulated second, like an exporter."""
    out: list[bytes] = []
    n = len(cols["packets"])
    for r, lo in enumerate(range(0, n, chunk)):
        part = {k: v[lo : lo + chunk] for k, v in cols.items()}
        out += encoder.encode(part, T0 + 200_000 + 1000 * r + 137)
    return out


def write_pcap(path: Path, datagrams: list[bytes], port: int) -> Path:
    with PcapWriter(path) as w:
        for i, d in enumerate(datagrams):
            w.write(T0 + 200_000 + i, (EXPORTER, 40000), ("127.0.0.1", port), d)
    return path


ENCODERS = {
    "v5": lambda s: NetFlowV5Encoder(
        engine_type=1, engine_id=7, sampling_rate=s, boot_time_ms=BOOT
    ),
    "v9": lambda s: NetFlowV9Encoder(source_id=77, sampling_rate=s, boot_time_ms=BOOT),
    "ipfix": lambda s: IPFIXEncoder(observation_domain_id=77, sampling_rate=s),
}


@pytest.mark.parametrize("name", ["v5", "v9", "ipfix"])
@pytest.mark.parametrize("sampling", [1, 64])
@pytest.mark.slow
def test_tshark_decodes_exactly_the_encoded_records(
    tmp_path: Path, name: str, sampling: int
) -> None:
    cols = random_flows(1500, seed=len(name) + sampling, v6_share=0 if name == "v5" else 0.3)
    if name == "v5":
        cols = random_flows(1500, seed=3, v5=True)
    enc = ENCODERS[name](sampling)
    datagrams = encode_in_exports(enc, cols)
    assert max(len(d) for d in datagrams) <= 1500 - 28
    port = free_port("udp")
    flows, headers = tshark_flows(write_pcap(tmp_path / "x.pcap", datagrams, port), port)

    assert len(headers) == len(datagrams)
    assert _only_flow_keys(flows) == expected_records(cols)
    assert {f["exporter"] for f in flows} == {EXPORTER}
    expert = " ".join(h["_ws.expert.message"] for h in headers)
    assert "sequence" not in expert.lower(), expert


def _seq(h: dict[str, str]) -> int:
    return int(h["cflow.sequence"])


def test_v5_header_counts_records_and_announces_sampling(tmp_path: Path) -> None:
    cols = random_flows(95, seed=5, v5=True)
    enc = NetFlowV5Encoder(engine_type=3, engine_id=9, sampling_rate=100, boot_time_ms=BOOT)
    datagrams = enc.encode(cols, T0 + 200_000) + enc.encode(cols, T0 + 201_000)
    port = free_port("udp")
    _, headers = tshark_flows(write_pcap(tmp_path / "x.pcap", datagrams, port), port)
    counts = [int(h["cflow.count"]) for h in headers]
    assert counts == [30, 30, 30, 5] * 2
    assert [_seq(h) for h in headers] == list(np.cumsum([0, *counts[:-1]]))
    for h in headers:
        assert (h["cflow.engine_type"], h["cflow.engine_id"]) == ("3", "9")
        assert (h["cflow.samplingmode"], h["cflow.samplerate"]) == ("1", "100")


def test_v9_sequence_counts_packets_and_templates_are_refreshed(tmp_path: Path) -> None:
    cols = random_flows(2000, seed=9, v6_share=0.5)
    enc = NetFlowV9Encoder(source_id=5, boot_time_ms=BOOT, template_refresh_packets=10)
    datagrams = enc.encode(cols, T0 + 200_000)
    datagrams += enc.encode(random_flows(10, seed=1), T0 + 200_000 + 30_000)
    port = free_port("udp")
    _, headers = tshark_flows(write_pcap(tmp_path / "x.pcap", datagrams, port), port)
    assert [_seq(h) for h in headers] == list(range(len(datagrams)))
    with_templates = [i for i, h in enumerate(headers) if h["cflow.template_id"]]
    # every 10th datagram by count, and the last one because 30 s have passed
    assert with_templates == [*range(0, len(datagrams) - 1, 10), len(datagrams) - 1]
    assert {h["cflow.source_id"] for h in headers} == {"5"}


@pytest.mark.parametrize("mode", ["psamp", "legacy"])
def test_ipfix_sequence_and_sampling_options(tmp_path: Path, mode: str) -> None:
    cols = random_flows(700, seed=11, v6_share=0.2)
    enc = IPFIXEncoder(observation_domain_id=9, sampling_rate=10, ipfix_sampling=mode)  # type: ignore[arg-type]
    datagrams = enc.encode(cols, T0 + 200_000)
    port = free_port("udp")
    _, headers = tshark_flows(write_pcap(tmp_path / "x.pcap", datagrams, port), port)
    first = headers[0]
    if mode == "psamp":
        assert first["cflow.selector_algorithm"] == "1"
        assert first["cflow.sampling_packet_interval"] == "1"
        assert first["cflow.sampling_packet_space"] == "9"
    else:
        assert first["cflow.sampling_interval"] == "10"
        assert first["cflow.sampling_algorithm"] == "1"
    # RFC 7011: data records before this message, options data records included
    assert enc.data_records == 700 + sum(1 for h in headers if h["cflow.template_id"])
    # (the legacy options record has the domain as its scope: a second od_id)
    assert {x for h in headers for x in h["cflow.od_id"].split(";")} == {"9"}


@pytest.mark.parametrize("mtu", [576, 1500, 9000])
@pytest.mark.parametrize("version", [5, 9, 10])
def test_datagrams_respect_the_mtu_and_fill_it(version: int, mtu: int) -> None:
    cols = random_flows(3000, seed=mtu, v5=version == 5, v6_share=0 if version == 5 else 0.5)
    enc = make_encoder(version, mtu=mtu, boot_time_ms=BOOT, sampling_rate=4)
    datagrams = enc.encode(cols, T0 + 200_000)
    sizes = [len(d) for d in datagrams]
    assert max(sizes) <= mtu - 28
    if version != 5:
        # all but the last datagram of each address family are nearly full
        full = sorted(sizes)[len(sizes) // 2 :]
        assert min(full) > mtu - 28 - 2 * 56 - 4


@pytest.mark.parametrize("name", ["v5", "v9", "ipfix"])
@pytest.mark.slow
def test_nfdump_decodes_exactly_the_encoded_records(tmp_path: Path, name: str) -> None:
    v5 = name == "v5"
    cols = random_flows(2000, seed=21, v5=v5, v6_share=0 if v5 else 0.3)
    enc = ENCODERS[name](1)
    with Nfcapd(tmp_path) as nfcapd:
        send_paced(encode_in_exports(enc, cols), nfcapd.port, source=EXPORTER)
        flows = nfcapd.flows()
    assert "Sequence Errors: 0" in nfcapd.stats()
    assert _nfdump_view(flows) == _nfdump_view(expected_records(cols))
    assert {f["exporter"] for f in flows} == {EXPORTER}


def test_nfdump_scales_v5_header_sampling(tmp_path: Path) -> None:
    # nfcapd multiplies counters by the v5 header's sampling interval.
    cols = random_flows(300, seed=23, v5=True)
    cols["bytes"] = cols["bytes"] % 2**24  # room for x16 in nfdump's counters
    enc = ENCODERS["v5"](16)
    with Nfcapd(tmp_path) as nfcapd:
        send_paced(encode_in_exports(enc, cols), nfcapd.port, source=EXPORTER)
        flows = nfcapd.flows()
    assert _nfdump_view(flows) == _nfdump_view(expected_records(cols, scale=16))
    assert all(f["sampled"] for f in flows)


@pytest.mark.parametrize("version", [5, 9])
def test_default_boot_time_gives_exact_times(tmp_path: Path, version: int) -> None:
    cols = random_flows(200, seed=4, v5=True)
    enc = make_encoder(version)  # no boot time: 30 days of uptime at the first export
    port = free_port("udp")
    datagrams = encode_in_exports(enc, cols, chunk=50)
    flows, _ = tshark_flows(write_pcap(tmp_path / "x.pcap", datagrams, port), port)
    assert _only_flow_keys(flows) == expected_records(cols)


def test_flow_batch_input_is_accepted() -> None:
    cols = random_flows(50, seed=2)
    batch = make_batch(cols)
    enc_a = make_encoder(10, observation_domain_id=1)
    enc_b = make_encoder(10, observation_domain_id=1)
    assert enc_a.encode(batch, T0 + 1000) == enc_b.encode(cols, T0 + 1000)


def test_refusals() -> None:
    v6 = random_flows(10, seed=1, v6_share=1.0)
    with pytest.raises(EncodeError, match="IPv4 only"):
        make_encoder(5, boot_time_ms=BOOT).encode(v6, T0)
    v4 = random_flows(10, seed=1, v5=True)
    with pytest.raises(EncodeError, match="missing columns: bytes"):
        make_encoder(9, boot_time_ms=BOOT).encode({k: v for k, v in v4.items() if k != "bytes"}, T0)
    big = dict(v4, bytes=np.full(10, 2**33))
    with pytest.raises(EncodeError, match="dOctets"):
        make_encoder(5, boot_time_ms=BOOT).encode(big, T0)
    with pytest.raises(EncodeError, match="boot time"):
        make_encoder(9, boot_time_ms=T0 + 10**9).encode(v4, T0 + 10**9)
    with pytest.raises(EncodeError, match="unknown export version"):
        make_encoder(8)
    with pytest.raises(EncodeError, match="mtu"):
        make_encoder(10, mtu=100)
