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
5. The simulator, in this process, toward the collector's UDP port.

When the simulator is done the demo waits, with deadlines, until the
collector has published everything, the worker has consumed it, every
window is closed (the worker's idle close lets event time follow the wall
clock once traffic stops) and the sink has committed both topics it reads;
then it stops the children and prints VoIP usage per city from ClickHouse
next to what the simulator sent (:mod:`voipflow.demo.report`).

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
from types import FrameType

from voipflow.children import peak_rss_bytes
from voipflow.demo.database import ClickHouseSchema, sql_endpoint_url
from voipflow.demo.errors import DemoError, DemoSettingError
from voipflow.demo.options import DemoOptions
from voipflow.demo.pipeline import DemoKafka, PipelineTopics, child_env, child_processes
from voipflow.demo.plan import DemoPlan, collector_listen, demo_lock, preflight
from voipflow.demo.printer import Printer
from voipflow.demo.report import report
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
    kafka = DemoKafka(settings, plan.data_dir, printer)
    topics = PipelineTopics(settings, kafka)
    schema = ClickHouseSchema(settings, plan.data_dir, plan.cities_csv)
    with running([kafka, topics, schema]):
        say(f"kafka: {kafka.bootstrap} ({kafka.origin})")
        say(f"topics: {len(topics.partitions)} ready ({', '.join(sorted(topics.partitions))})")
        say(
            f"clickhouse: {schema.where}: {schema.applied} migrations applied, "
            f"{schema.cities} cities loaded"
        )
        children = child_processes(plan, child_env(plan, options, kafka.bootstrap, listen))
        sim = SimulatorThread(sim_config)
        watch = PipelineWatch(settings, options, plan, printer, kafka.bootstrap, children, sim)
        with running([*children, sim]):
            say(
                f"started collector (udp {listen}), worker (window {options.window_s} s, "
                f"lateness {plan.lateness_s} s), sink; simulator: "
                f"{options.rate:,.0f} flows/s for {options.duration_s:.0f} s "
                f"to {target}"
            )
            _say_sql_endpoint(plan, say)
            ok = watch.follow()
            stopping.closing = True
            say("stopping simulator, sink, worker, collector")
        figures = watch.figures
        figures["peak_rss"] = {c.name: c.peak_rss for c in children}
        figures["peak_rss"]["demo process"] = peak_rss_bytes(os.getpid())
        if kafka.pid is not None:
            figures["peak_rss"]["kafka"] = peak_rss_bytes(kafka.pid)
        good = report(settings, options, plan, printer, figures)
        if kafka.pid is not None:
            say("stopping the local Kafka broker")
    say(f"demo finished in {printer.elapsed_s:.0f} s")
    return 0 if ok and good else 1
