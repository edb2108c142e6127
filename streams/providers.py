"""VoIP provider address ranges: the shipped data files, their loading and refresh.

Each ``data/providers/<provider>.txt`` holds one CIDR per line after a header
of ``# key: value`` lines (``provider``, ``app``, ``voip``, ``source``,
``date``, ``origin``; see ``data/providers/README.md``). :func:`load_providers`
builds one :class:`~streams.prefixes.PrefixTable` whose value is the index of
the provider, so a whole batch's peers are looked up at once.

:func:`refresh_provider` fetches a provider's list again from the origin named
in its header and rewrites the file with today's date, keeping the header. It
is what ``voipflow providers refresh`` runs; fetching goes through
``urllib`` with a timeout, and a failed or empty fetch leaves the file alone.

Errors::

    ProviderError
     +-- ProviderFileError    a data file that does not parse (names file, line)
     +-- ProviderFetchError   an origin that cannot be fetched or parsed
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from voipflow.streams.prefixes import PrefixError, PrefixTable, parse_prefix_lines

#: The ranges shipped with the project.
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "data" / "providers"
RIPESTAT_URL = "https://stat.ripe.net/data/announced-prefixes/data.json?resource={asn}"


class ProviderError(Exception):
    """Base class of provider range errors."""


class ProviderFileError(ProviderError):
    """A provider data file that does not parse."""


class ProviderFetchError(ProviderError):
    """An origin that cannot be fetched or gives no prefixes."""


#: Values of a provider file's ``voip`` header: the ranges are VoIP evidence
#: (``yes``), evidence only for flows that carry call media (``media``: the
#: networks also carry the app's chat, so only what a call looks like counts),
#: or listed for reference (``no``).
VOIP_MODES = ("yes", "media", "no")


@dataclass(slots=True)
class Provider:
    name: str
    app: str
    voip: bool  # the ranges are VoIP evidence at all (``yes`` or ``media``)
    header: dict[str, str] = field(default_factory=dict)
    prefixes: list[str] = field(default_factory=list)
    media_only: bool = False  # ``voip: media``: evidence only with call media statistics


def read_provider(path: Path) -> Provider:
    """Parse one provider file: header keys and the CIDRs."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProviderFileError(f"{path}: {exc}") from exc
    header: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            continue
        key, sep, value = line.lstrip("#").partition(":")
        if sep and key.strip().isidentifier() and key.strip() not in header:
            header[key.strip()] = value.strip()
    prefixes = parse_prefix_lines(text)
    for i, p in enumerate(prefixes):
        try:
            ipaddress.ip_network(p, strict=False)
        except ValueError as exc:
            raise ProviderFileError(f"{path}: entry {i + 1}: {p!r} is not a CIDR") from exc
    name = header.get("provider", path.stem)
    app = header.get("app", name).lower()
    mode = header.get("voip", "yes").lower()
    mode = {"true": "yes", "1": "yes", "false": "no", "0": "no"}.get(mode, mode)
    if mode not in VOIP_MODES:
        raise ProviderFileError(f"{path}: voip: {mode!r} is not one of {', '.join(VOIP_MODES)}")
    return Provider(name, app, mode != "no", header, prefixes, media_only=mode == "media")


@dataclass(slots=True)
class ProviderRanges:
    """All providers of a folder and one lookup table over them."""

    providers: list[Provider]
    table: PrefixTable

    @property
    def apps(self) -> list[str]:
        return [p.app for p in self.providers]


def load_providers(folder: Path | None = None) -> ProviderRanges:
    """Every ``*.txt`` of ``folder`` (the shipped ranges by default)."""
    folder = folder or DEFAULT_DIR
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise ProviderFileError(f"{folder}: no provider range files (*.txt)")
    providers = [read_provider(f) for f in files]
    # A prefix in two lists (WhatsApp's servers inside Meta's networks) keeps
    # the more specific provider: the longest prefix wins anyway, and for equal
    # prefixes the later file, so list-specific files sort after broad ones.
    items = [(p, i) for i, prov in enumerate(providers) for p in prov.prefixes]
    try:
        table = PrefixTable.build(items)
    except PrefixError as exc:
        raise ProviderFileError(f"{folder}: {exc}") from exc
    return ProviderRanges(providers, table)


# -- refresh ----------------------------------------------------------------


def _fetch(url: str, timeout_s: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "voipflow-providers/1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            data: bytes = resp.read()
            return data
    except (OSError, ValueError) as exc:
        raise ProviderFetchError(f"{url}: {exc}") from exc


def _valid(items: list[str]) -> list[str]:
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            continue
    return out


def parse_cidr_list(data: bytes) -> list[str]:
    """A text list of CIDRs (anything else on a line ignored), or a zip of such lists."""
    if data[:4] == b"PK\x03\x04":
        texts = []
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for name in zf.namelist():
                if not name.endswith("/"):
                    texts.append(zf.read(name).decode("utf-8", "replace"))
        text = "\n".join(texts)
    else:
        text = data.decode("utf-8", "replace")
    words = [w for line in parse_prefix_lines(text) for w in line.replace(",", " ").split()]
    return _valid(words)


def parse_ripestat(data: bytes) -> list[str]:
    """RIPEstat announced-prefixes answer -> its prefixes."""
    try:
        doc = json.loads(data)
        return _valid([p["prefix"] for p in doc["data"]["prefixes"]])
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderFetchError(f"not a RIPEstat announced-prefixes answer: {exc}") from exc


def parse_ms365(data: bytes, areas: set[str]) -> list[str]:
    """Microsoft 365 endpoints web service answer -> IPs of the given service areas."""
    try:
        doc = json.loads(data)
        ips = [ip for e in doc if e.get("serviceArea") in areas for ip in e.get("ips", [])]
    except (ValueError, AttributeError, TypeError) as exc:
        raise ProviderFetchError(f"not a Microsoft 365 endpoints answer: {exc}") from exc
    return _valid(ips)


def fetch_origin(
    origin: str, timeout_s: float = 30.0, ripestat_url: str = RIPESTAT_URL
) -> list[str]:
    """Prefixes from an ``origin`` header value; raises for ``none`` or an empty answer."""
    kind, _, rest = origin.partition(" ")
    args = rest.split()
    if kind == "cidr" and args:
        prefixes = parse_cidr_list(_fetch(args[0], timeout_s))
    elif kind == "ripestat" and args:
        prefixes = []
        for asn in args:
            prefixes += parse_ripestat(_fetch(ripestat_url.format(asn=asn), timeout_s))
    elif kind == "ms365" and len(args) == 2:
        prefixes = parse_ms365(_fetch(args[0], timeout_s), set(args[1].split(",")))
    elif kind == "none":
        raise ProviderFetchError("no machine-readable origin; update the file by hand")
    else:
        raise ProviderFetchError(f"unknown origin {origin!r}")
    if not prefixes:
        raise ProviderFetchError(f"{origin}: the answer held no prefixes")
    return prefixes


def _sort_key(prefix: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(prefix)
    return (net.version, int(net.network_address), net.prefixlen)


def refresh_provider(
    path: Path,
    timeout_s: float = 30.0,
    today: dt.date | None = None,
    ripestat_url: str = RIPESTAT_URL,
) -> tuple[int, int]:
    """Refetch one provider file from its origin; returns (prefixes before, after)."""
    prov = read_provider(path)
    origin = prov.header.get("origin", "none")
    prefixes = sorted(set(fetch_origin(origin, timeout_s, ripestat_url)), key=_sort_key)
    date = (today or dt.datetime.now(dt.UTC).date()).isoformat()
    lines = []
    for key, value in prov.header.items():
        lines.append(f"# {key}: {date if key == 'date' else value}")
    if "date" not in prov.header:
        lines.append(f"# date: {date}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines + prefixes) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a worker reloading never sees half a file
    return len(prov.prefixes), len(prefixes)
