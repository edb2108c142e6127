"""``voipflow demo``: run the whole pipeline locally on simulated traffic.

The argparse layer: flags to :class:`voipflow.demo.DemoOptions`, errors to
one line and an exit status; :func:`voipflow.demo.run_demo` does the rest
(see :mod:`voipflow.demo` for what it starts and in which order). Exit status:
0 the table was printed and every simulated city with VoIP is in it; 1 the
pipeline failed or did not drain in time (the message says which part and
where its log is); 2 a bad setting or flag (one line naming it); 130
interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from voipflow.children import ChildError
from voipflow.settings import Settings

EPILOG = """\
what it starts: Kafka (VOIPFLOW_KAFKA_BOOTSTRAP if set, else a local broker
that already runs, else one of its own on free ports, state in
<data_dir>/demo/kafka), the topics, ClickHouse migrations and the city table,
then `voipflow collect`, `voipflow worker` and `voipflow sink` as child
processes (logs in <data_dir>/demo/logs/), then the simulator toward the
collector's UDP port (a free one, unless VOIPFLOW_COLLECTOR_LISTEN is set).
It prints progress every few seconds, waits for the pipeline to drain, stops
everything in reverse order and prints VoIP usage per city from ClickHouse,
compared with what the simulator sent (its truth file:
<data_dir>/demo/truth.json).

windows: production aggregates 60 s windows (VOIPFLOW_WORKER_WINDOW_S). The
demo gives its worker --window-s instead, so a two-minute run closes several
windows. Unless you set them, it also uses 20 s lateness
(VOIPFLOW_WORKER_LATENESS_S; the simulator, like a router, exports short
flows up to 15 s after they ended) and 2 s idle close
(VOIPFLOW_WORKER_IDLE_CLOSE_S): once traffic stops, the worker lets event time
follow the wall clock from 2 s after the last record, so the last window
closes at most one window plus the lateness and those 2 s after the end, and
the demo waits for it. The defaults (120 s at
1000 flows/s, 20 s windows) end in about three minutes.

enforcement: --policy FILE (e.g. examples/policies/demo.yaml) also starts the
policy evaluator (`voipflow policy run`), the ledger (`voipflow ledger`) and
an enforcement point (`voipflow enforce`, point id "demo"; the log backend
writes what it would do to <data_dir>/demo/enforce-actions.log). The demo then
waits until every rule the evaluator fired was applied by the point and
recorded by the ledger, and prints the rules of the run from ClickHouse under
the city table. --enforce-backend nftables (root only) installs them with
nftables in a network namespace the demo makes and removes
(VOIPFLOW_ENFORCE_NFT_NETNS to name another), never in this host's own.

Every other VOIPFLOW_ setting is passed on to the children as it is.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add = parser.add_argument
    add(
        "--duration",
        type=float,
        default=120.0,
        metavar="S",
        help="seconds of simulated traffic (default 120)",
    )
    add(
        "--rate",
        type=float,
        default=1000.0,
        metavar="FLOWS_PER_S",
        help="flow records per second the simulated routers export (default 1000)",
    )
    add(
        "--window-s",
        type=int,
        default=20,
        metavar="S",
        help="usage window width given to the worker for this run (default 20; "
        "production: 60, see below)",
    )
    add("--seed", type=int, default=1, help="simulator seed (default 1)")
    add(
        "--version",
        type=int,
        choices=(5, 9, 10),
        default=10,
        help="export format: NetFlow v5, v9 or IPFIX (10, default)",
    )
    add("--sampling", type=int, default=1, metavar="N", help="1-in-N packet sampling (default 1)")
    add(
        "--progress-s",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between progress lines (default 5)",
    )
    add("--json", type=Path, metavar="OUT", help="also write the final figures as JSON")
    add(
        "--policy",
        type=Path,
        metavar="FILE",
        help="also run the policy evaluator, the ledger and an enforcement point on this "
        "policy file or folder, and show the rules it fired (see below)",
    )
    add(
        "--enforce-backend",
        choices=("log", "nftables"),
        default="log",
        help="the enforcement point's backend with --policy (default log; nftables needs root)",
    )


def _check(args: argparse.Namespace) -> str | None:
    if not 1 <= args.duration <= 86400:
        return "--duration: between 1 and 86400 seconds"
    if not 1 <= args.rate <= 1_000_000:
        return "--rate: between 1 and 1000000 flows/s"
    if not 1 <= args.window_s <= 3600 or 3600 % args.window_s:
        return "--window-s: a divisor of 3600 seconds (1-6, 10, 12, 15, 20, 30, 60, ...)"
    if not 1 <= args.sampling <= 16383:
        return "--sampling: between 1 and 16383"
    if args.progress_s <= 0:
        return "--progress-s: must be positive"
    if args.policy is None:
        return "--enforce-backend: only with --policy" if args.enforce_backend != "log" else None
    from voipflow.demo.enforcement import check_backend
    from voipflow.enforcement.errors import EnforcementError
    from voipflow.enforcement.policy import load_policies

    try:
        load_policies(args.policy)
    except EnforcementError as exc:
        return f"--policy: {exc}"
    return check_backend(args.enforce_backend)


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here, not at the top: `voipflow` imports every command module
    # to build its parser, and the demo package brings in Faust, kafka-python
    # and the ClickHouse layer, which every other command would then pay for.
    from voipflow.demo import DemoError, DemoOptions, DemoSettingError, Printer, run_demo

    problem = _check(args)
    if problem:
        print(f"voipflow demo: {problem}", file=sys.stderr)
        return 2
    options = DemoOptions(
        duration_s=args.duration,
        rate=args.rate,
        window_s=args.window_s,
        seed=args.seed,
        version=args.version,
        sampling=args.sampling,
        progress_s=args.progress_s,
        json_out=args.json,
        policy=args.policy,
        enforce_backend=args.enforce_backend,
    )
    if "level" not in settings.log.model_fields_set:
        # The progress lines are the demo's output; its libraries' INFO lines
        # (topics created, broker ready...) would only repeat them.
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return run_demo(settings, options, Printer(sys.stdout))
    except DemoSettingError as exc:
        print(f"voipflow demo: bad setting: {exc}", file=sys.stderr)
        return 2
    except DemoError as exc:
        print(f"voipflow demo: {exc}", file=sys.stderr)
        return 1
    except ChildError as exc:
        print(
            f"voipflow demo: {exc}; everything was stopped. The end of its log "
            f"({exc.log_file}):\n{exc.log_tail}\n"
            "voipflow demo: what to do: read the log above (a `bad setting` line names the "
            "variable to fix), then run `voipflow demo` again; VOIPFLOW_LOG_LEVEL=DEBUG "
            "logs more.",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("voipflow demo: interrupted; everything was stopped", file=sys.stderr)
        return 130
