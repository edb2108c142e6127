"""Differential tests: our decoder against nfdump (and tshark) on real exports.

Captures from the labelled corpus are exported by softflowd (v5, v9, IPFIX,
IPFIX biflows, sampled) and pmacctd's nfprobe plugin (v9, IPFIX); the same
datagrams go to nfcapd over loopback and to :class:`voipflow.collectors.codec.decoder.Decoder`.
Every record must match: 5-tuple, packets, bytes, first and last time (ms),
TCP flags and sampling.

nfdump 1.7.1 differences, checked against tshark and handled here:
* IPFIX ``flowStart/EndSysUpTime`` (softflowd): nfdump swaps first and last
  (its "first" is the later one); tshark agrees with us, so for those exports
  the pair is compared as (min, max). :func:`test_tshark_agrees` checks the
  order exactly.
* NetFlow v9 switched times after the header's sysUptime: nfdump's v9 decoder
  puts them in the future, ours (like nfdump's own v5 decoder) takes them as
  the 32-bit uptime wrap, so ours are 2^32 ms earlier. softflowd reading a
  capture produces such times (its uptime starts with the process, the
  capture's clock is years earlier); those exports compare times modulo 2^32.
* Biflows: nfdump shows the reverse TCP flags as the record's flags, so the
  flags of biflow records are not compared with nfdump (ours are the forward
  ``tcpControlBits``, as in the unidirectional export of the same capture).
* ICMP type/code in NetFlow v9 records: nfdump 1.7.1 shows 0/0 where tshark
  and we read the type and code (pmacct's destination port, softflowd's
  ``icmpTypeCodeIPv6``), so v9 ICMP ports are not compared.
* Sampling: nfcapd 1.7.1 does not pick up softflowd's sampling announcement,
  so it neither scales nor marks those records; counters compare unscaled (as
  flows.v1 keeps them) and our ``sampling_rate`` must be the announced 10.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.collectors import exporters as ex
from tests.collectors import reference_decoders as rd
from tests.collectors.compare import nfdump_rows, our_rows
from voipflow.collectors.codec.decoder import Decoder, DecodeResult
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.schemas.flowbatch import addr_to_text

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not ex.have("softflowd", "softflowctl", "pmacctd", "nfcapd", "nfdump", "tshark"),
        reason="exporters or nfdump missing (scripts/setup.sh installs them)",
    ),
]

CAPTURES = [
    "whatsapp_login_call.pcap",
    "wa_voice.pcap",
    "teams.pcap",
    "skype-conference-call.pcap",
    "signal.pcap",
    "telegram.pcap",
    "viber.pcap",
    "zoom.pcap",
    "stun_zoom.pcapng",
    "google_meet.pcapng",
    "rtp.pcapng",
    "http_on_sip_port.pcap",
    "http_ipv6.pcap",
    "custom_rules_ipv6.pcapng",
    "dns.pcap",
    "dns_dot.pcap",
    "googledns_android10.pcap",
    "quic-27.pcap",
    "tls_long_cert.pcap",
    "icmp-tunnel.pcap",
]

EXPORTS = {
    "softflowd-v5": ("softflowd", "5", ()),
    "softflowd-v9": ("softflowd", "9", ()),
    "softflowd-ipfix": ("softflowd", "10", ()),
    "softflowd-ipfix-biflow": ("softflowd", "10", ("-b",)),
    "softflowd-v9-sampled": ("softflowd", "9", ("-s", "10")),
    "softflowd-ipfix-sampled": ("softflowd", "10", ("-s", "10")),
    "pmacct-v9": ("pmacct", "9", ()),
    "pmacct-ipfix": ("pmacct", "10", ()),
}


def export(kind: str, pcap: Path, tmp: Path) -> list[bytes]:
    tool, version, extra = EXPORTS[kind]
    if tool == "softflowd":
        return ex.softflowd_export(pcap, version, tmp, *extra)
    return ex.pmacct_export(pcap, int(version), tmp)


def decode(datagrams: list[bytes]) -> DecodeResult:
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    return Decoder(TemplateCache()).decode([(d, rd.LOOPBACK16, now) for d in datagrams])


#: Captures with IPv6 flows only: NetFlow v5 cannot carry them, so softflowd -v 5
#: exports nothing and there is nothing to compare.
IPV6_ONLY = {"http_ipv6.pcap", "custom_rules_ipv6.pcapng", "quic-27.pcap"}

CASES = [
    (capture, kind)
    for capture in CAPTURES
    for kind in EXPORTS
    if not (capture in IPV6_ONLY and kind == "softflowd-v5")
]


#: Exporters running at once. An export mostly waits (pmacctd's nfprobe takes
#: about 5 s to flush a small capture, softflowd is polled), so the cases'
#: exports run side by side; every exporter sends to its own socket.
PARALLEL_EXPORTS = 6


@pytest.fixture(scope="module")
def exports(
    request: pytest.FixtureRequest, corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Future[list[bytes]]]:
    """The datagrams of every selected case, exported side by side.

    Each case's test waits for its own future, so an exporter that fails
    fails that case alone, with its own error.
    """
    selected = {
        (item.callspec.params["capture"], item.callspec.params["kind"])
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_matches_nfdump"
    }
    tmp = tmp_path_factory.mktemp("exports")
    pool = ThreadPoolExecutor(max_workers=PARALLEL_EXPORTS, thread_name_prefix="export")
    request.addfinalizer(lambda: pool.shutdown(wait=True, cancel_futures=True))
    return {
        (capture, kind): pool.submit(export, kind, corpus_dir / "pcap" / capture, tmp)
        for capture, kind in CASES
        if (capture, kind) in selected
    }


@pytest.mark.parametrize(("capture", "kind"), CASES)
def test_matches_nfdump(
    capture: str,
    kind: str,
    exports: dict[tuple[str, str], Future[list[bytes]]],
    tmp_path: Path,
) -> None:
    datagrams = exports[(capture, kind)].result()
    assert datagrams, f"{kind} exported nothing for {capture}"
    res = decode(datagrams)
    assert not res.errors, res.errors
    stats = list(res.stats.values())
    assert sum(s.decode_errors for s in stats) == 0
    assert sum(s.sequence_lost for s in stats) == 0
    assert sum(s.held_sets + s.held_evicted for s in stats) == 0
    batch = res.batch
    sampled = "sampled" in kind
    if sampled:
        assert set(batch["sampling_rate"].tolist()) == {10}
    else:
        assert set(batch["sampling_rate"].tolist()) <= {1}
    ordered = not kind.startswith("softflowd-ipfix")
    wrap = kind.startswith("softflowd-v9")
    # nfdump's v9 decoder drops ICMP type/code sent in the destination port
    # (pmacct) or in icmpTypeCodeIPv6 (softflowd); tshark shows them. Not compared.
    icmp = "v9" not in kind
    theirs = nfdump_rows(rd.nfdump_decode(datagrams, tmp_path), ordered, wrap, icmp)
    ours = our_rows(batch, scale=False, ordered_times=ordered, wrap=wrap, icmp_ports=icmp)
    if "biflow" in kind:
        # nfdump puts the reverse direction's TCP flags in its one flags field.
        theirs = Counter({k[:-1]: v for k, v in theirs.items()})
        ours = Counter({k[:-1]: v for k, v in ours.items()})
    assert sum(ours.values()) == len(batch)
    assert ours == theirs, _diff(ours, theirs)


def _diff(ours: Counter[tuple], theirs: Counter[tuple]) -> str:
    only_ours = list((ours - theirs).items())[:5]
    only_theirs = list((theirs - ours).items())[:5]
    return f"{len(ours)} vs {len(theirs)} rows; only ours {only_ours}; only nfdump {only_theirs}"


def _int(text: str, base: int = 10) -> int:
    return int(text, base) if text else 0


def test_tshark_agrees(corpus_dir: Path, tmp_path: Path) -> None:
    """Duration (ms, start before end), counters and flags of an IPFIX export vs tshark.

    tshark's JSON keeps one value per field name, so biflows (forward and
    reverse counters under one name) are not compared here.
    """
    datagrams = ex.softflowd_export(corpus_dir / "pcap" / "wa_voice.pcap", "10", tmp_path)
    batch = decode(datagrams).batch
    fields = ["cflow.octets", "cflow.srcaddr", "cflow.dstaddr", "cflow.srcport",
              "cflow.dstport", "cflow.packets", "cflow.tcpflags", "cflow.timedelta",
              "cflow.srcaddrv6", "cflow.dstaddrv6", "cflow.protocol"]  # fmt: skip
    rows = rd.tshark_fields(rd.to_pcap(datagrams, tmp_path / "export.pcap"), fields)
    assert len(rows) == len(batch) > 0
    theirs = Counter(
        (r[1] or r[8], r[2] or r[9], _int(r[3]), _int(r[4]) if r[10] not in ("1", "58") else -1,
         _int(r[0]), _int(r[5]),
         _int(r[6], 16), round(float(r[7] or 0) * 1000))
        for r in rows
    )  # fmt: skip
    c = batch.columns
    ours = Counter(
        (addr_to_text(c["src_addr"][i]), addr_to_text(c["dst_addr"][i]), int(c["src_port"][i]),
         int(c["dst_port"][i]) if c["protocol"][i] not in (1, 58) else -1,  # tshark: no port
         int(c["bytes"][i]), int(c["packets"][i]),
         int(c["tcp_flags"][i]), int(c["flow_end_ms"][i]) - int(c["flow_start_ms"][i]))
        for i in range(len(batch))
    )  # fmt: skip
    assert ours == theirs, (list((ours - theirs).items())[:3], list((theirs - ours).items())[:3])
