"""Collector throughput: voipflow against GoFlow2 and nfcapd on the same packet stream.

For each stream (IPFIX with an IPv4 template, IPFIX with an IPv6 template,
NetFlow v9 IPv4) the same pre-built datagrams are sent over loopback at a
fixed rate to each receiver in turn, several rounds, and for each the
benchmark measures:

* records: what the receiver decoded (voipflow: its Prometheus counters;
  GoFlow2: lines of its JSON output; nfcapd: flows in its files, by nfdump);
  for voipflow to Kafka the records Kafka acknowledged;
* loss: records sent minus records counted;
* CPU seconds of the receiving process while the stream ran
  (``/proc/<pid>/stat`` utime + stime after the receiver went idle, minus
  the same before the first datagram; start-up is not counted);
* peak RSS (``VmHWM``).

Streams of two shapes: one big data set per datagram (``ipfix4``, ``ipfix6``,
``v9``), and the small-set shape (``ipfix4-small``, ``v9-small``) softflowd
sends: 7 data sets of 2 records per datagram, templates refreshed in front
of them every 16 datagrams. There the cost per datagram and per set, not per
record, is what counts.

It prints the medians per stream and receiver, records per CPU-second, CPU
microseconds per datagram, the ratio to nfcapd and the ratio to GoFlow2
doing the same job in the same run (``voipflow-kafka`` against
``goflow2-kafka``, the others against ``goflow2`` writing to a file)::

    python -m benchmarks.collector_bench [--records 1000000] [--rate 200000]
        [--rounds 3] [--streams ipfix4,ipfix6,v9] [--receivers ...]
        [--exporters 1] [--baseline DIR]
        [--bootstrap HOST:PORT] [--json OUT] [--set VOIPFLOW_X=V ...]

A receiver written ``voipflow-kafka@VOIPFLOW_X=V,...`` runs with those
settings too, so that variants are compared in the same run. With
``--baseline DIR`` (another checkout, e.g. ``git worktree add DIR main``)
every voipflow receiver also runs from there, as ``<receiver>~base``, in the
same rounds: before and after a change, measured side by side.

``--exporters N`` sends the records from N exporters (loopback source
addresses 127.0.x.y, 127.1.x.y, ...; each its own export process with its
own templates and sequence numbers, datagrams interleaved): how CPU and
peak RSS grow with the exporters and templates a collector keeps.

Receivers: ``voipflow-kafka`` (decode and publish to a real local broker:
``--bootstrap``, else one is started with ``voipflow.broker``; add
``@VOIPFLOW_COLLECTOR_COMPRESSION_LAYER=kafka`` to let the Kafka client
compress instead of Arrow),
``voipflow-null`` (decode only, ``--output null``), ``goflow2`` and
``goflow2-json`` (built with ``go install
github.com/netsampler/goflow2/v2/cmd/goflow2@latest`` into ``.cache/go/bin``;
protobuf or JSON to a file; its JSON formatter works by reflection and costs
it about eight times its protobuf output), ``goflow2-kafka`` (protobuf to the
same Kafka broker, lz4: decode and publish like ``voipflow-kafka``),
``nfcapd`` (files in a temp folder).
The sender is this process; it paces in 1 ms steps.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voipflow.collectors.codec.encoder import make_encoder
from voipflow.netutil import free_port
from voipflow.schemas.flowbatch import ipv4_to_addr16

REPO = Path(__file__).resolve().parents[1]
GOFLOW2 = REPO / ".cache" / "go" / "bin" / "goflow2"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STREAMS = ("ipfix4", "ipfix6", "v9", "ipfix4-small", "v9-small")
#: The small-set shape (``*-small``): as softflowd and other host exporters
#: send, several small data sets per datagram, templates in front of the data
#: sets every :data:`SMALL_REFRESH` datagrams.
SMALL_SETS, SMALL_RECORDS, SMALL_REFRESH = 7, 2, 16
RECEIVERS = ("voipflow-kafka", "voipflow-null", "goflow2-kafka", "goflow2", "nfcapd")


# -- the packet stream --------------------------------------------------------


def flow_columns(n: int, ip_version: int, seed: int = 7) -> dict[str, np.ndarray]:
    """``n`` plausible flow records (random 5-tuples, sizes and times)."""
    rng = np.random.default_rng(seed)
    if ip_version == 4:
        src = ipv4_to_addr16(rng.integers(0x0A000000, 0x0AFFFFFF, n, dtype=np.uint32))
        dst = ipv4_to_addr16(rng.integers(0x01000000, 0xDFFFFFFF, n, dtype=np.uint32))
    else:
        raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        raw[:, :4] = (0x20, 0x01, 0x0D, 0xB8)
        src = raw.copy().view("S16").reshape(-1)
        raw[:, 4] ^= 0xFF
        dst = raw.view("S16").reshape(-1)
    now = int(time.time() * 1000)
    start = now - rng.integers(1000, 300_000, n)
    packets = rng.integers(1, 2000, n).astype(np.uint64)
    return {
        "ip_version": np.full(n, ip_version, np.uint8),
        "src_addr": src,
        "dst_addr": dst,
        "src_port": rng.integers(1024, 65535, n).astype(np.uint16),
        "dst_port": rng.choice(np.array([443, 80, 53, 3478, 5060, 8801], np.uint16), n),
        "protocol": rng.choice(np.array([6, 17], np.uint8), n),
        "tcp_flags": rng.integers(0, 64, n).astype(np.uint8),
        "packets": packets,
        "bytes": packets * rng.integers(60, 1400, n).astype(np.uint64),
        "flow_start_ms": start.astype(np.uint64),
        "flow_end_ms": (start + rng.integers(0, 1000, n)).astype(np.uint64),
        "input_if": rng.integers(1, 48, n).astype(np.uint32),
        "output_if": rng.integers(1, 48, n).astype(np.uint32),
    }


@dataclass
class Stream:
    """Export datagrams and, for each, which exporter sends it."""

    datagrams: list[bytes]
    sources: list[int]
    exporters: int = 1


def exporter_address(i: int) -> str:
    """Loopback source address of exporter ``i`` (127.0.0.1 is the receiver's)."""
    return f"127.{1 + i // 62500}.{i // 250 % 250}.{1 + i % 250}"


def make_stream(kind: str, n: int, exporters: int = 1) -> Stream:
    """Export datagrams carrying ``n`` records: ipfix4, ipfix6 or v9 (IPv4),
    one big data set per datagram; ipfix4-small or v9-small, the small-set
    shape (:data:`SMALL_SETS` sets of :data:`SMALL_RECORDS` records each).

    With several exporters the records are split between them; each has its
    own export process (templates, sequence numbers) and its datagrams are
    interleaved with the others', as a collector sees a network's routers.
    """
    base, _, shape = kind.partition("-")
    version = 9 if base == "v9" else 10
    cols = flow_columns(n, 6 if base == "ipfix6" else 4)
    now = int(time.time() * 1000)
    per: list[list[bytes]] = []
    for i in range(exporters):
        part = {k: v[i::exporters] for k, v in cols.items()}
        if not len(part["packets"]):
            per.append([])
        elif shape == "small":
            enc: Any = make_encoder(
                version, observation_domain_id=1, template_refresh_packets=SMALL_REFRESH
            )
            per.append(enc.encode_small_sets(part, now, SMALL_RECORDS, SMALL_SETS))
        else:
            per.append(make_encoder(version, observation_domain_id=1).encode(part, now))
    datagrams: list[bytes] = []
    sources: list[int] = []
    for k in range(max(len(d) for d in per)):
        for i, dgs in enumerate(per):
            if k < len(dgs):
                datagrams.append(dgs[k])
                sources.append(i)
    return Stream(datagrams, sources, exporters)


def send(stream: Stream, port: int, rate_records: float, per_datagram: float) -> float:
    """Send to 127.0.0.1:``port`` at ``rate_records`` records/s; return seconds taken."""
    socks = []
    for i in range(stream.exporters):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        if stream.exporters > 1:
            sock.bind((exporter_address(i), 0))
        socks.append(sock)
    sendto = [s.sendto for s in socks]
    addr = ("127.0.0.1", port)
    per_s = rate_records / per_datagram
    datagrams, sources = stream.datagrams, stream.sources
    t0 = time.perf_counter()
    sent = 0
    total = len(datagrams)
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * per_s) + 1)
        while sent < due:
            sendto[sources[sent]](datagrams[sent], addr)
            sent += 1
        time.sleep(0.001)
    for s in socks:
        s.close()
    return time.perf_counter() - t0


# -- process figures ----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_idle(pid: int, quiet_s: float = 1.0, timeout_s: float = 120.0) -> float:
    """Wait until the process used (almost) no CPU for ``quiet_s``; return its CPU seconds."""
    deadline = time.monotonic() + timeout_s
    last = cpu_seconds(pid)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_seconds(pid)
        if now - last > 0.02:
            still_since = time.monotonic()
        elif time.monotonic() - still_since >= quiet_s:
            return now
        last = now
    return cpu_seconds(pid)


# -- receivers ----------------------------------------------------------------


@dataclass
class Receiver:
    name: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def settled(self, expected: int) -> None:
        """Return once the receiver processed what it will (default: CPU idle)."""
        assert self.proc is not None
        wait_idle(self.proc.pid)

    def records(self) -> int:
        """Records counted; called after :meth:`stop`."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class VoipflowReceiver(Receiver):
    def start(self) -> None:
        self.mport = free_port("tcp")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
        env.update(
            VOIPFLOW_COLLECTOR_LISTEN=f"127.0.0.1:{self.port}",
            VOIPFLOW_METRICS_LISTEN=f"127.0.0.1:{self.mport}",
            VOIPFLOW_DATA_DIR=str(self.workdir),
            VOIPFLOW_COLLECTOR_WORKERS="1",
            VOIPFLOW_LOG_LEVEL="WARNING",
        )
        env.update(self.extra.get("settings", {}))
        output = self.extra["output"]
        if output == "kafka":
            env["VOIPFLOW_KAFKA_BOOTSTRAP"] = self.extra["bootstrap"]
        self.log = open(self.workdir / "collect.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voipflow", "collect", "--output", output],
            cwd=self.extra.get("repo", REPO),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def ready(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.mport}/metrics")

    def counted(self) -> int:
        text = self.metrics()
        if self.extra["output"] == "kafka":
            return int(_metric_sum(text, "voipflow_collector_kafka_records_total"))
        return int(_metric_sum(text, "voipflow_collector_records_total"))

    def settled(self, expected: int) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 120
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.counted()
            if n >= expected:
                break
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > 3:
                break
            time.sleep(0.2)
        self._records = self.counted()
        wait_idle(self.proc.pid, quiet_s=0.6)

    def records(self) -> int:
        return self._records


class GoFlow2Receiver(Receiver):
    """GoFlow2 writing ``bin`` (protobuf, its cheapest) or ``json`` to a file,
    or protobuf to Kafka (one message per flow, lz4, the same broker).

    Records: its own counter of decoded data records
    (``goflow2_flow_process_nf_flowset_records_total{type="DataFlowSet"}``),
    since the protobuf output has no line structure to count; with Kafka, the
    messages that reached the topic (end offsets).
    """

    def start(self) -> None:
        self.mport = free_port("tcp")
        fmt = self.extra.get("format", "bin")
        cmd = [str(GOFLOW2), "-listen", f"netflow://127.0.0.1:{self.port}", "-format", fmt]
        cmd += ["-addr", f"127.0.0.1:{self.mport}", "-loglevel", "warn"]
        if self.extra.get("transport") == "kafka":
            from voipflow.topics import ensure_topics

            self.topic = f"goflow2-bench-{self.port}"
            ensure_topics(self.extra["bootstrap"], {self.topic: 4})
            cmd += ["-transport", "kafka", "-transport.kafka.brokers", self.extra["bootstrap"]]
            cmd += ["-transport.kafka.topic", self.topic, "-transport.kafka.compression", "lz4"]
        else:
            self.out = self.workdir / f"goflow2.{fmt}"
            cmd += ["-transport", "file", "-transport.file", str(self.out)]
        self.log = open(self.workdir / "goflow2.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def _published(self) -> int:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.extra["bootstrap"])
        try:
            parts = consumer.partitions_for_topic(self.topic) or set()
            ends = consumer.end_offsets([TopicPartition(self.topic, p) for p in parts])
            return int(sum(ends.values()))
        finally:
            consumer.close()

    def ready(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.mport}/metrics")

    def counted(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0
        for line in text.splitlines():
            if line.startswith("goflow2_flow_process_nf_flowset_records_total{") and (
                'type="DataFlowSet"' in line
            ):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def settled(self, expected: int) -> None:
        assert self.proc is not None
        wait_idle(self.proc.pid)
        if self.extra.get("transport") == "kafka":
            self._records = self._published()
        else:
            self._records = self.counted()

    def records(self) -> int:
        return self._records


class NfcapdReceiver(Receiver):
    def start(self) -> None:
        self.flows = self.workdir / "nfcapd"
        self.flows.mkdir(exist_ok=True)
        self.log = open(self.workdir / "nfcapd.log", "wb")  # noqa: SIM115
        cmd = ["nfcapd", "-b", "127.0.0.1", "-p", str(self.port), "-w", str(self.flows)]
        cmd += ["-t", "3600", "-B", str(32 << 20)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        # nfcapd has no readiness signal: its socket shows up in /proc/net/udp.
        hexport = f":{self.port:04X} "
        return any(hexport in line for line in Path("/proc/net/udp").read_text().splitlines())

    def records(self) -> int:
        files = sorted(p for p in self.flows.rglob("nfcapd.*") if p.is_file())
        total = 0
        for f in files:
            out = subprocess.run(["nfdump", "-I", "-r", str(f)], capture_output=True, text=True)
            m = re.search(r"^Flows:\s+(\d+)", out.stdout, re.M)
            total += int(m.group(1)) if m else 0
        return total


# -- the run ------------------------------------------------------------------


@dataclass
class Result:
    stream: str
    receiver: str
    sent: int
    records: int
    cpu_s: float
    rss_mb: float
    send_s: float
    datagrams: int = 0

    @property
    def per_cpu_s(self) -> float:
        return self.records / self.cpu_s if self.cpu_s > 0 else float("nan")

    @property
    def us_per_datagram(self) -> float:
        """CPU microseconds per datagram sent (the cost per datagram)."""
        return 1e6 * self.cpu_s / self.datagrams if self.datagrams else float("nan")


def run_one(
    stream: str,
    receiver: str,
    packets: Stream,
    n: int,
    rate: float,
    bootstrap: str,
    settings: dict[str, str] | None = None,
    baseline: str = "",
) -> Result:
    # "voipflow-kafka@VOIPFLOW_X=1,VOIPFLOW_Y=2": the same receiver with more
    # settings, so variants can be compared within one run; "...~base": the
    # same receiver run from the --baseline checkout.
    name, base, _ = receiver.partition("~")
    repo = Path(baseline) if base and baseline else REPO
    kind, _, variant = name.partition("@")
    settings = {**(settings or {}), **dict(kv.split("=", 1) for kv in variant.split(",") if kv)}
    work = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    port = free_port("udp")
    factory: dict[str, Callable[[], Receiver]] = {
        "voipflow-kafka": lambda: VoipflowReceiver(
            receiver,
            port,
            work,
            extra={
                "output": "kafka",
                "bootstrap": bootstrap,
                "settings": settings or {},
                "repo": repo,
            },
        ),
        "voipflow-null": lambda: VoipflowReceiver(
            receiver, port, work, extra={"output": "null", "settings": settings or {}, "repo": repo}
        ),
        "goflow2": lambda: GoFlow2Receiver(receiver, port, work, extra={"format": "bin"}),
        "goflow2-json": lambda: GoFlow2Receiver(receiver, port, work, extra={"format": "json"}),
        "goflow2-kafka": lambda: GoFlow2Receiver(
            receiver, port, work, extra={"transport": "kafka", "bootstrap": bootstrap}
        ),
        "nfcapd": lambda: NfcapdReceiver(receiver, port, work),
    }
    rx = factory[kind]()
    rx.start()
    try:
        deadline = time.monotonic() + 60
        while not rx.ready():
            if time.monotonic() > deadline or (rx.proc and rx.proc.poll() is not None):
                raise RuntimeError(f"{receiver} did not start; see {work}")
            time.sleep(0.1)
        assert rx.proc is not None
        pid = rx.proc.pid
        cpu0 = wait_idle(pid, quiet_s=0.5)
        send_s = send(packets, port, rate, n / len(packets.datagrams))
        rx.settled(n)
        cpu1 = cpu_seconds(pid)
        rss = peak_rss_mb(pid)
    finally:
        rx.stop()
    records = rx.records()
    shutil.rmtree(work, ignore_errors=True)
    return Result(stream, receiver, n, records, cpu1 - cpu0, rss, send_s, len(packets.datagrams))


def _start_broker(workdir: Path) -> Any:
    from voipflow.broker import LocalBroker, LocalBrokerConfig, fetch_jars

    broker = LocalBroker(
        LocalBrokerConfig(jar_dir=fetch_jars(), state_dir=workdir, port=0, controller_port=0)
    )
    broker.start()
    return broker


def build_goflow2() -> bool:
    """``go install`` GoFlow2 from the Go module proxy into ``.cache/go``; True if built."""
    go = shutil.which("go")
    if go is None:
        return False
    cache = REPO / ".cache" / "go"
    env = dict(
        os.environ,
        GOBIN=str(cache / "bin"),
        GOMODCACHE=str(cache / "mod"),
        GOCACHE=str(cache / "build"),
    )
    print("building GoFlow2 with go install (once) ...", file=sys.stderr, flush=True)
    res = subprocess.run(
        [go, "install", "github.com/netsampler/goflow2/v2/cmd/goflow2@latest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
    return GOFLOW2.exists()


def goflow2_version() -> str:
    """The module version the binary was built from (``go version -m``)."""
    go = shutil.which("go")
    if go is None:
        return "?"
    res = subprocess.run([go, "version", "-m", str(GOFLOW2)], capture_output=True, text=True)
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["mod"] and len(parts) >= 3:
            return f"{parts[1]} {parts[2]}"
    return "?"


def table(results: list[Result]) -> str:
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.stream, r.receiver), []).append(r)
    lines = [
        f"{'stream':<12} {'receiver':<20} {'runs':>4} {'sent':>9} {'records':>9} {'loss':>8} "
        f"{'CPU s':>7} {'rec/CPU-s':>11} {'us/dgram':>8} {'vs GoFlow2':>10} {'vs nfcapd':>9} "
        f"{'RSS MB':>7}"
    ]
    # Each receiver is compared with GoFlow2 doing the same job: publishing to
    # Kafka for voipflow-kafka, writing protobuf to a file for the rest.
    meds = {k: statistics.median(r.per_cpu_s for r in rs) for k, rs in groups.items()}

    def peer(stream: str, receiver: str) -> float:
        want = "goflow2-kafka" if receiver.startswith("voipflow-kafka") else "goflow2"
        for name in (want, "goflow2", "goflow2-kafka"):
            if (stream, name) in meds:
                return meds[stream, name]
        return float("nan")

    for (stream, receiver), rs in groups.items():
        med = meds[stream, receiver]
        ratio = med / peer(stream, receiver)
        vs_nfcapd = med / meds.get((stream, "nfcapd"), float("nan"))
        lines.append(
            f"{stream:<12} {receiver:<20} {len(rs):>4} {rs[0].sent:>9} "
            f"{int(statistics.median(r.records for r in rs)):>9} "
            f"{int(statistics.median(r.sent - r.records for r in rs)):>8} "
            f"{statistics.median(r.cpu_s for r in rs):>7.2f} {med:>11,.0f} "
            f"{statistics.median(r.us_per_datagram for r in rs):>8.1f} {ratio:>10.2f} "
            f"{vs_nfcapd:>9.2f} {statistics.median(r.rss_mb for r in rs):>7.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="records per stream and run")
    ap.add_argument("--rate", type=float, default=200_000, help="records per second sent")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--exporters",
        type=int,
        default=1,
        help="distinct exporters (loopback source addresses, each with its own templates)",
    )
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--receivers", default=",".join(RECEIVERS))
    ap.add_argument("--bootstrap", default="", help="Kafka for voipflow-kafka (else started)")
    ap.add_argument("--json", help="write every run's figures here")
    ap.add_argument(
        "--baseline",
        default="",
        metavar="DIR",
        help="another checkout (e.g. a git worktree of main): each voipflow receiver also "
        "runs from there as <receiver>~base, in the same rounds",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="VOIPFLOW_X=V",
        help="a setting for the voipflow receivers (repeatable)",
    )
    args = ap.parse_args(argv)
    streams = [s for s in args.streams.split(",") if s]
    receivers = [r for r in args.receivers.split(",") if r]
    if args.baseline:
        with_base = []
        for r in receivers:
            with_base.append(r)
            if r.startswith("voipflow-"):
                with_base.append(f"{r}~base")
        receivers = with_base
    settings = dict(item.split("=", 1) for item in args.set)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # receivers stop in finally
    wants_goflow2 = any(r.startswith("goflow2") for r in receivers)
    needs_broker = any(r.startswith(("voipflow-kafka", "goflow2-kafka")) for r in receivers)
    if wants_goflow2 and not GOFLOW2.exists():
        build_goflow2()
    if wants_goflow2 and GOFLOW2.exists():
        print(f"# goflow2: {goflow2_version()}", flush=True)
    if not GOFLOW2.exists():
        for name in ("goflow2", "goflow2-json", "goflow2-kafka"):
            if name in receivers:
                print(f"goflow2 not built at {GOFLOW2}: {name} skipped", file=sys.stderr)
                receivers.remove(name)
    broker = None
    bootstrap = args.bootstrap
    if needs_broker and not bootstrap:
        broker = _start_broker(Path(tempfile.mkdtemp(prefix="bench-kafka-")))
        bootstrap = broker.bootstrap
    results: list[Result] = []
    try:
        for stream in streams:
            packets = make_stream(stream, args.records, args.exporters)
            print(
                f"# {stream}: {args.records} records in {len(packets.datagrams)} datagrams "
                f"from {args.exporters} exporter(s)",
                flush=True,
            )
            for rnd in range(args.rounds):
                for receiver in receivers:
                    r = run_one(
                        stream,
                        receiver,
                        packets,
                        args.records,
                        args.rate,
                        bootstrap,
                        settings,
                        args.baseline,
                    )
                    results.append(r)
                    print(
                        f"  round {rnd + 1} {receiver:<20} records={r.records} "
                        f"cpu={r.cpu_s:.2f}s rec/cpu-s={r.per_cpu_s:,.0f} "
                        f"us/dgram={r.us_per_datagram:.1f} "
                        f"rss={r.rss_mb:.0f}MB send={r.send_s:.1f}s",
                        flush=True,
                    )
    finally:
        if broker is not None:
            broker.stop()
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
