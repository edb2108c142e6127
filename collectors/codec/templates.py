"""Template cache: the decoder's memory of (options) templates and options data.

The cache is an object the :class:`voipflow.collectors.codec.decoder.Decoder` is given, so the
process decides its life: one per receiving process, saved on stop and loaded
on start (:meth:`TemplateCache.save` / :meth:`TemplateCache.load`) so data
that arrives right after a restart decodes without waiting for the exporter
to resend its templates (softflowd resends every 16 packets, routers every
few minutes).

Keys are ``(exporter, observation_domain_id, template_id, version)``:
``exporter`` is the 16-byte (IPv4-mapped) address the export came from, the
version keeps a v9 and an IPFIX template of the same id apart. Templates
expire ``expiry_s`` after they were last (re)announced, measured on the
receive timestamps the decoder passes in (never the wall clock, so decoding
a capture behaves the same as live traffic).

Besides templates the cache keeps what options data told about an exporter
and domain (:class:`DomainOptions`): sampler rates, application names,
``systemInitTimeMilliseconds``. They are persisted with the templates.

Errors::

    TemplateCacheError (OSError)   the cache file cannot be read or written,
                                   or is not a cache file of this version
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Length value of a variable-length field (RFC 7011 7).
VARLEN = 65535

#: (exporter 16 bytes, observation domain, template id, netflow version)
TemplateKey = tuple[bytes, int, int, int]
#: (exporter 16 bytes, observation domain)
DomainKey = tuple[bytes, int]

_FILE_VERSION = 1


class TemplateCacheError(OSError):
    """The cache file is unreadable or of another format."""


@dataclass(frozen=True, slots=True)
class TemplateField:
    """One field specifier: enterprise number (0 = IANA), element id, length."""

    pen: int
    ie: int
    length: int


@dataclass(slots=True, eq=False)
class Template:
    """A (options) template as announced; ``plan`` is compiled lazily.

    ``scope_count`` > 0 marks an options template; its first ``scope_count``
    fields are the scope.
    """

    template_id: int
    fields: tuple[TemplateField, ...]
    scope_count: int = 0
    version: int = 10
    received_ms: int = 0
    plan: Any = None  # collectors.codec.plan.RecordPlan, built on first use

    @property
    def is_options(self) -> bool:
        return self.scope_count > 0

    @property
    def variable(self) -> bool:
        return any(f.length == VARLEN for f in self.fields)

    @property
    def min_record_length(self) -> int:
        """Bytes of a record with every variable-length field empty (1-byte prefix)."""
        return sum(1 if f.length == VARLEN else f.length for f in self.fields)

    def same_layout(self, other: Template) -> bool:
        return self.fields == other.fields and self.scope_count == other.scope_count


@dataclass(slots=True)
class DomainOptions:
    """What options data told about one exporter and observation domain."""

    #: 1-in-N rate announced without a sampler/selector id (or the only one).
    sampling_rate: int = 0
    #: sampler/selector id -> 1-in-N rate.
    samplers: dict[int, int] = field(default_factory=dict)
    #: applicationId (engine<<56 | selector) -> name.
    app_names: dict[int, str] = field(default_factory=dict)
    #: systemInitTimeMilliseconds (IPFIX), 0 when unknown.
    system_init_ms: int = 0
    received_ms: int = 0

    def default_rate(self) -> int:
        if self.sampling_rate:
            return self.sampling_rate
        if len(self.samplers) == 1:
            return next(iter(self.samplers.values()))
        return 0


class TemplateCache:
    """Templates and options state per exporter and domain, with expiry.

    Not thread-safe: one decoder (one process) owns it.
    """

    def __init__(
        self, expiry_s: float = 1800.0, max_per_domain: int = 4096, max_templates: int = 65536
    ) -> None:
        if expiry_s <= 0:
            raise ValueError("expiry_s must be > 0")
        self.expiry_ms = int(expiry_s * 1000)
        self.max_per_domain = max_per_domain
        #: Templates in all domains together: an exporter (or a spoofed source)
        #: that announces templates in ever new observation domains must not
        #: grow the process without bound. New ones are refused while it is full.
        self.max_templates = max_templates
        self._templates: dict[TemplateKey, Template] = {}
        self._options: dict[DomainKey, DomainOptions] = {}
        self._per_domain: dict[DomainKey, int] = {}
        #: templates dropped by :meth:`expire` since the cache was made
        self.expired = 0

    # -- templates -----------------------------------------------------------

    def get(self, key: TemplateKey) -> Template | None:
        return self._templates.get(key)

    def put(self, key: TemplateKey, template: Template) -> Template:
        """Store (or refresh) a template; returns the one now in the cache.

        An identical re-announcement keeps the existing object (and its
        compiled plan) and only refreshes its time.
        """
        old = self._templates.get(key)
        if old is not None and old.same_layout(template):
            old.received_ms = max(old.received_ms, template.received_ms)
            return old
        dk = (key[0], key[1])
        if old is None:
            if self._per_domain.get(dk, 0) >= self.max_per_domain:
                raise OverflowError(
                    f"{self.max_per_domain} templates for this exporter and domain already"
                )
            if len(self._templates) >= self.max_templates:
                raise OverflowError(
                    f"the template cache is full ({self.max_templates} templates, all "
                    "exporters and domains): new templates are refused until old ones expire"
                )
            self._per_domain[dk] = self._per_domain.get(dk, 0) + 1
        self._templates[key] = template
        return template

    def withdraw(self, key: TemplateKey) -> bool:
        if self._templates.pop(key, None) is None:
            return False
        dk = (key[0], key[1])
        self._per_domain[dk] -= 1
        return True

    def withdraw_all(self, exporter: bytes, domain: int, version: int, options: bool) -> int:
        """Withdraw every (options) template of one domain (IPFIX id 2/3 withdrawal)."""
        keys = [
            k
            for k, t in self._templates.items()
            if k[0] == exporter and k[1] == domain and k[3] == version and t.is_options == options
        ]
        for k in keys:
            self.withdraw(k)
        return len(keys)

    def count(self, exporter: bytes, domain: int) -> int:
        return self._per_domain.get((exporter, domain), 0)

    def __len__(self) -> int:
        return len(self._templates)

    def keys(self) -> list[TemplateKey]:
        return list(self._templates)

    def expire(self, now_ms: int) -> list[TemplateKey]:
        """Drop templates not announced for ``expiry_s``; returns their keys."""
        limit = now_ms - self.expiry_ms
        old = [k for k, t in self._templates.items() if t.received_ms < limit]
        for k in old:
            self.withdraw(k)
        self.expired += len(old)
        return old

    # -- options state --------------------------------------------------------

    def options(self, exporter: bytes, domain: int) -> DomainOptions:
        key = (exporter, domain)
        opts = self._options.get(key)
        if opts is None:
            opts = self._options[key] = DomainOptions()
        return opts

    def peek_options(self, exporter: bytes, domain: int) -> DomainOptions | None:
        return self._options.get((exporter, domain))

    # -- persistence ----------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "voipflow-template-cache",
            "version": _FILE_VERSION,
            "expiry_ms": self.expiry_ms,
            "templates": [
                {
                    "exporter": k[0].hex(),
                    "domain": k[1],
                    "template_id": k[2],
                    "version": k[3],
                    "scope_count": t.scope_count,
                    "received_ms": t.received_ms,
                    "fields": [[f.pen, f.ie, f.length] for f in t.fields],
                }
                for k, t in self._templates.items()
            ],
            "options": [
                {
                    "exporter": k[0].hex(),
                    "domain": k[1],
                    "sampling_rate": o.sampling_rate,
                    "samplers": [[s, r] for s, r in o.samplers.items()],
                    "app_names": [[a, n] for a, n in o.app_names.items()],
                    "system_init_ms": o.system_init_ms,
                    "received_ms": o.received_ms,
                }
                for k, o in self._options.items()
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the cache atomically (temp file + rename)."""
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=target.name, dir=target.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_json(), fh)
            os.replace(tmp, target)
        except OSError as exc:
            raise TemplateCacheError(f"cannot write template cache {target}: {exc}") from exc

    def load(self, path: str | os.PathLike[str]) -> int:
        """Merge a saved cache into this one; returns the templates loaded.

        A missing file loads nothing (first start). Saved templates keep
        their announcement time, so ones that went stale while the process
        was down expire on the next :meth:`expire`.
        """
        source = Path(path)
        if not source.exists():
            return 0
        try:
            doc = json.loads(source.read_text())
        except (OSError, ValueError) as exc:
            raise TemplateCacheError(f"cannot read template cache {source}: {exc}") from exc
        if (
            not isinstance(doc, dict)
            or doc.get("format") != "voipflow-template-cache"
            or doc.get("version") != _FILE_VERSION
        ):
            raise TemplateCacheError(f"{source} is not a template cache of version {_FILE_VERSION}")
        try:
            loaded = 0
            for t in doc["templates"]:
                key = (bytes.fromhex(t["exporter"]), int(t["domain"]), int(t["template_id"]),
                       int(t["version"]))  # fmt: skip
                fields = tuple(TemplateField(int(p), int(i), int(n)) for p, i, n in t["fields"])
                self.put(key, Template(key[2], fields, int(t["scope_count"]), key[3],
                                       int(t["received_ms"])))  # fmt: skip
                loaded += 1
            for o in doc["options"]:
                opts = self.options(bytes.fromhex(o["exporter"]), int(o["domain"]))
                opts.sampling_rate = int(o["sampling_rate"])
                opts.samplers.update({int(s): int(r) for s, r in o["samplers"]})
                opts.app_names.update({int(a): str(n) for a, n in o["app_names"]})
                opts.system_init_ms = int(o["system_init_ms"])
                opts.received_ms = int(o["received_ms"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise TemplateCacheError(f"malformed template cache {source}: {exc}") from exc
        return loaded
