"""``voipflow decode FILE.pcap``: decode the NetFlow/IPFIX export packets in a capture.

For operators debugging an exporter and for differential tests: every UDP
datagram of the capture (to the given ports, or any port) is offered to the
decoder with its sender as exporter and its capture time as receive time;
packets that are not NetFlow/IPFIX are counted as decode errors and skipped.
Records go to stdout (``--jsonl``: one JSON object per line, the default;
``--json``: one array), a per-exporter summary to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from voipflow.collectors.codec.decoder import Decoder
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.collectors.outputs import records_as_dicts
from voipflow.collectors.pcapfile import CaptureError, iter_udp
from voipflow.schemas.flowbatch import addr_to_text
from voipflow.settings import Settings

#: Datagrams decoded per call (records of one template are decoded together).
CHUNK = 512


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pcap", type=Path, help="capture file (pcap or pcapng)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--jsonl", action="store_true", help="one JSON object per line (default)")
    fmt.add_argument("--json", action="store_true", help="one JSON array")
    parser.add_argument(
        "--port", type=int, action="append", default=[], metavar="N",
        help="only UDP datagrams to this port (repeatable; default: any port)",
    )  # fmt: skip


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _run(args, settings)
    except BrokenPipeError:  # `voipflow decode x.pcap | head`
        sys.stderr.close()
        return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        data = args.pcap.read_bytes()
        datagrams = [(d.payload, d.src, d.ts_ms) for d in iter_udp(data, args.port or None)]
    except (OSError, CaptureError) as exc:
        print(f"voipflow decode: {args.pcap}: {exc}", file=sys.stderr)
        return 1
    decoder = Decoder(TemplateCache(settings.collector.template_expiry_s),
                      settings.collector.decoder_config())  # fmt: skip
    totals: dict[tuple[bytes, int], dict[str, Any]] = {}
    out = sys.stdout
    first = True
    if args.json:
        out.write("[")
    for i in range(0, len(datagrams), CHUNK):
        res = decoder.decode(datagrams[i : i + CHUNK])
        for row in records_as_dicts(res.batch):
            text = json.dumps(row)
            if args.json:
                out.write(("\n" if first else ",\n") + text)
            else:
                out.write(text + "\n")
            first = False
        for key, st in res.stats.items():
            t = totals.setdefault(key, {"packets": 0, "records": 0, "errors": {}, "lost": 0})
            t["packets"] += st.packets
            t["records"] += st.records
            t["lost"] += st.sequence_lost
            t["version"] = st.netflow_version
            t["templates"] = st.templates
            t["held"] = st.held_sets
            t["sampling"] = st.sampling_rate
            for reason, n in st.errors.items():
                t["errors"][reason] = t["errors"].get(reason, 0) + n
    if args.json:
        out.write("\n]\n")
    print(f"{args.pcap}: {len(datagrams)} UDP datagrams", file=sys.stderr)
    for (exporter, domain), t in sorted(totals.items()):
        print(
            f"  exporter {addr_to_text(exporter)} domain {domain}: v{t['version']} "
            f"packets={t['packets']} records={t['records']} templates={t['templates']} "
            f"held_sets={t['held']} sampling=1/{t['sampling']} sequence_lost={t['lost']} "
            f"errors={t['errors'] or 0}",
            file=sys.stderr,
        )
    return 0
