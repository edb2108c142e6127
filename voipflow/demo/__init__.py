"""``voipflow demo``: the whole pipeline on one machine, on simulated traffic.

Starts, in this order, and stops in reverse (also after Ctrl-C or a failed
start, see :mod:`voipflow.process`):

1. Kafka: ``VOIPFLOW_KAFKA_BOOTSTRAP`` if set (it must answer within 10 s);
   else a local broker that already runs (``voipflow kafka start``, state in
   ``<data_dir>/kafka``); else a broker of the demo's own on free ports with
   its state in ``<data_dir>/demo/kafka``, stopped at the end.
2. The pipeline's topics.
3. ClickHouse: migrations and the city table (the demo's process opens chdb
   only here and after the sink has stopped; the sink owns it in between).
4. ``voipflow collect``, ``voipflow worker`` and ``voipflow sink`` as child
   processes with the same settings plus the demo's (below) in their
   environment, logs in ``<data_dir>/demo/logs/``.
5. With ``--policy FILE``: ``voipflow enforce`` (log backend, or nftables
   in a network namespace of the demo's own), ``voipflow ledger`` and
   ``voipflow policy run`` (the evaluator), children like the others
   (:mod:`voipflow.demo.enforcement`).
6. The simulator, in this process, toward the collector's UDP port.

When the simulator is done the demo waits, with deadlines, until the
collector has published everything, the worker has consumed it, every
window is closed (the worker's idle close lets event time follow the wall
clock once traffic stops) and the sink has committed both topics it reads;
then (with ``--policy``) until the evaluator has read every window and every
rule it proposed has been applied by the enforcement point and recorded by
the ledger; then it stops the children and prints VoIP usage per city from
ClickHouse next to what the simulator sent (:mod:`voipflow.demo.report`),
and the run's rules from ClickHouse (:mod:`voipflow.demo.rules`).

Settings the demo gives its children unless the user set them: the
collector listens on a free UDP port of 127.0.0.1, metrics on free ports,
the worker uses the shipped demo city table with its home networks,
``--window-s`` as window, 20 s lateness and 2 s idle close; on chdb the sink
serves SQL on a free loopback port (``VOIPFLOW_CLICKHOUSE_HTTP_LISTEN``; the
demo prints where), so ``voipflow db query`` works while the demo runs.
Everything else (topics, groups, ClickHouse) is the user's.

The parts, each given the settings, the options and the printer it needs
(none imports this package, so there is no circle)::

    options     DemoOptions: the command's flags
    printer     Printer: the progress lines and the report's text
    errors      DemoError, DemoSettingError
    plan        DemoPlan: directories and the worker settings the demo fills
                in; the collector's port; the checks before anything starts
    database    the demo's only way into ClickHouse; ClickHouseSchema
    pipeline    DemoKafka, PipelineTopics, the children and their environment
    simulator   SimulatorThread and its configuration
    watch       PipelineWatch: progress while it runs, the drain at the end
    report      the per-city table from ClickHouse next to the simulator's truth
    enforcement with --policy: the evaluator, ledger and point, their drain
    rules       with --policy: the run's rules from ClickHouse, as a table

Errors (:mod:`voipflow.demo.errors`)::

    DemoError              the demo could not run to the end; one line
    +-- DemoSettingError   a setting is wrong (names it); exit status 2
    voipflow.children.ChildError   a child failed to start or died
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from types import FrameType
from typing import Any

from voipflow.children import ChildProcess, peak_rss_bytes
from voipflow.demo.database import ClickHouseSchema, sql_endpoint_url
from voipflow.demo.enforcement import (
    EnforcementTopics,
    RulesWatch,
    actions_log,
    enforcement_children,
    enforcement_env,
)
from voipflow.demo.errors import DemoError, DemoSettingError
from voipflow.demo.options import DemoOptions
from voipflow.demo.pipeline import DemoKafka, PipelineTopics, child_env, child_processes
from voipflow.demo.plan import DemoPlan, collector_listen, demo_lock, preflight
from voipflow.demo.printer import Printer
from voipflow.demo.report import report
from voipflow.demo.rules import query_rules, rules_block
from voipflow.demo.simulator import SimulatorThread, simulator_config
from voipflow.demo.watch import PipelineWatch
from voipflow.process import running
from voipflow.settings import Settings

__all__ = ["DemoError", "DemoOptions", "DemoSettingError", "Printer", "run_demo"]


class _Stopping:
    """SIGINT and SIGTERM unwind the demo through ``KeyboardInterrupt``.

    Every ``running`` block on the way out stops what it started, in reverse.
    Once the demo is stopping (by a signal, or at its normal end), another
    signal only asks the user to wait, so the stops are not cut short.
    """

    def __init__(self, printer: Printer) -> None:
        self.printer = printer
        self.closing = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.closing:
            self.printer.line("voipflow demo: already stopping, please wait")
            return
        self.closing = True
        self.printer.say(f"{signal.Signals(signum).name}: stopping everything that was started")
        raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_stop(printer: Printer) -> Iterator[_Stopping]:
    stopping = _Stopping(printer)
    old = {s: signal.signal(s, stopping) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _say_sql_endpoint(plan: DemoPlan, say: Callable[[str], None], wait_s: float = 5.0) -> None:
    """Tell the user where to send SQL while the demo runs, once the sink serves it."""
    if not plan.sql_listen:
        return
    deadline = time.monotonic() + wait_s
    while (url := sql_endpoint_url(plan.data_dir)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if url is not None:
        say(
            f'SQL while it runs: voipflow db query "SELECT ..." (VOIPFLOW_DATA_DIR='
            f"{plan.data_dir}), or any ClickHouse HTTP client at {url}"
        )


def run_demo(settings: Settings, options: DemoOptions, printer: Printer) -> int:
    """One run of ``voipflow demo``; the exit status (0 all drained and reported, else 1).

    Raises :class:`DemoSettingError` for a bad setting, :class:`DemoError`
    if the demo could not run to the end, :class:`voipflow.children.ChildError`
    if a child failed, ``KeyboardInterrupt`` on SIGINT or SIGTERM; everything
    started is stopped by then.
    """
    plan = DemoPlan.from_settings(settings)
    with _signals_stop(printer) as stopping, demo_lock(plan.demo_dir):
        return _run(settings, options, printer, plan, stopping)


def _run(
    settings: Settings,
    options: DemoOptions,
    printer: Printer,
    plan: DemoPlan,
    stopping: _Stopping,
) -> int:
    say = printer.say
    listen, target = collector_listen(settings)
    preflight(settings, plan, listen)
    sim_config = simulator_config(plan, options, target)
    say(f"voipflow demo: state in {plan.demo_dir}, logs in {plan.log_dir}")
    since_ms = int(time.time() * 1000)
    kafka = DemoKafka(settings, plan.data_dir, printer)
    topics = PipelineTopics(settings, kafka)
    schema = ClickHouseSchema(settings, plan.data_dir, plan.cities_csv)
    rule_topics = [EnforcementTopics(settings, lambda: kafka.bootstrap)] if options.policy else []
    with running([kafka, topics, *rule_topics, schema]):
        say(f"kafka: {kafka.bootstrap} ({kafka.origin})")
        names = sorted(topics.partitions) + sorted(t for r in rule_topics for t in r.partitions)
        say(f"topics: {len(names)} ready ({', '.join(names)})")
        say(
            f"clickhouse: {schema.where}: {schema.applied} migrations applied, "
            f"{schema.cities} cities loaded"
        )
        env = child_env(plan, options, kafka.bootstrap, listen)
        children = child_processes(plan, env)
        more: list[Any] = []
        rules_watch = None
        nft_netns = ""
        if options.policy is not None:
            enf_env, netns = enforcement_env(settings, plan, options, env)
            nft_netns = enf_env.get("VOIPFLOW_ENFORCE_NFT_NETNS", "")
            more = [*([netns] if netns else []), *enforcement_children(plan, options, enf_env)]
            rules_watch = RulesWatch(settings, since_ms)
        sim = SimulatorThread(sim_config)
        watch = PipelineWatch(
            settings,
            options,
            plan,
            printer,
            kafka.bootstrap,
            children,
            sim,
            rules=rules_watch,
            more_children=[c for c in more if isinstance(c, ChildProcess)],
        )
        with running([*children, *more, sim]):
            say(
                f"started collector (udp {listen}), worker (window {options.window_s} s, "
                f"lateness {plan.lateness_s} s), sink; simulator: "
                f"{options.rate:,.0f} flows/s for {options.duration_s:.0f} s "
                f"to {target}"
            )
            if options.policy is not None:
                say(
                    f"started enforcement point ({options.enforce_backend} backend), ledger, "
                    f"policy evaluator ({options.policy})"
                )
            _say_sql_endpoint(plan, say)
            ok = watch.follow()
            stopping.closing = True
            say(
                "stopping simulator, "
                + ("evaluator, ledger, enforcement point, " if options.policy else "")
                + "sink, worker, collector"
            )
        figures = watch.figures
        rules_lines: list[str] = []
        if options.policy is not None:
            rule_rows = query_rules(settings, plan.data_dir, since_ms)
            figures["rules"] = [asdict(r) for r in rule_rows]
            rules_lines = rules_block(
                rule_rows, options.policy, options.enforce_backend, actions_log(plan), nft_netns
            )
        figures["peak_rss"] = {
            c.name: c.peak_rss for c in [*children, *more] if isinstance(c, ChildProcess)
        }
        figures["peak_rss"]["demo process"] = peak_rss_bytes(os.getpid())
        if kafka.pid is not None:
            figures["peak_rss"]["kafka"] = peak_rss_bytes(kafka.pid)
        good = report(settings, options, plan, printer, figures, rules_lines)
        if kafka.pid is not None:
            say("stopping the local Kafka broker")
    say(f"demo finished in {printer.elapsed_s:.0f} s")
    return 0 if ok and good else 1
