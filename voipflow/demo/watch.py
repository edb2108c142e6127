"""The demo while it runs: progress lines, child watch, and the drain at the end.

Progress comes from the children's Prometheus endpoints (collector: records
acknowledged by Kafka; worker: VoIP records, usage rows published, open
windows; sink: rows inserted per table); this process never opens chdb while
the sink runs. Whether the pipeline has drained comes from Kafka itself: a
consumer group has caught up when its committed offsets equal the topics'
end offsets.

The drain, after the simulator stopped, step by step, each with a deadline:

1. the collector has decoded, handed over and had acknowledged the same
   number of records, twice in a row;
2. the worker's group has committed the whole flows topic;
3. the worker holds no open window and its group has committed the internal
   per-city topic (the idle close turns event time into wall-clock time for
   cities without traffic, so the last window closes at most one window
   width plus the lateness after the traffic stopped);
4. with ``--policy`` (:class:`voipflow.demo.enforcement.RulesWatch`): the
   evaluator's group has committed the usage topic, every rule it proposed
   in the run has an enforcement point's feedback on rule-events.v1, and
   the ledger's group has committed rules.v1 and rules-feedback.v1;
5. the sink's group has committed the voip-flows and usage topics (and
   rules.v1 and rule-events.v1 with ``--policy``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from voipflow.children import ChildProcess, tail
from voipflow.demo.enforcement import RulesWatch
from voipflow.demo.options import DemoOptions
from voipflow.demo.plan import DemoPlan
from voipflow.demo.printer import Printer
from voipflow.demo.simulator import SimulatorThread
from voipflow.schemas.kafka_security import KafkaSecurity, kafka_client_options
from voipflow.settings import Settings
from voipflow.streams.app import partials_topic_name


class KafkaProbe:
    """End offsets of topics and committed offsets of groups, for lag."""

    def __init__(self, bootstrap: str, security: KafkaSecurity | None = None) -> None:
        options = kafka_client_options(security) if security is not None else {}
        self.admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="voipflow-demo", **options
        )
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="voipflow-demo",
            enable_auto_commit=False,
            **options,
        )

    def ends(self, topics: list[str]) -> dict[Any, int]:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self.consumer.partitions_for_topic(t) or ())
        ]
        return dict(self.consumer.end_offsets(tps)) if tps else {}

    def lag(self, group: str, topics: list[str]) -> int:
        """Messages of ``topics`` that ``group`` has not committed yet."""
        ends = self.ends(topics)
        committed = self.admin.list_group_offsets(group).get(group, {})
        total = 0
        for tp, end in ends.items():
            om = committed.get(tp)
            done = om.offset if om is not None and om.offset >= 0 else 0
            total += max(0, end - done)
        return total

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def _n(metrics: dict[str, float], key: str) -> int:
    return int(metrics.get(key, 0.0))


class PipelineWatch:
    """Follows the children and the simulator; :meth:`follow` returns True if all drained."""

    def __init__(
        self,
        settings: Settings,
        options: DemoOptions,
        plan: DemoPlan,
        printer: Printer,
        bootstrap: str,
        children: list[ChildProcess],
        sim: SimulatorThread,
        rules: RulesWatch | None = None,
        more_children: list[ChildProcess] | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.plan = plan
        self.printer = printer
        self.bootstrap = bootstrap
        self.collector, self.worker, self.sink = children
        self.children = [*children, *(more_children or [])]
        self.rules = rules
        self.sim = sim
        self.figures: dict[str, Any] = {}
        self._next_line = 0.0
        self._every = options.progress_s
        self._last: dict[str, dict[str, float]] = {}
        self._previous: tuple[dict[str, int], float] = ({}, 0.0)
        self._probe: KafkaProbe | None = None

    # -- figures -----------------------------------------------------------------

    def _scrape(self) -> None:
        for c in self.children:
            m = c.metrics()
            if m:  # keep the last good reading of a child that is busy or stopping
                self._last[c.name] = m

    def counts(self) -> dict[str, int]:
        c = self._last.get("collect", {})
        w = self._last.get("worker", {})
        s = self._last.get("sink", {})
        flows_table = self.settings.sink.flows_table
        return {
            "sent": self.sim.records,
            "decoded": _n(c, "voipflow_collector_records_total"),
            "handed_over": _n(c, "voipflow_collector_output_records_total"),
            "published": _n(c, "voipflow_collector_kafka_records_total"),
            "dropped": _n(c, "voipflow_collector_buffer_dropped_records_total"),
            "decode_errors": _n(c, "voipflow_collector_decode_errors_total"),
            "worker_records": _n(w, "voipflow_worker_records_total"),
            "voip_classified": _n(w, "voipflow_worker_voip_records_total"),
            "usage_published": _n(w, "voipflow_worker_windows_published_total"),
            "open_windows": _n(w, "voipflow_worker_open_windows"),
            "late_records": _n(w, "voipflow_worker_late_records_total"),
            "rows_flows": _n(s, f"voipflow_sink_rows_inserted_total{{table={flows_table}}}"),
            "rows_usage": _n(s, "voipflow_sink_rows_inserted_total{table=voip_usage_in}"),
        }

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if now < self._next_line and not (force and self._next_line - now < self._every - 1):
            return  # not due (a forced line is skipped only if one was just printed)
        self._next_line = now + self._every
        self._scrape()
        k = self.counts()
        rate = self._rates(now, k)
        self.printer.say(
            f"sent {k['sent']:,} flows ({rate('sent')}) | published {k['published']:,} "
            f"({rate('published')}) | worker {k['worker_records']:,} ({rate('worker_records')}), "
            f"VoIP classified {k['voip_classified']:,} | "
            f"usage rows {k['usage_published']:,} ({k['open_windows']} windows open) | "
            f"ClickHouse {k['rows_flows']:,} VoIP flows ({rate('rows_flows')}), "
            f"{k['rows_usage']:,} usage rows | lag: worker "
            f"{max(0, k['published'] - k['worker_records']):,} flows, sink {self._sink_lag()}"
        )

    def _rates(self, now: float, k: dict[str, int]) -> Callable[[str], str]:
        """Per stage, flows per second since the previous progress line."""
        before, then = self._previous
        self._previous = (k, now)
        dt = now - then if then else 0.0

        def rate(key: str) -> str:
            if dt <= 0 or key not in before:
                return "-/s"
            return f"{max(0, k[key] - before[key]) / dt:,.0f}/s"

        return rate

    def _sink_lag(self) -> str:
        """Messages of voip-flows and usage the sink's group has not committed."""
        k = self.settings.kafka
        try:
            if self._probe is None:
                self._probe = KafkaProbe(self.bootstrap, k)
            lag = self._probe.lag(self.settings.sink.group_id, [k.voip_flows_topic, k.usage_topic])
        except (KafkaError, OSError) as exc:  # a progress line must not stop the demo
            return f"? ({type(exc).__name__})"
        return f"{lag:,} messages"

    def close(self) -> None:
        """Close the progress line's Kafka client."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def _tick(self, pause_s: float) -> None:
        """Watch the children for ``pause_s`` seconds, printing progress when due."""
        deadline = time.monotonic() + pause_s
        while True:
            for c in self.children:
                c.check()
            self._line()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.25, left))

    # -- phases ------------------------------------------------------------------

    def follow(self) -> bool:
        try:
            return self._follow()
        finally:
            self.close()

    def _follow(self) -> bool:
        started = time.monotonic()
        self._next_line = started + self.options.progress_s
        while self.sim.running:
            self._tick(0.5)
        if self.sim.error is not None:
            raise self.sim.error
        self.figures["simulate_s"] = time.monotonic() - started
        self.printer.say(
            f"simulator done: {self.sim.records:,} flows in {self.figures['simulate_s']:.0f} s; "
            "waiting for the pipeline to drain"
        )
        drained_at = time.monotonic()
        probe = KafkaProbe(self.bootstrap, self.settings.kafka)
        try:
            ok = self._drain(probe)
        finally:
            probe.close()
        self.figures["drain_s"] = time.monotonic() - drained_at
        self._scrape()
        self.figures["counts"] = self.counts()
        self._line(force=True)
        return ok

    def _wait(
        self, what: str, done: Callable[[], bool], timeout_s: float, child: ChildProcess
    ) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                self.printer.say(
                    f"gave up waiting after {timeout_s:.0f} s: {what}; "
                    f"the end of {child.log_file}:\n{tail(child.log_file, 20)}"
                )
                return False
            self._tick(0.5)
        return True

    def _named(self, *names: str) -> list[ChildProcess]:
        by_name = {c.name: c for c in self.children}
        return [by_name[n] for n in names]

    def _drain(self, probe: KafkaProbe) -> bool:
        s = self.settings
        k = s.kafka
        previous: list[tuple[int, int, int]] = []

        def collector_flushed() -> bool:
            # Its metrics are refreshed once a second: the same figures for a
            # few reads, all handed over and acknowledged (or counted as
            # dropped), and everything the simulator sent decoded, or, if UDP
            # lost some on the way, figures that stay put for longer.
            self._scrape()
            c = self.counts()
            now = (c["decoded"], c["handed_over"], c["published"] + c["dropped"])
            previous.append(now)
            if not now[0] == now[1] == now[2]:
                return False
            same = len(previous) - next(
                (i + 1 for i in range(len(previous) - 1, -1, -1) if previous[i] != now), 0
            )
            return same >= (3 if now[0] >= self.sim.records else 8)

        def worker_caught_up() -> bool:
            return probe.lag(s.worker.app_id, [k.flows_topic]) == 0

        def windows_closed() -> bool:
            self._scrape()
            if "worker" not in self._last or self.counts()["open_windows"]:
                return False
            return probe.lag(s.worker.app_id, [partials_topic_name(s.worker)]) == 0

        sink_lags: list[int] = []

        sink_topics = [k.voip_flows_topic, k.usage_topic]
        if self.rules is not None:
            sink_topics += self.rules.sink_topics()

        def sink_drained() -> bool:
            lag = probe.lag(s.sink.group_id, sink_topics)
            sink_lags.append(lag)
            return lag == 0 and len(sink_lags) >= 2 and sink_lags[-2] == 0

        window = self.options.window_s + self.plan.lateness_s + self.plan.idle_close_s
        steps: list[tuple[str, Callable[[], bool], float, ChildProcess]] = [
            ("the collector to publish what it decoded", collector_flushed, 30.0, self.collector),
            ("the worker to consume the flows topic", worker_caught_up, 120.0, self.worker),
            ("the worker to close its last windows", windows_closed, window + 60.0, self.worker),
        ]
        if self.rules is not None:
            rules, (evaluator, ledger) = self.rules, self._named("evaluator", "ledger")
            steps += [
                (
                    "the evaluator to read every usage window",
                    lambda: rules.evaluator_caught_up(probe),
                    60.0,
                    evaluator,
                ),
                (
                    "every rule to be applied and recorded",
                    lambda: rules.rules_answered(self.bootstrap),
                    s.ledger.feedback_timeout_s + 60.0,
                    ledger,
                ),
                (
                    "the ledger to read every rule and feedback",
                    lambda: rules.ledger_caught_up(probe),
                    60.0,
                    ledger,
                ),
            ]
        steps.append(("the sink to insert and commit", sink_drained, 60.0, self.sink))
        try:
            for what, done, timeout_s, child in steps:
                t = time.monotonic()
                if not self._wait(what, done, timeout_s, child):
                    return False
                self.figures[what] = time.monotonic() - t
        finally:
            if self.rules is not None:
                self.rules.close()
                self.figures["rules_on_kafka"] = self.rules.figures
        return True
