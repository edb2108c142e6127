"""Where a worker's time goes, from a py-spy profile in raw (collapsed stacks) form.

Each sample is put in the first part below whose marker is in its stack, so
the flow step's own JSON encoding counts as the flow step, not as JSON; a
sample in none of them whose innermost frame is the selector counts as
polling, and the rest as the Faust, mode and asyncio machinery around the
agents. Used by ``benchmarks.worker_bench --profile``; also runs on its own:
``python -m benchmarks.profile_summary FILE``.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

#: (part, markers): a sample belongs to the first part with a marker in its stack.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("flow step (FlowPipeline.process)", ("FlowPipeline.process",)),
    ("import on the first batch", ("pandas/__init__",)),
    ("keyed agent: apply partial, close windows", ("_WindowStates.handle",)),
    ("keyed agent: state to and from JSON", ("DecodedStates", "json/")),
    ("keyed agent: table write", ("on_key_set", "send_changelog")),
    ("producer: compression", ("lz4_encode", "zstd_encode", "gzip_encode")),
    ("producer: build and send requests", ("aiokafka/producer",)),
    ("topic.send and delivery waits", ("Topic.send", "deliver", "Producer.send")),
    ("consumer: fetch and decode records", ("aiokafka/consumer", "_fetch_records", "lz4_decode")),
]
POLL = "event loop: select (poll)"
REST = "Faust/mode/asyncio machinery (dispatch, acks, commits, timers)"


def summarise(path: Path) -> list[tuple[str, float]]:
    """(part, share of samples) by share, largest first."""
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        total += n
        for part, markers in PARTS:
            if any(marker in stack for marker in markers):
                counts[part] += n
                break
        else:
            leaf = stack.rsplit(";", 1)[-1]
            counts[POLL if "select" in leaf else REST] += n
    return [(part, n / total) for part, n in counts.most_common()] if total else []


def main() -> int:
    for part, share in summarise(Path(sys.argv[1])):
        print(f"{share:6.1%}  {part}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
