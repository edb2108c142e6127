"""Memory and cost of the classifier's per-exporter session context at a million hosts.

:class:`voipflow.streams.session.HostSessions` keeps, per exporter, the subscriber
hosts that are in a calling app's session (64-bit host hash, app code, last
seen). This fills one with ``--hosts`` distinct hosts in batches of
``--batch`` (as a busy exporter's batches would open them) and prints its
size in bytes, the peak Python allocation while filling (tracemalloc), and
the CPU time per batch of opening sessions and of looking a batch's records
up.

Usage: ``python -m benchmarks.session_memory [--hosts N] [--batch N]``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from voipflow.streams.flowpairs import mix64
from voipflow.streams.session import HostSessions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5_000, help="hosts opened per batch")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    hosts = mix64(np.arange(1, args.hosts + 1, dtype=np.uint64))
    sessions = HostSessions(max_hosts=max(args.hosts, 1))
    tracemalloc.start()
    t0 = time.process_time()
    batches = 0
    for at in range(0, args.hosts, args.batch):
        chunk = hosts[at : at + args.batch]
        # one batch a second: all within a session's lifetime
        seen = np.full(len(chunk), 1_700_000_000_000 + batches * 1000, dtype=np.uint64)
        sessions.open(chunk, rng.integers(1, 20, len(chunk)).astype(np.uint8), seen)
        batches += 1
    open_s = time.process_time() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    queries = rng.choice(hosts, 2 * args.batch)
    t1 = time.process_time()
    rounds = 50
    for _ in range(rounds):
        sessions.lookup(queries[: args.batch], queries[args.batch :])
    lookup_s = (time.process_time() - t1) / rounds
    print(
        f"hosts={len(sessions):,} bytes={sessions.nbytes:,} "
        f"({sessions.nbytes / max(len(sessions), 1):.0f} per host) "
        f"peak_alloc_while_filling={peak:,} bytes"
    )
    print(
        f"open: {open_s / batches * 1000:.2f} ms CPU per batch of {args.batch} new hosts "
        f"at up to {args.hosts:,} hosts; lookup: {lookup_s * 1000:.2f} ms CPU per batch "
        f"of {args.batch} records (both ends)"
    )


if __name__ == "__main__":
    main()
