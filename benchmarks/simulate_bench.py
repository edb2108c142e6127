"""How fast the simulator makes and sends NetFlow/IPFIX on this machine.

    python -m benchmarks.simulate_bench [--seconds S] [--rate R] [--json OUT]

Three figures per export version (5, 9, 10):

* model: flow records the traffic model generates per CPU-second;
* encode: records encoded into export datagrams per CPU-second;
* send: the whole simulator run unpaced (model + encode + one ``sendto`` per
  datagram from 12 exporter sockets) toward a loopback UDP socket that
  nothing reads (the kernel drops what overflows it, so only the sender is
  measured): flows/s and datagrams/s of wall time, and CPU seconds used.

A paced run at ``--rate`` then shows whether real-time sending keeps up.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from voipflow.collectors.codec.encoder import make_encoder  # noqa: E402
from voipflow.simulate.addresses import (  # noqa: E402
    default_provider_dirs,
    load_cities,
    load_providers,
)
from voipflow.simulate.config import SimulatorConfig  # noqa: E402
from voipflow.simulate.runner import DEFAULT_CITIES, Simulator  # noqa: E402
from voipflow.simulate.traffic import TrafficModel  # noqa: E402

T0 = 1_700_000_000_000


def sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind(("127.0.0.1", 0))
    return s


def bench_model_and_encode(version: int, rate: float, seconds: float) -> dict[str, Any]:
    cfg = SimulatorConfig(rate=rate, version=version, send=False, truth=Path("x.json"))
    model = TrafficModel(
        cfg, load_cities(DEFAULT_CITIES), load_providers(default_provider_dirs(REPO)), T0
    )
    ticks = []
    c0 = time.process_time()
    for i in range(int(seconds * 10)):
        ticks.append(model.tick(T0 + 100 * (i + 1)))
    model_cpu = time.process_time() - c0
    records = sum(len(t) for t in ticks)
    enc = make_encoder(version, boot_time_ms=T0 - 86_400_000)
    c0 = time.process_time()
    datagrams = 0
    for i, t in enumerate(ticks):
        datagrams += len(enc.encode(t.columns, T0 + 100 * (i + 1)))
    enc_cpu = time.process_time() - c0
    return {
        "records": records,
        "model_records_per_cpu_s": records / model_cpu,
        "encode_records_per_cpu_s": records / enc_cpu,
        "encode_datagrams": datagrams,
        "records_per_datagram": records / datagrams,
    }


def bench_send(version: int, rate: float, seconds: float, unpaced: bool) -> dict[str, Any]:
    s = sink()
    port = s.getsockname()[1]
    cfg = SimulatorConfig(
        target=f"127.0.0.1:{port}",
        rate=rate,
        duration_s=seconds,
        version=version,
        unpaced=unpaced,
        start_ms=T0 if unpaced else None,
        truth=None,
    )
    sim = Simulator(cfg)
    sim.start()
    try:
        c0, w0 = time.process_time(), time.monotonic()
        p = sim.run()
        cpu, wall = time.process_time() - c0, time.monotonic() - w0
    finally:
        sim.stop()
        s.close()
    return {
        "flows": p.records,
        "datagrams": p.datagrams,
        "send_errors": p.send_errors,
        "wall_s": wall,
        "cpu_s": cpu,
        "flows_per_s": p.records / wall,
        "datagrams_per_s": p.datagrams / wall,
        "flows_per_cpu_s": p.records / cpu,
        "behind_s": p.behind_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per run")
    ap.add_argument("--rate", type=float, default=200_000.0, help="flows/s of the runs")
    ap.add_argument("--paced-rate", type=float, default=100_000.0, help="rate of the paced run")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    results: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "versions": {}}
    print(f"simulator benchmark: {args.seconds:g} simulated s at {args.rate:,.0f} flows/s")
    print(
        f"{'version':>7} {'model rec/cpu-s':>16} {'encode rec/cpu-s':>17} "
        f"{'send flows/s':>13} {'send dgram/s':>13} {'flows/cpu-s':>12} {'rec/dgram':>9}"
    )
    for version in (5, 9, 10):
        me = bench_model_and_encode(version, args.rate, args.seconds)
        sd = bench_send(version, args.rate, args.seconds, unpaced=True)
        results["versions"][version] = {**me, "send": sd}
        print(
            f"{version:>7} {me['model_records_per_cpu_s']:>16,.0f} "
            f"{me['encode_records_per_cpu_s']:>17,.0f} {sd['flows_per_s']:>13,.0f} "
            f"{sd['datagrams_per_s']:>13,.0f} {sd['flows_per_cpu_s']:>12,.0f} "
            f"{me['records_per_datagram']:>9.1f}"
        )
    paced = bench_send(10, args.paced_rate, min(args.seconds, 15.0), unpaced=False)
    results["paced"] = {"rate": args.paced_rate, **paced}
    print(
        f"paced IPFIX at {args.paced_rate:,.0f} flows/s for {paced['wall_s']:.1f} s: "
        f"{paced['flows_per_s']:,.0f} flows/s, {paced['datagrams_per_s']:,.0f} datagrams/s, "
        f"CPU {100 * paced['cpu_s'] / paced['wall_s']:.0f}% of a core, "
        f"{paced['behind_s']:.2f} s behind at the end"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
