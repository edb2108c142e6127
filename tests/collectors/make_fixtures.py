"""Regenerate the export fixtures in ``data/`` (run by hand, not by pytest).

    CORPUS_DIR=../shared/corpus/ndpi python -m tests.collectors.make_fixtures

Each fixture is a pcap of the datagrams a real exporter sent for a corpus
capture (raw-IP link, 127.0.0.1:40000 -> 127.0.0.1:2055), plus a JSON file
with the records nfdump decoded from the same datagrams (in the comparison
form of ``test_differential``), so decoding tests run fast and without the
exporters.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tests.collectors import exporters as ex
from tests.collectors import reference_decoders as rd
from tests.collectors.compare import nfdump_rows

DATA = Path(__file__).parent / "data"
CORPUS = Path(os.environ.get("CORPUS_DIR", "../shared/corpus/ndpi")) / "pcap"

#: name -> (capture, exporter, version, extra args)
FIXTURES = {
    "softflowd-v5-whatsapp": ("whatsapp_login_call.pcap", "softflowd", "5", ()),
    "softflowd-v9-teams": ("teams.pcap", "softflowd", "9", ()),
    "softflowd-ipfix-http-ipv6": ("http_ipv6.pcap", "softflowd", "10", ()),
    "softflowd-ipfix-biflow-wa-voice": ("wa_voice.pcap", "softflowd", "10", ("-b",)),
    "softflowd-ipfix-sampled-signal": ("signal.pcap", "softflowd", "10", ("-s", "10")),
    "pmacct-ipfix-viber": ("viber.pcap", "pmacct", "10", ()),
    "pmacct-v9-zoom": ("zoom.pcap", "pmacct", "9", ()),
}


def main() -> None:
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (capture, tool, version, extra) in FIXTURES.items():
            pcap = CORPUS / capture
            if tool == "softflowd":
                dgs = ex.softflowd_export(pcap, version, Path(tmp), *extra)
            else:
                dgs = ex.pmacct_export(pcap, int(version), Path(tmp))
            rd.to_pcap(dgs, DATA / f"{name}.pcap")
            ordered = not name.startswith("softflowd-ipfix")
            wrap = name.startswith("softflowd-v9")
            rows = nfdump_rows(rd.nfdump_decode(dgs, Path(tmp)), ordered, wrap, True)
            doc = {
                "capture": capture,
                "exporter": f"{tool} version {version} {' '.join(extra)}".strip(),
                "ordered_times": ordered,
                "times_mod_2_32": wrap,
                "nfdump_rows": sorted([list(k), v] for k, v in rows.items()),
            }
            (DATA / f"{name}.json").write_text(json.dumps(doc, indent=0) + "\n")
            print(name, len(dgs), "datagrams", sum(rows.values()), "records")


if __name__ == "__main__":
    main()
