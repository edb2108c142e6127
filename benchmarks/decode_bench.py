"""Decode throughput: records per CPU-second, with the compiled core and with numpy.

    python -m benchmarks.decode_bench [--messages N] [--batch N] [--repeat N]
        [--cores compiled,numpy]

Builds realistic IPFIX export messages (1400-byte UDP payloads, the field set
of a router's typical flow template) with random record values, announces the
template once, then decodes the messages in calls of ``--batch`` datagrams
(as the collector does) and prints records per CPU-second of this process
(``time.process_time``) and CPU microseconds per datagram for the best of
``--repeat`` runs. Decoding only: no sockets, no Kafka. It also decodes the
small-set shape softflowd sends (IPFIX and NetFlow v9, 7 sets of 2 records
per datagram, templates in front of the data every 16 datagrams; built as
``collector_bench`` builds it), each stream once per codec core
(``DecoderConfig.compiled_core``, see ``collectors/codec/core.py``).
"""

from __future__ import annotations

import argparse
import struct
import time

import numpy as np

from benchmarks.collector_bench import make_stream
from voipflow.collectors.codec import core
from voipflow.collectors.codec.decoder import Decoder, DecoderConfig
from voipflow.collectors.codec.templates import TemplateCache
from voipflow.schemas.flowbatch import text_to_addr16

EXPORTER = text_to_addr16("192.0.2.1")

# (IE id, length): the usual router template
COMMON = [(7, 2), (11, 2), (4, 1), (6, 1), (5, 1), (1, 8), (2, 8), (152, 8), (153, 8),
          (10, 4), (14, 4), (16, 4), (17, 4), (61, 1)]  # fmt: skip
V4 = [(8, 4), (12, 4), *COMMON]
V6 = [(27, 16), (28, 16), *COMMON]


def messages(fields: list[tuple[int, int]], tid: int, count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    reclen = sum(n for _, n in fields)
    per_msg = (1400 - 16 - 4) // reclen
    tmpl_body = struct.pack(">HH", tid, len(fields)) + b"".join(
        struct.pack(">HH", ie, n) for ie, n in fields
    )
    tmpl = struct.pack(">HH", 2, 4 + len(tmpl_body)) + tmpl_body
    out = []
    seq = 0
    raw = rng.integers(0, 256, size=(count * per_msg, reclen), dtype=np.uint8)
    for i in range(count):
        body = raw[i * per_msg : (i + 1) * per_msg].tobytes()
        data = struct.pack(">HH", tid, 4 + len(body)) + body
        sets = (tmpl if i == 0 else b"") + data
        out.append(struct.pack(">HHIII", 10, 16 + len(sets), 1_700_000_000, seq, 1) + sets)
        seq += per_msg
    return out


def bench(name: str, msgs: list[bytes], batch: int, repeat: int, compiled: bool = True) -> None:
    best = 0.0
    records = 0
    for _ in range(repeat):
        dec = Decoder(TemplateCache(), DecoderConfig(compiled_core=compiled))
        dgs = [(m, EXPORTER, 1_700_000_000_000) for m in msgs]
        records = 0
        t0 = time.process_time()
        for i in range(0, len(dgs), batch):
            res = dec.decode(dgs[i : i + batch])
            records += len(res.batch)
        cpu = time.process_time() - t0
        best = max(best, records / cpu if cpu else 0.0)
    us = records / best / len(msgs) * 1e6 if best else 0.0
    print(
        f"{name} [{'compiled' if compiled else 'numpy'}]: {records} records in {len(msgs)} "
        f"messages, {best:,.0f} records/CPU-second, {us:.2f} us/datagram "
        f"(best of {repeat}, {batch} datagrams per call)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cores", default="compiled,numpy", help="codec cores to run, in turn")
    a = p.parse_args()
    cores = [c == "compiled" for c in a.cores.split(",") if c]
    if True in cores and not core.AVAILABLE:
        print(f"compiled core skipped: {core.BUILD_HINT}")
        cores = [c for c in cores if not c]
    streams = [
        ("IPFIX IPv4 template", messages(V4, 256, a.messages, 1)),
        ("IPFIX IPv6 template", messages(V6, 257, a.messages, 2)),
    ]
    small = a.messages * 14  # records: as many datagrams as --messages
    for kind in ("ipfix4-small", "v9-small"):
        streams.append((f"{kind} (7 sets of 2)", make_stream(kind, small).datagrams))
    for name, msgs in streams:
        for compiled in cores:
            bench(name, msgs, a.batch, a.repeat, compiled)


if __name__ == "__main__":
    main()
