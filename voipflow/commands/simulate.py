"""``voipflow simulate``: send realistic NetFlow/IPFIX for a set of cities.

Progress (flows sent, rate, elapsed) goes to stderr once a second; Ctrl-C or
SIGTERM stops cleanly (sockets closed, truth file written).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from voipflow.settings import Settings
from voipflow.simulate.addresses import SimulatorDataError
from voipflow.simulate.config import SimulatorConfig
from voipflow.simulate.runner import Progress, Simulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--target", default="127.0.0.1:2055", metavar="HOST:PORT", help="collector address")
    add(
        "--rate",
        type=float,
        default=1000.0,
        metavar="FLOWS_PER_S",
        help="flow records per second before sampling (default 1000)",
    )
    add(
        "--duration",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to run, 0 = until Ctrl-C (default 60)",
    )
    add(
        "--version",
        type=int,
        choices=(5, 9, 10),
        default=10,
        help="NetFlow v5, v9 or IPFIX (10, default)",
    )
    add("--sampling", type=int, default=1, metavar="N", help="1-in-N packet sampling")
    add("--cities", type=Path, metavar="FILE", help="city table CSV (default: the demo table)")
    add("--providers", type=Path, metavar="DIR", help="provider range files (<name>.txt)")
    add("--seed", type=int, default=1, help="random seed (default 1)")
    add("--truth", type=Path, metavar="OUT.json", help="write what was sent per city x app")
    add("--pcap", type=Path, metavar="OUT.pcap", help="also write the datagrams to a pcap")
    add("--no-send", action="store_true", help="do not send (with --pcap/--truth)")
    add("--exporters-per-city", type=int, default=1, metavar="N")
    add("--subscribers-per-city", type=int, default=2000, metavar="N")
    add(
        "--active-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="long flows are exported in slices of S seconds (default 60)",
    )
    add("--voip-share", type=float, default=0.15, help="share of flow records that are VoIP")
    add(
        "--ipv6-share",
        type=float,
        default=0.25,
        help="share of sessions over IPv6 (v9/IPFIX; cities with an IPv6 prefix)",
    )
    add("--start-ms", type=int, metavar="MS", help="simulated start time (UTC ms)")
    add("--unpaced", action="store_true", help="as fast as possible, not in real time")
    add("--quiet", action="store_true", help="no progress on stderr")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        target=args.target,
        rate=args.rate,
        duration_s=args.duration,
        version=args.version,
        sampling=args.sampling,
        cities=args.cities,
        providers=args.providers,
        seed=args.seed,
        truth=args.truth,
        pcap=args.pcap,
        send=not args.no_send,
        exporters_per_city=args.exporters_per_city,
        subscribers_per_city=args.subscribers_per_city,
        active_timeout_s=args.active_timeout,
        voip_share=args.voip_share,
        ipv6_share=args.ipv6_share,
        start_ms=args.start_ms,
        unpaced=args.unpaced,
    )


def _flag(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "?"
    return "--" + name.removesuffix("_s").replace("_", "-")


def _show(p: Progress, tty: bool, final: bool = False) -> None:
    behind = f", {p.behind_s:.1f} s behind" if p.behind_s > 1 else ""
    errors = f", {p.send_errors:,} send errors" if p.send_errors else ""
    line = (
        f"simulate: {p.elapsed_s:7.1f} s  {p.records:>12,} flows  {p.rate:>10,.0f} flows/s  "
        f"{p.datagrams:>10,} datagrams  {p.active_calls:,} calls{behind}{errors}"
    )
    end = "\n" if final or not tty else ""
    sys.stderr.write(("\r" if tty else "") + line + end)
    sys.stderr.flush()


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        err = exc.errors()[0]
        print(f"voipflow simulate: {_flag(err['loc'])}: {err['msg']}", file=sys.stderr)
        return 2
    sim = Simulator(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sim.request_stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tty = sys.stderr.isatty()
    try:
        try:
            sim.start()
        except (SimulatorDataError, OSError) as exc:
            print(f"voipflow simulate: {exc}", file=sys.stderr)
            return 2
        show = None if args.quiet else (lambda p: _show(p, tty))
        final = sim.run(show, progress_every_s=1.0 if tty else 5.0)
    finally:
        sim.stop()
        for s, h in old.items():
            signal.signal(s, h)
    if not args.quiet:
        _show(final, tty, final=True)
        if config.truth is not None:
            print(f"simulate: truth written to {config.truth}", file=sys.stderr)
    return 0
