"""Numbered, idempotent SQL migrations from ``schemas/clickhouse/NNN_name.sql``.

Each file is a template: ``{{name}}`` placeholders are rendered from the
settings before the statements run, so one file serves chdb, a single server
and a cluster:

``{{db}}``                 the database
``{{on_cluster}}``         ``ON CLUSTER `name``` or nothing
``{{replicated}}``         ``Replicated`` (before ``MergeTree`` engines) or nothing
``{{local}}``              ``_local`` (suffix of the tables behind Distributed) or nothing
``{{dedup_window}}``       the deduplication window setting of MergeTree tables
``{{ttl:EXPR:SETTING}}``   ``TTL EXPR + INTERVAL n DAY`` from ``ClickHouseConfig.SETTING``,
                           or nothing when that setting is 0

A comment line ``-- @distributed TABLE SHARDING_EXPR`` becomes, on a cluster,
``CREATE TABLE TABLE AS TABLE_local ENGINE = Distributed(...)``, and nothing
otherwise. Statements end with ``;`` at the end of a line and use
``IF NOT EXISTS``, so a file that stopped half way runs again safely. Applied
files are recorded in ``schema_migrations`` (version, name, checksum); a file
whose checksum changed after it ran is reported by ``status`` and never rerun.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voipflow import schemas
from voipflow.storage.clickhouse.base import ClickHouse, quote_ident, quote_literal
from voipflow.storage.clickhouse.errors import ClickHouseError, QueryError
from voipflow.storage.config import ClickHouseConfig

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(schemas.__file__).resolve().parent / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"

_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER_RE = re.compile(r"\{\{([a-z_]+)(?::([^:}]+):([a-z0-9_]+))?\}\}")
_DISTRIBUTED_RE = re.compile(r"^--\s*@distributed\s+(\w+)\s+(.+?)\s*$", re.MULTILINE)

#: ``{{ttl:...:SETTING}}`` may name these ``ClickHouseConfig`` fields.
TTL_SETTINGS = (
    "flows_ttl_days",
    "usage_1m_ttl_days",
    "usage_1h_ttl_days",
    "usage_1d_ttl_days",
    "traffic_1m_ttl_days",
    "traffic_1h_ttl_days",
    "traffic_1d_ttl_days",
    "health_ttl_days",
    "rule_events_ttl_days",
)


class MigrationError(QueryError):
    """A migration file is malformed or a statement of it failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    template: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"


@dataclass(frozen=True, slots=True)
class RenderOptions:
    database: str
    cluster: str = ""
    ttl_days: dict[str, int] = field(default_factory=dict)
    dedup_window: int = 1000

    @classmethod
    def from_config(cls, config: ClickHouseConfig, database: str) -> RenderOptions:
        return cls(
            database=database,
            cluster=config.cluster,
            ttl_days={name: int(getattr(config, name)) for name in TTL_SETTINGS},
            dedup_window=config.dedup_window,
        )


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of ``directory`` in version order."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} appears twice")
        found[version] = Migration(version, m.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


def _distributed_sql(table: str, shard_by: str, opts: RenderOptions) -> str:
    db, cluster = quote_ident(opts.database), quote_ident(opts.cluster)
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} "
        f"AS {db}.{table}_local "
        f"ENGINE = Distributed({cluster}, {db}, {table}_local, {shard_by})"
    )


def render(migration: Migration, opts: RenderOptions) -> list[str]:
    """The statements of ``migration`` for ``opts``, ready to run in order."""
    clustered = bool(opts.cluster)

    def placeholder(m: re.Match[str]) -> str:
        name, expr, setting = m.group(1), m.group(2), m.group(3)
        if name == "ttl" and expr and setting:
            if setting not in opts.ttl_days:
                raise MigrationError(f"{migration.label}: unknown TTL setting {setting!r}")
            days = opts.ttl_days[setting]
            return f"TTL {expr} + INTERVAL {days} DAY" if days > 0 else ""
        values = {
            "db": quote_ident(opts.database),
            "on_cluster": f"ON CLUSTER {quote_ident(opts.cluster)}" if clustered else "",
            "replicated": "Replicated" if clustered else "",
            "local": "_local" if clustered else "",
            "dedup_window": (
                f"replicated_deduplication_window = {opts.dedup_window}"
                if clustered
                else f"non_replicated_deduplication_window = {opts.dedup_window}"
            ),
        }
        if name not in values or expr:
            raise MigrationError(f"{migration.label}: unknown placeholder {m.group(0)}")
        return values[name]

    text = migration.template
    if clustered:
        text = _DISTRIBUTED_RE.sub(
            lambda m: _distributed_sql(m.group(1), m.group(2), opts) + ";", text
        )
    text = _PLACEHOLDER_RE.sub(placeholder, text)
    if "{{" in text:
        raise MigrationError(
            f"{migration.label}: unrendered placeholder near {text[text.index('{{') :][:40]!r}"
        )
    statements = []
    for chunk in re.split(r";\s*$", text, flags=re.MULTILINE):
        body = "\n".join(
            line for line in chunk.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            statements.append(body)
    return statements


def migrations_table_sql(opts: RenderOptions) -> str:
    engine = "ReplicatedMergeTree" if opts.cluster else "MergeTree"
    on_cluster = f" ON CLUSTER {quote_ident(opts.cluster)}" if opts.cluster else ""
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_ident(opts.database)}.{MIGRATIONS_TABLE}{on_cluster} "
        "(version UInt32, name String, checksum String, "
        "applied_at DateTime('UTC') DEFAULT now()) "
        f"ENGINE = {engine} ORDER BY version"
    )


@dataclass(frozen=True, slots=True)
class MigrationState:
    version: int
    name: str
    state: str  # applied | pending | changed (applied, file edited since) | unknown (no file)
    applied_at: Any = None


class Migrator:
    """Applies pending migrations on one backend and records them."""

    def __init__(
        self,
        ch: ClickHouse,
        opts: RenderOptions,
        migrations: Sequence[Migration] | None = None,
    ) -> None:
        self.ch = ch
        self.opts = opts
        self.migrations = list(migrations if migrations is not None else load_migrations())

    def _table(self) -> str:
        return f"{quote_ident(self.opts.database)}.{MIGRATIONS_TABLE}"

    def applied(self) -> dict[int, tuple[str, str, Any]]:
        """version -> (name, checksum, applied_at) of recorded migrations."""
        try:
            res = self.ch.query(
                f"SELECT version, any(name), any(checksum), toString(min(applied_at)) "
                f"FROM {self._table()} GROUP BY version ORDER BY version"
            )
        except ClickHouseError as exc:
            if exc.code in (60, 81):  # no table / database yet: nothing applied
                return {}
            raise
        return {int(r[0]): (r[1], r[2], r[3]) for r in res.rows}

    def status(self) -> list[MigrationState]:
        done = self.applied()
        out = []
        for m in self.migrations:
            if m.version in done:
                state = "applied" if done[m.version][1] == m.checksum else "changed"
                out.append(MigrationState(m.version, m.name, state, done[m.version][2]))
            else:
                out.append(MigrationState(m.version, m.name, "pending"))
        known = {m.version for m in self.migrations}
        for v, (name, _, at) in sorted(done.items()):
            if v not in known:
                out.append(MigrationState(v, name, "unknown", at))
        return out

    def migrate(self, target: int | None = None) -> list[Migration]:
        """Apply every pending migration up to ``target`` (all when None)."""
        self.ch.ensure_database()
        self.ch.execute(migrations_table_sql(self.opts))
        done = self.applied()
        ran = []
        for m in self.migrations:
            if target is not None and m.version > target:
                break
            if m.version in done:
                continue
            for i, stmt in enumerate(render(m, self.opts), 1):
                try:
                    self.ch.execute(stmt)
                except ClickHouseError as exc:
                    raise type(exc)(
                        f"migration {m.label}, statement {i}: {exc}", code=exc.code, sql=stmt
                    ) from exc
            self.ch.execute(
                f"INSERT INTO {self._table()} (version, name, checksum) VALUES "
                f"({m.version}, {quote_literal(m.name)}, {quote_literal(m.checksum)})"
            )
            log.info("applied migration %s", m.label, extra={"database": self.opts.database})
            ran.append(m)
        return ran
