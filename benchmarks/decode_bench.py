"""Decode throughput: IPFIX records per CPU-second, IPv4 and IPv6 templates.

    python -m benchmarks.decode_bench [--messages N] [--batch N] [--repeat N]

Builds realistic IPFIX export messages (1400-byte UDP payloads, the field set
of a router's typical flow template) with random record values, announces the
template once, then decodes the messages in calls of ``--batch`` datagrams
(as the collector does) and prints records per CPU-second of this process
(``time.process_time``) for the best of ``--repeat`` runs. Decoding only: no
sockets, no Kafka.
"""

from __future__ import annotations

import argparse
import struct
import time

import numpy as np

from voipflow.collectors.codec.decoder import Decoder
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


def bench(name: str, msgs: list[bytes], batch: int, repeat: int) -> None:
    best = 0.0
    records = 0
    for _ in range(repeat):
        dec = Decoder(TemplateCache())
        dgs = [(m, EXPORTER, 1_700_000_000_000) for m in msgs]
        records = 0
        t0 = time.process_time()
        for i in range(0, len(dgs), batch):
            res = dec.decode(dgs[i : i + batch])
            records += len(res.batch)
        cpu = time.process_time() - t0
        best = max(best, records / cpu if cpu else 0.0)
    print(
        f"{name}: {records} records in {len(msgs)} messages, {best:,.0f} records/CPU-second "
        f"(best of {repeat}, {batch} datagrams per call)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    bench("IPFIX IPv4 template", messages(V4, 256, a.messages, 1), a.batch, a.repeat)
    bench("IPFIX IPv6 template", messages(V6, 257, a.messages, 2), a.batch, a.repeat)


if __name__ == "__main__":
    main()
