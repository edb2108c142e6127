"""The operator's sizing figure: flows per second one box takes end to end, and how late.

On this machine it starts what ``voipflow demo`` starts, with the demo's own
parts (:mod:`voipflow.demo.pipeline`, :mod:`voipflow.demo.database`): a Kafka
broker, the topics, ClickHouse (chdb), ``voipflow collect``, ``worker`` and
``sink``. In place of the simulator a sender in this process replays export
packets built before each step (IPFIX, one big data set per datagram;
flows to SIP, STUN and web ports from the demo's home networks), so sending
costs little. It raises the offered rate step by step and reports per step:

* sent (the sender's truth), published by the collector, consumed by the
  worker, VoIP rows inserted by the sink (Prometheus counters of each child);
* the worker's consumer lag on the flows topic at the step's end and after a
  short grace (in flows: messages times flows per message); a step is
  *sustained* when nothing was dropped and the worker's lag after the grace
  is below one second of traffic;
* p50 and p99 delay from export to the row in ``flows_voip`` and from a
  window's end to its row in ``voip_usage_1m`` (method below);
* CPU seconds and peak RSS per component (``/proc``).

At the end it stops the children, reads ``traffic.v1`` from Kafka (closed
traffic windows: ``flows`` and ``voip_flows`` per exporter) and ClickHouse,
and compares: lost = sent - (flows in traffic.v1 + flows the worker counted
late, which no window takes but whose VoIP rows are still written) + VoIP
flows the worker classified - rows of flows_voip, each part when positive;
duplicated = the negative parts. Late flows are printed apart: a worker
further behind than the lateness makes them.

Delays: chdb is opened by the sink alone while it runs, so rows carry no
insert time. The benchmark samples the sink's rows-inserted counter per
table every 0.2 s; afterwards the k-th row by ``time_received`` (the
collector's receive time, which is the export time on loopback) is taken as
inserted when the counter first passed k (inserts are in arrival order,
within a batch). The same for usage rows by window end. Resolution: the
sampling period. A window closes once event time passes its end plus the
lateness, and the sender pauses between steps: the windows ending in a
step's last ``lateness`` seconds wait for the next step's flows (after the
last step, for the idle timer). Their delay is that pause, so they are
counted and reported apart from the step's window delay.

The last line::

    sustained_flows_per_s=N p99_flow_to_row_ms=M lost=L duplicated=D

    python -m benchmarks.e2e_bench [--rates 20000,50000,100000] [--step-s 60]
        [--window-s 10] [--lateness-s 5] [--grace-s 5] [--set VOIPFLOW_X=V ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.collector_bench import Stream, cpu_seconds, flow_columns, peak_rss_mb, send
from voipflow.children import ChildError, ChildProcess
from voipflow.collectors.codec.encoder import make_encoder
from voipflow.demo.database import ClickHouseSchema, opened
from voipflow.demo.options import DemoOptions
from voipflow.demo.pipeline import DemoKafka, PipelineTopics, child_env, child_processes
from voipflow.demo.plan import DemoPlan, collector_listen
from voipflow.demo.printer import Printer
from voipflow.demo.watch import KafkaProbe
from voipflow.evaluation.chaos_load import city_networks
from voipflow.process import running
from voipflow.schemas.flowbatch import ipv4_to_addr16
from voipflow.schemas.topics import kafka_client_options
from voipflow.settings import Settings, load_settings
from voipflow.streams.app import partials_topic_name

SAMPLE_S = 0.2
#: The worker's CPU counter by part of its work (streams/metrics.py).
WORKER_PART = "voipflow_worker_cpu_seconds_total{{part={}}}"
PARTS = ("flow_step", "window_states", "state_writes")


def build_packets(rate: int, seconds: int, t0_ms: int, seed: int, homes: np.ndarray) -> Stream:
    """``rate * seconds`` flows as IPFIX datagrams, each second's flows ending in
    that second, from subscribers spread over the cities' networks."""
    enc = make_encoder(10, observation_domain_id=1)
    datagrams: list[bytes] = []
    for s in range(seconds):
        cols = flow_columns(rate, 4, seed + s)
        rng = np.random.default_rng(seed + s)
        host = rng.integers(1, 0xFFFF, rate, dtype=np.uint32)
        cols["src_addr"] = ipv4_to_addr16(homes[rng.integers(0, len(homes), rate)] | host)
        now = t0_ms + 1000 * s
        end = now - np.random.default_rng(seed + s).integers(0, 1000, rate)
        cols["flow_end_ms"] = end.astype(np.uint64)
        cols["flow_start_ms"] = (end - 2000).astype(np.uint64)
        datagrams += enc.encode(cols, now + 999)
    return Stream(datagrams, [0] * len(datagrams))


@dataclass
class Sampler:
    """The children's counters every :data:`SAMPLE_S` seconds, in a thread."""

    children: list[ChildProcess]
    samples: list[tuple[float, dict[str, dict[str, float]]]] = field(default_factory=list)
    stop_flag: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            t = time.time()
            self.samples.append((t, {c.name: c.metrics() for c in self.children}))
            self.stop_flag.wait(SAMPLE_S)

    def last(self, child: str, key: str) -> float:
        """The latest reading of ``key`` (a bare name is the sum over its labels)."""
        for _, m in reversed(self.samples):
            if m.get(child):
                return m[child].get(key, 0.0)
        return 0.0

    def curve(self, child: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        ts = [t for t, m in self.samples if m.get(child)]
        vs = [m[child].get(key, 0.0) for t, m in self.samples if m.get(child)]
        return np.array(ts), np.maximum.accumulate(np.array(vs)) if vs else np.zeros(0)


def inserted_at(times: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """When the k-th row (k < n) was first counted as inserted (NaN if never)."""
    idx = np.searchsorted(counts, np.arange(n) + 1, side="left")
    out = np.full(n, np.nan)
    ok = idx < len(times)
    out[ok] = times[idx[ok]]
    return out


def lag_flows(probe: KafkaProbe, sampler: Sampler, group: str, topic: str) -> int:
    """The worker's lag in flows: its lag in messages times the flows per
    message the collector published so far (a message is a batch of flows)."""
    messages = sum(probe.ends([topic]).values())
    flows = sampler.last("collect", "voipflow_collector_kafka_records_total")
    return round(probe.lag(group, [topic]) * flows / max(messages, 1))


def drained_now(probe: KafkaProbe, sampler: Sampler, settings: Settings) -> bool:
    """Worker caught up (flows and its own partials), its city and traffic windows
    closed, the sink committed both its topics."""
    sink_topics = [settings.kafka.voip_flows_topic, settings.kafka.usage_topic]
    worker_topics = [settings.kafka.flows_topic, partials_topic_name(settings.worker)]
    return bool(
        probe.lag(settings.worker.app_id, worker_topics) == 0
        and sampler.last("worker", "voipflow_worker_open_windows") == 0
        and sampler.last("worker", "voipflow_worker_open_traffic_windows") == 0
        and probe.lag(settings.sink.group_id, sink_topics) == 0
    )


def warm_up(
    sampler: Sampler, packets_port: int, homes: np.ndarray, settings: Settings, probe: KafkaProbe
) -> int:
    """A few flows through everything before the first step, so that start-up
    (the worker joining its group, the sink's first insert) is not measured;
    returns the flows sent."""
    key = f"voipflow_sink_rows_inserted_total{{table={settings.sink.flows_table}}}"
    deadline = time.time() + 180
    sent = 0
    while time.time() < deadline:
        packets = build_packets(1000, 1, int(time.time() * 1000), 0, homes)
        send(packets, packets_port, 1000, 1000 / len(packets.datagrams))
        sent += 1000
        time.sleep(2)
        caught_up = probe.lag(settings.worker.app_id, [settings.kafka.flows_topic]) == 0
        if sampler.last("sink", key) > 0 and caught_up:
            return sent
    raise SystemExit("the pipeline did not pass warm-up flows within 180 s; see its logs")


def dead(children: list[ChildProcess]) -> str:
    """Names of the children that are no longer running ('' if none)."""
    out = []
    for c in children:
        try:
            c.check()
        except ChildError:
            out.append(c.name)
    return ",".join(out)


def ms(x: float) -> float:
    """Rounded to whole milliseconds; NaN (no rows) stays NaN."""
    return float(round(x)) if np.isfinite(x) else float("nan")


def pct(values: np.ndarray, q: float) -> float:
    v = values[~np.isnan(values)]
    return float(np.percentile(v, q)) if len(v) else float("nan")


def read_topic(bootstrap: str, topic: str, settings: Settings) -> list[dict[str, Any]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        **kafka_client_options(settings.kafka),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        return [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="20000,50000,100000,200000", help="flows/s per step")
    ap.add_argument("--step-s", type=int, default=60, help="seconds per step")
    ap.add_argument("--window-s", type=int, default=10, help="usage window of the worker")
    ap.add_argument("--lateness-s", type=int, default=5, help="worker lateness")
    ap.add_argument("--grace-s", type=float, default=5.0, help="seconds after a step to catch up")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="VOIPFLOW_X=V",
        help="a setting for every part (repeatable), e.g. VOIPFLOW_SINK_BATCH_DELAY_S=2",
    )
    args = ap.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",") if r]
    extra: dict[str, str] = {}
    for item in args.set:
        name, eq, value = item.partition("=")
        if not eq or not name.startswith("VOIPFLOW_"):
            ap.error(f"--set {item!r}: expected VOIPFLOW_NAME=VALUE")
        extra[name] = value

    data_dir = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    for k in [k for k in os.environ if k.startswith("VOIPFLOW_")]:
        del os.environ[k]
    os.environ.update(
        VOIPFLOW_DATA_DIR=str(data_dir),
        VOIPFLOW_WORKER_LATENESS_S=str(args.lateness_s),
        VOIPFLOW_WORKER_IDLE_CLOSE_S="2",
        VOIPFLOW_LOG_LEVEL="WARNING",
    )
    os.environ.update(extra)
    if extra:
        print(f"# settings: {' '.join(f'{k}={v}' for k, v in extra.items())}", file=sys.stderr)
    settings = load_settings(None)
    plan = DemoPlan.from_settings(settings)
    options = DemoOptions(window_s=args.window_s)
    printer = Printer(sys.stderr)
    listen, target = collector_listen(settings)
    _host, port = target.rsplit(":", 1)
    kafka = DemoKafka(settings, plan.data_dir, printer)
    topics = PipelineTopics(settings, kafka)
    schema = ClickHouseSchema(settings, plan.data_dir, plan.cities_csv)
    try:
        homes = city_networks(plan.cities_csv)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    steps: list[dict[str, Any]] = []
    cpu: dict[str, float] = {}
    rss: dict[str, float] = {}
    load0 = os.getloadavg()
    with running([kafka, topics, schema]):
        assert kafka.pid is not None
        children = child_processes(plan, child_env(plan, options, kafka.bootstrap, listen))
        sampler = Sampler(children)
        probe = KafkaProbe(kafka.bootstrap, settings.kafka)
        flows_topic = settings.kafka.flows_topic
        with running(children):
            pids = {c.name: c.pid for c in children} | {"kafka": kafka.pid, "sender": os.getpid()}
            cpu0 = {n: cpu_seconds(p) for n, p in pids.items() if p}
            thread = threading.Thread(target=sampler.run, daemon=True)
            thread.start()
            seed = 1
            warm = warm_up(
                sampler, packets_port=int(port), homes=homes, settings=settings, probe=probe
            )
            # A first estimate of the build time, from a small build, so that a
            # first step at a high rate starts on time too.
            tb = time.time()
            build_packets(20_000, 5, int(tb * 1000), 0, homes)
            encode_per_flow_s = (time.time() - tb) / 100_000
            for rate in rates:
                tb = time.time()
                # The packets carry flow times from t0 on: building them must
                # end before t0, or every flow's event time trails the clock
                # by the overrun and every window closes that much later.
                lead = max(1.0, 1.5 * encode_per_flow_s * rate * args.step_s)
                t0 = int((time.time() + lead) * 1000)
                packets = build_packets(rate, args.step_s, t0, seed, homes)
                encode_per_flow_s = (time.time() - tb) / (rate * args.step_s)
                seed += args.step_s
                while time.time() * 1000 < t0:
                    time.sleep(0.01)
                late_start_s = time.time() - t0 / 1000
                sent0 = sampler.last("collect", "voipflow_collector_records_total")
                published0 = sampler.last("collect", "voipflow_collector_kafka_records_total")
                messages0 = sampler.last("collect", "voipflow_collector_kafka_messages_total")
                step_cpu0 = {n: cpu_seconds(p) for n, p in pids.items() if p}
                parts0 = {part: sampler.last("worker", WORKER_PART.format(part)) for part in PARTS}
                start = time.time()
                send(packets, int(port), rate, rate * args.step_s / len(packets.datagrams))
                end = time.time()
                # Cores each component used while the step was sent: where the
                # box's time goes at this rate (start-up and drain left out).
                cores = {
                    n: round((cpu_seconds(p) - step_cpu0[n]) / max(end - start, 1e-3), 2)
                    for n, p in pids.items()
                    if p
                }
                lag_end = lag_flows(probe, sampler, settings.worker.app_id, flows_topic)
                time.sleep(args.grace_s)
                # The worker's own split of its agents' thread (the rest of its
                # CPU is Kafka and Faust); read after the grace, as the sampler lags.
                parts_s = {
                    part: sampler.last("worker", WORKER_PART.format(part)) - parts0[part]
                    for part in PARTS
                }
                lag_after = lag_flows(probe, sampler, settings.worker.app_id, flows_topic)
                died = dead(children)
                dropped = sampler.last("collect", "voipflow_collector_buffer_dropped_records_total")
                decoded = sampler.last("collect", "voipflow_collector_records_total") - sent0
                published = sampler.last("collect", "voipflow_collector_kafka_records_total")
                messages = sampler.last("collect", "voipflow_collector_kafka_messages_total")
                per_message = (published - published0) / max(messages - messages0, 1)
                step = {
                    "rate": rate,
                    "sent": rate * args.step_s,
                    "send_s": round(end - start, 2),
                    # > 0: the flows' event time trailed the clock by this much.
                    "late_start_s": round(max(late_start_s, 0.0), 2),
                    "start": start,
                    "end": end,
                    "decoded": int(decoded),
                    "dropped_total": int(dropped),
                    "worker_lag_end": lag_end,
                    "worker_lag_after_grace": lag_after,
                    "flows_per_message": round(per_message),
                    "cores": cores,
                    "worker_parts_cpu_s": {k: round(v, 2) for k, v in parts_s.items()},
                    "died": died,
                    "sustained": bool(
                        not died
                        and dropped == 0
                        and decoded >= rate * args.step_s
                        and lag_after < rate
                    ),
                }
                steps.append(step)
                print(
                    f"step {rate:>8,} flows/s: sent {step['sent']:,} in {step['send_s']} s, "
                    f"decoded {step['decoded']:,} ({per_message:,.0f} per flows.v1 message), "
                    f"dropped {dropped:.0f}, worker lag "
                    f"{lag_end:,} flows at end, {lag_after:,} after {args.grace_s:.0f} s: "
                    f"{'sustained' if step['sustained'] else 'NOT sustained'}"
                    + (f" ({died} died: see {plan.log_dir})" if died else "")
                    + (
                        f"; started {late_start_s:.1f} s after its flows' first time"
                        if late_start_s > 0.1
                        else ""
                    ),
                    flush=True,
                )
                print(
                    "    cores while sending: " + ", ".join(f"{n} {c}" for n, c in cores.items()),
                    flush=True,
                )
                print(
                    "    worker CPU s by part (step and grace): "
                    + ", ".join(f"{k} {v:.1f}" for k, v in parts_s.items()),
                    flush=True,
                )
                if not step["sustained"]:
                    break
            # Drain: worker caught up, windows closed, sink committed.
            # The backlog may be large when the last step was not sustained:
            # give it time at 20,000 flows/s (a slow worker on a loaded box).
            sent_all = sum(s["sent"] for s in steps)
            deadline = time.time() + 60 + 3 * args.window_s + sent_all / 20_000
            drained = False
            while time.time() < deadline and not dead(children):
                if drained_now(probe, sampler, settings):
                    drained = True
                    break
                time.sleep(1)
            time.sleep(2 * SAMPLE_S + 1)
            late = int(sampler.last("worker", "voipflow_worker_late_records_total"))
            classified = int(sampler.last("worker", "voipflow_worker_voip_records_total"))
            # A process that died (its log says why) has no figures left.
            alive = {n: p for n, p in pids.items() if p and os.path.exists(f"/proc/{p}/stat")}
            cpu = {n: round(cpu_seconds(p) - cpu0[n], 1) for n, p in alive.items()}
            rss = {n: round(peak_rss_mb(p)) for n, p in alive.items()}
            sampler.stop_flag.set()
            thread.join()
        probe.close()
        traffic = read_topic(kafka.bootstrap, settings.kafka.traffic_topic, settings)
    load1 = os.getloadavg()
    with opened(settings, plan.data_dir) as ch:
        received = np.array(
            [
                r[0]
                for r in ch.query(
                    f"SELECT toUnixTimestamp64Milli(time_received) FROM "
                    f"{settings.sink.flows_table} ORDER BY 1"
                ).rows
            ],
            dtype=np.float64,
        )
        windows = ch.query(
            "SELECT toUnixTimestamp(window_start) + window_s, toUnixTimestamp64Milli(produced) "
            "FROM voip_usage_1m ORDER BY 1"
        ).rows
        window_end = np.array([r[0] for r in windows], dtype=np.float64)
        # The worker's part of a window's delay: when it produced the row.
        produced_after = np.array([r[1] for r in windows], dtype=np.float64) - window_end * 1000
    flows_key = f"voipflow_sink_rows_inserted_total{{table={settings.sink.flows_table}}}"
    t_rows, c_rows = sampler.curve("sink", flows_key)
    flow_delay = inserted_at(t_rows, c_rows, len(received)) * 1000 - received
    t_use, c_use = sampler.curve("sink", "voipflow_sink_rows_inserted_total{table=voip_usage_in}")
    win_delay = (inserted_at(t_use, c_use, len(window_end)) - window_end) * 1000
    best = 0
    p99_best = float("nan")
    for step in steps:
        m = (received >= step["start"] * 1000) & (received < step["end"] * 1000 + 1000)
        step["flows_voip_rows"] = int(m.sum())
        step["p50_flow_to_row_ms"] = ms(pct(flow_delay[m], 50))
        step["p99_flow_to_row_ms"] = ms(pct(flow_delay[m], 99))
        in_step = (window_end >= step["start"]) & (window_end < step["end"] + 1)
        # A window closes when event time passes its end plus the lateness.
        # The sender stops between steps, so a window ending in a step's
        # last `lateness` seconds waits for the next step's flows (or, after
        # the last step, for the idle timer): a gap in the traffic, not a
        # delay of the pipeline's. Those are reported apart.
        w = in_step & (window_end + args.lateness_s < step["end"])
        tail = in_step & ~w
        step["p50_window_to_row_ms"] = ms(pct(win_delay[w], 50))
        step["p99_window_to_row_ms"] = ms(pct(win_delay[w], 99))
        step["p50_window_to_produced_ms"] = ms(pct(produced_after[w], 50))
        step["p99_window_to_produced_ms"] = ms(pct(produced_after[w], 99))
        step["window_rows"] = int(w.sum())
        step["window_rows_after_traffic_stopped"] = int(tail.sum())
        step["p99_window_after_traffic_stopped_ms"] = ms(pct(win_delay[tail], 99))
        if step["sustained"]:
            best, p99_best = step["rate"], step["p99_flow_to_row_ms"]
        print(
            f"step {step['rate']:>8,} flows/s: flows_voip rows {step['flows_voip_rows']:,}; "
            f"export->row p50 {step['p50_flow_to_row_ms']} ms p99 "
            f"{step['p99_flow_to_row_ms']} ms; window end->row p50 "
            f"{step['p50_window_to_row_ms']} ms p99 {step['p99_window_to_row_ms']} ms "
            f"(produced by the worker: p50 {step['p50_window_to_produced_ms']} ms "
            f"p99 {step['p99_window_to_produced_ms']} ms; {step['window_rows']:,} usage rows); "
            f"{step['window_rows_after_traffic_stopped']:,} usage rows of windows whose end plus "
            f"the lateness fell after the step (closed by later traffic or the idle timer) "
            f"p99 {step['p99_window_after_traffic_stopped_ms']} ms"
        )
    sent = sum(s["sent"] for s in steps) + warm
    if not drained:
        print("NOT DRAINED within the deadline: lost and duplicated below are not final")
    t_flows = sum(int(m.get("flows", 0)) for m in traffic)
    t_voip = sum(int(m.get("voip_flows", 0)) for m in traffic)
    gap_a, gap_b = sent - t_flows - late, classified - len(received)
    lost = max(gap_a, 0) + max(gap_b, 0)
    duplicated = max(-gap_a, 0) + max(-gap_b, 0)
    print(
        f"truth: sent {sent:,}; traffic.v1 flows {t_flows:,}, voip_flows {t_voip:,}; "
        f"late (in no window) {late:,}; VoIP classified by the worker {classified:,}; "
        f"flows_voip rows {len(received):,}; voip_usage_1m rows {len(window_end):,}"
    )
    print(f"CPU s per component: {cpu}")
    print(f"peak RSS MB per component: {rss}")
    print(
        f"machine: {os.cpu_count()} cores; load average {load0[0]:.1f} before, {load1[0]:.1f} after"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"settings": extra, "steps": steps, "cpu": cpu, "rss": rss}, indent=1)
        )
    with contextlib.suppress(OSError):
        import shutil

        shutil.rmtree(data_dir)
    print(
        f"sustained_flows_per_s={best} p99_flow_to_row_ms={p99_best:.0f} "
        f"lost={lost} duplicated={duplicated}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
