"""The exporter simulator: its stream, its truth, its calls, its determinism.

The stream is checked by decoders that are not the project's: every run
below sends to a real ``nfcapd`` over loopback and writes the same datagrams
to a pcap that ``tshark`` decodes; both must give the same records, and those
records, aggregated per city, must equal the truth file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.collectors.reference_decoders import FLOW_KEYS, Nfcapd, tshark_flows
from voipflow.evaluation.simclassify import T0, make_model
from voipflow.simulate import apps as A
from voipflow.simulate.config import SimulatorConfig
from voipflow.simulate.runner import DEFAULT_CITIES, REPO, Simulator
from voipflow.simulate.traffic import TrafficModel


def city_of(addr: str) -> str | None:
    """City of a subscriber address by the demo table (independent lookup)."""
    ip = ipaddress.ip_address(addr)
    for net, city in _CITY_NETS:
        if ip.version == net.version and ip in net:
            return city
    return None


_CITY_NETS: list[tuple[Any, str]] = []
for _line in DEFAULT_CITIES.read_text().splitlines()[1:]:
    _prefix, _city = _line.split(",")[:2]
    _CITY_NETS.append((ipaddress.ip_network(_prefix), _city))

CARRIER = ipaddress.ip_network("198.51.100.0/24")


def subscriber_side(flow: dict[str, Any]) -> tuple[str, str, int]:
    """(subscriber address, peer address, peer port) of a decoded flow."""
    if city_of(flow["src_addr"]) is not None:
        return flow["src_addr"], flow["dst_addr"], flow["dst_port"]
    return flow["dst_addr"], flow["src_addr"], flow["src_port"]


def run_simulator(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Run unpaced to nfcapd and into a pcap; decode both; return everything."""
    with Nfcapd(tmp_path / "nfcapd") as nfcapd:
        cfg = SimulatorConfig(
            target=f"127.0.0.1:{nfcapd.port}",
            start_ms=T0,
            unpaced=True,
            pcap=tmp_path / "sim.pcap",
            truth=tmp_path / "truth.json",
            **overrides,
        )
        sim = Simulator(cfg)
        sim.start()
        try:
            # unpaced, but let nfcapd keep up: datagrams are sent per 0.1 s step
            progress = sim.run()
        finally:
            sim.stop()
        nf = nfcapd.flows()
        nf_log = nfcapd.stats()
    ts, headers = tshark_flows(tmp_path / "sim.pcap", nfcapd.port)
    truth = json.loads((tmp_path / "truth.json").read_text())
    return {
        "truth": truth,
        "nfdump": nf,
        "nfdump_log": nf_log,
        "tshark": ts,
        "headers": headers,
        "progress": progress,
    }


def _records(flows: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(f[k] for k in (*FLOW_KEYS, "exporter")) for f in flows)


@pytest.fixture(scope="module", params=[5, 9, 10], ids=["v5", "v9", "ipfix"])
def sim_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp(f"sim{request.param}")
    return run_simulator(
        tmp, version=request.param, rate=1500, duration_s=8, seed=7, subscribers_per_city=300
    )


@pytest.mark.slow
def test_tshark_and_nfdump_decode_the_same_records(sim_run: dict[str, Any]) -> None:
    truth = sim_run["truth"]
    assert truth["totals"]["flows"] > 8000
    assert "Sequence Errors: 0" in sim_run["nfdump_log"]
    assert _records(sim_run["tshark"]) == _records(sim_run["nfdump"])
    assert len(sim_run["nfdump"]) == truth["totals"]["flows"]
    assert sum(f["packets"] for f in sim_run["nfdump"]) == truth["totals"]["packets"]
    assert sum(f["bytes"] for f in sim_run["nfdump"]) == truth["totals"]["bytes"]


def test_each_city_has_its_own_exporter(sim_run: dict[str, Any]) -> None:
    truth = sim_run["truth"]
    by_exporter: dict[str, set[str | None]] = defaultdict(set)
    for f in sim_run["nfdump"]:
        by_exporter[f["exporter"]].add(city_of(subscriber_side(f)[0]))
    expected = {e["address"]: {e["city"]} for e in truth["exporters"]}
    assert dict(by_exporter) == expected
    assert len(expected) == 12


def test_truth_per_city_equals_what_nfdump_decoded(sim_run: dict[str, Any]) -> None:
    got: dict[str, Counter[str]] = defaultdict(Counter)
    subs: dict[str, set[str]] = defaultdict(set)
    for f in sim_run["nfdump"]:
        sub, peer, peer_port = subscriber_side(f)
        city = city_of(sub)
        assert city is not None, f
        c = got[city]
        c["flows"] += 1
        c["packets"] += f["packets"]
        c["bytes"] += f["bytes"]
        subs[city].add(sub)
        # two apps are recognisable in the records by construction
        if f["protocol"] == 17 and peer_port == 53:
            c["dns_flows"] += 1
            c["dns_bytes"] += f["bytes"]
        if ipaddress.ip_address(peer) in CARRIER:
            c["sip_flows"] += 1
            c["sip_bytes"] += f["bytes"]
    usage = {(r["city"], r["app"]): r for r in sim_run["truth"]["usage"]}
    for row in sim_run["truth"]["cities"]:
        city = row["city"]
        assert got[city]["flows"] == row["flows"], city
        assert got[city]["packets"] == row["packets"], city
        assert got[city]["bytes"] == row["bytes"], city
        dns, sip = usage.get((city, "dns"), {}), usage.get((city, "sip"), {})
        assert got[city]["dns_flows"] == dns.get("flows", 0), city
        assert got[city]["dns_bytes"] == dns.get("bytes", 0), city
        assert got[city]["sip_flows"] == sip.get("flows", 0), city
        assert got[city]["sip_bytes"] == sip.get("bytes", 0), city
    # distinct subscribers: a subscriber has one IPv4 and may have one IPv6
    # address, so decoded addresses are at least the truth's subscribers
    for row in sim_run["truth"]["cities"]:
        assert row["subscribers"] <= len(subs[row["city"]]) <= 2 * row["subscribers"]


def test_flow_times_are_sane(sim_run: dict[str, Any]) -> None:
    truth = sim_run["truth"]
    for f in sim_run["nfdump"]:
        assert f["flow_start_ms"] <= f["flow_end_ms"] <= truth["end_ms"]
        assert f["flow_end_ms"] - f["flow_start_ms"] <= truth["active_timeout_s"] * 1000


# -- the traffic model itself (no network) --------------------------------------


def run_model(model: TrafficModel, seconds: float, step_ms: int = 100) -> list[Any]:
    return [model.tick(T0 + step_ms * (i + 1)) for i in range(int(seconds * 1000 / step_ms))]


@pytest.mark.slow
def test_call_media_have_voice_statistics() -> None:
    model = make_model(rate=4000, seed=3, active_timeout_s=30)
    ticks = run_model(model, 120)
    calls_up: list[np.ndarray] = []
    calls_down: list[np.ndarray] = []
    pps_all, size_all = [], []
    for t in ticks:
        c, lab = t.columns, t.labels
        media = lab["media"]
        assert media.any()
        assert set(np.unique(lab["app"][media])) <= set(range(len(A.CALL_APPS)))
        dur = (c["flow_end_ms"][media] - c["flow_start_ms"][media]).astype(float) / 1000
        full = dur >= 10  # whole slices; the last slice of a call can be short
        pps_all.append(c["packets"][media][full] / dur[full])
        size_all.append(c["bytes"][media] / c["packets"][media])
        assert (c["protocol"][media] == 17).all()
        sub = lab["sub"][media]
        src = c["src_addr"][media]
        up = (src == model.pop.sub_v4[sub]) | (src == model.pop.sub_v6[sub])
        calls_up.append(lab["call"][media][up])
        calls_down.append(lab["call"][media][~up])
    pps = np.concatenate(pps_all)
    size = np.concatenate(size_all)
    assert pps.min() >= 40 and pps.max() <= 51.6  # ~50 packets/s per direction
    assert 44 <= float(np.median(pps)) <= 50
    assert size.min() >= 60 and size.max() <= 200  # Opus/G.711/G.729 sized
    up, down = np.unique(np.concatenate(calls_up)), np.unique(np.concatenate(calls_down))
    assert len(np.intersect1d(up, down)) / len(np.union1d(up, down)) > 0.97  # both directions
    # minutes-long calls: the truth's mean covered seconds per call
    truth = model.truth.document({})
    calls = sum(r["calls"] for r in truth["usage"])
    call_s = sum(r["call_seconds"] for r in truth["usage"])
    assert calls > 500
    assert call_s / calls > 45  # calls are cut by the 2-minute window here
    assert model.mean_call_s > 150


def test_apps_use_their_providers_and_ports() -> None:
    model = make_model(rate=3000, seed=5)
    ticks = run_model(model, 30)
    names = [a for a, _ in model.apps]
    teams = ipaddress.ip_network("52.112.0.0/14")
    seen_ports: dict[str, set[int]] = defaultdict(set)
    teams_in_range = teams_total = 0
    for t in ticks:
        c, lab = t.columns, t.labels
        for i in np.flatnonzero(lab["media"]):
            app = names[lab["app"][i]]
            src = ipaddress.ip_address(bytes(c["src_addr"][i]).ljust(16, b"\0"))
            up = city_of(str(src.ipv4_mapped or src)) is not None
            peer_port = int(c["dst_port"][i] if up else c["src_port"][i])
            seen_ports[app].add(peer_port)
            if app == "teams":
                peer = c["dst_addr"][i] if up else c["src_addr"][i]
                ip = ipaddress.ip_address(bytes(peer).ljust(16, b"\0"))
                teams_total += 1
                teams_in_range += (ip.ipv4_mapped or ip) in teams or ip.version == 6
    assert seen_ports["whatsapp"] == {3478}
    assert seen_ports["zoom"] == {8801}
    assert seen_ports["teams"] <= {3478, 3479, 3480, 3481}
    assert seen_ports["meet"] <= set(range(19302, 19310))
    assert all(p % 2 == 0 and 10000 <= p <= 20000 for p in seen_ports["sip"])
    assert teams_total > 50 and teams_in_range / teams_total > 0.5


def _sockets(model: TrafficModel, ticks: list[Any]) -> dict[str, Any]:
    """Per record kind, the subscriber sockets (call, address, port) seen."""
    names = [a for a, _ in model.apps]
    out: dict[str, Any] = defaultdict(set)
    for t in ticks:
        c, lab = t.columns, t.labels
        sub = lab["sub"]
        src = c["src_addr"]
        up = (src == model.pop.sub_v4[sub]) | (src == model.pop.sub_v6[sub])
        sub_addr = np.where(up, src, c["dst_addr"])
        sub_port = np.where(up, c["src_port"], c["dst_port"])
        peer_port = np.where(up, c["dst_port"], c["src_port"])
        for i in np.flatnonzero(lab["call"] >= 0):
            app = names[lab["app"][i]]
            key = (int(lab["call"][i]), bytes(sub_addr[i]), int(sub_port[i]))
            if lab["media"][i]:
                out[app, "media"].add(key)
                out[app, "media_peer_port"].add((key, int(peer_port[i])))
            elif c["protocol"][i] == 17 and peer_port[i] in (3478, 19302):
                out[app, "stun"].add(key)
                out[app, "stun_slices"].add((key, int(c["flow_start_ms"][i])))
            elif c["protocol"][i] == 17:
                out[app, "udp_other"].add((key, int(peer_port[i])))
    return out


@pytest.mark.slow
def test_ice_apps_send_stun_from_the_media_socket() -> None:
    """ICE: the binding requests leave from the socket that then carries the
    media (a server-reflexive candidate is that socket's mapping), so every
    STUN flow of a WhatsApp, Teams, Meet or Signal call shares the call's
    media socket; WebRTC apps keep their STUN binding alive for the whole
    call (exported in slices like media); SIP's RTCP sits on both ports + 1."""
    model = make_model(rate=3000, seed=9, active_timeout_s=30)
    seen = _sockets(model, run_model(model, 120))
    for app in ("whatsapp", "teams", "meet", "signal"):
        media = seen[app, "media"]
        # calls whose media was exported (a call's first slice is due a
        # timeout after it starts, its STUN flows when they end)
        calls = {call for call, _, _ in media}
        stun = {k for k in seen[app, "stun"] if k[0] in calls}
        assert len(stun) > 20, app
        assert stun <= media, (app, len(stun - media))
    # libwebrtc's keep-alives: several 30 s slices per STUN socket, also for
    # calls in progress before the run (their first slice started earlier)
    for app in ("meet", "signal"):
        slices = defaultdict(int)
        for key, _ in seen[app, "stun_slices"]:
            slices[key] += 1
        assert max(slices.values()) >= 3, app
        assert min(start for _, start in seen[app, "stun_slices"]) < T0, app
    rtcp = {(k, p) for k, p in seen["sip", "udp_other"] if p % 2 == 1}
    rtp = {
        ((call, addr, port + 1), peer + 1)
        for (call, addr, port), peer in seen["sip", "media_peer_port"]
    }
    assert len(rtcp) > 20 and rtcp <= rtp


def test_record_rate_follows_the_configured_rate() -> None:
    model = make_model(rate=3000, seed=11)
    n = sum(len(t) for t in run_model(model, 60, step_ms=500))
    assert abs(n / 60 - 3000) / 3000 < 0.05


def test_same_seed_same_records_other_seed_other_records() -> None:
    a = run_model(make_model(rate=2000, seed=42), 5)
    b = run_model(make_model(rate=2000, seed=42), 5)
    c = run_model(make_model(rate=2000, seed=43), 5)
    for ta, tb in zip(a, b, strict=True):
        assert ta.columns.keys() == tb.columns.keys()
        for k in ta.columns:
            assert np.array_equal(ta.columns[k], tb.columns[k]), k
    assert sum(len(t) for t in a) != sum(len(t) for t in c) or any(
        not np.array_equal(x.columns["bytes"], y.columns["bytes"])
        for x, y in zip(a, c, strict=True)
    )


def test_sampling_thins_records_and_keeps_estimates(tmp_path: Path) -> None:
    model = make_model(rate=3000, seed=9, sampling=10)
    run_model(model, 30)
    t = model.truth.totals()
    assert t["flows"] < 0.9 * t["flows_total"]  # DNS and small flows vanish
    assert abs(t["packets"] * 10 - t["packets_total"]) / t["packets_total"] < 0.02
    assert abs(t["bytes"] * 10 - t["bytes_total"]) / t["bytes_total"] < 0.02


def test_sampled_v5_stream_is_scaled_by_nfdump(tmp_path: Path) -> None:
    run = run_simulator(tmp_path, version=5, rate=1000, duration_s=5, sampling=10, seed=2)
    truth = run["truth"]
    assert {h["cflow.samplerate"] for h in run["headers"]} == {"10"}
    assert len(run["nfdump"]) == truth["totals"]["flows"]
    assert sum(f["packets"] for f in run["nfdump"]) == 10 * truth["totals"]["packets"]
    assert all(f["sampled"] for f in run["nfdump"])


def test_sampled_ipfix_announces_its_sampling(tmp_path: Path) -> None:
    run = run_simulator(tmp_path, version=10, rate=1000, duration_s=3, sampling=32, seed=2)
    spaces = {h["cflow.sampling_packet_space"] for h in run["headers"]} - {""}
    assert spaces == {"31"}
    # nfdump 1.7.1 does not apply option-announced sampling: counters as sent
    assert sum(f["packets"] for f in run["nfdump"]) == run["truth"]["totals"]["packets"]


# -- the command ---------------------------------------------------------------


def _cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voipflow", "simulate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


@pytest.mark.slow
def test_cli_runs_are_reproducible(tmp_path: Path) -> None:
    common = ["--no-send", "--unpaced", "--start-ms", str(T0), "--rate", "800", "--duration", "4"]
    for name in ("a", "b"):
        out = _cli(
            *common,
            "--pcap",
            str(tmp_path / f"{name}.pcap"),
            "--truth",
            str(tmp_path / f"{name}.json"),
            "--seed",
            "5",
        )
        assert out.returncode == 0, out.stderr
        assert "flows/s" in out.stderr
    assert (tmp_path / "a.pcap").read_bytes() == (tmp_path / "b.pcap").read_bytes()
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


@pytest.mark.slow
def test_cli_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    truth = tmp_path / "t.json"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voipflow",
            "simulate",
            "--no-send",
            "--duration",
            "0",
            "--rate",
            "500",
            "--truth",
            str(truth),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stderr is not None
            deadline = time.monotonic() + 60
            line = ""
            while "flows/s" not in line and time.monotonic() < deadline:
                line = proc.stderr.readline()
            assert "flows/s" in line
            proc.send_signal(signal.SIGINT)
            rest = proc.stderr.read()
            assert proc.wait(timeout=30) == 0, rest
        finally:
            if proc.poll() is None:
                proc.kill()
    doc = json.loads(truth.read_text())
    assert doc["totals"]["flows"] > 0
    assert "truth written" in rest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate"),
        (["--target", "nowhere"], "--target"),
        (["--version", "9", "--sampling", "0"], "--sampling"),
        (["--cities", "/nonexistent.csv"], "/nonexistent.csv"),
        (["--ipv6-share", "2"], "--ipv6-share"),
    ],
)
def test_cli_refuses_bad_input_naming_it(args: list[str], message: str) -> None:
    out = _cli(*args, "--duration", "1", "--no-send", "--truth", "/dev/null")
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
