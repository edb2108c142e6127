"""All settings of every voipflow process, from the environment and a config file.

This is the only module that reads the environment. Each setting has one
environment variable, ``VOIPFLOW_<SECTION>_<NAME>`` (or ``VOIPFLOW_<NAME>`` for
the few top-level ones), and the same key in an optional TOML config file
(``[section] name = value``), whose path comes from ``--config`` or
``VOIPFLOW_CONFIG``. The environment wins over the file; the file wins over
defaults.

Components never see this module's ``Settings``: each package defines the
config model of its own components (``collectors.config``, ``streams.config``,
``storage.config``, ``schemas.topics``) and this module only assembles them, so
``collectors``, ``streams`` and ``storage`` do not depend on the command line
package.

Errors::

    SettingsError    a setting is malformed, unknown or contradicts another;
                     the message names the environment variable and the fix
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from voipflow.collectors.config import CollectorConfig
from voipflow.enforcement.config import EvaluatorConfig, GuardrailConfig, LedgerConfig
from voipflow.enforcement.points.config import EnforceConfig
from voipflow.schemas.topics import KafkaConfig
from voipflow.storage.config import ClickHouseConfig, SinkConfig
from voipflow.streams.config import WorkerConfig

ENV_PREFIX = "VOIPFLOW_"
CONFIG_ENV = "VOIPFLOW_CONFIG"


#: Settings that were replaced: old variable -> (new variable, why). Setting an
#: old one is an error naming the new one, never accepted beside it.
REPLACED = {
    "VOIPFLOW_ENFORCE_NEVER_BLOCK": (
        "VOIPFLOW_GUARDRAILS_NEVER_BLOCK",
        "the evaluator's guardrails and every enforcement point read that one setting",
    ),
}


class SettingsError(Exception):
    """A bad setting; ``str()`` is one line naming the variable and the fix."""


class LogConfig(BaseModel):
    #: Least severe level logged.
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``json`` for machines (one object per line), ``text`` for people.
    format: Literal["json", "text"] = "text"
    #: At most this many log lines per second per message template; the rest
    #: are counted and summarised.
    rate_per_s: float = 5.0


class MetricsConfig(BaseModel):
    #: ``host:port`` of the Prometheus /metrics endpoint; empty disables it.
    #: Each process adds its own offset (collector +0, worker +1, sink +2,
    #: policy evaluator +3, ledger +4, enforcement point +5).
    #: Port 0: every process picks a free port, logs it and writes its URL to
    #: ``<data_dir>/metrics/<command>-<pid>.json``.
    listen: str = "127.0.0.1:9464"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        validate_default=True,
    )

    #: Where local state lives: chdb data, the local Kafka broker's logs,
    #: template caches.
    data_dir: Path = Path("var")
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    kafka: KafkaConfig = KafkaConfig()
    clickhouse: ClickHouseConfig = ClickHouseConfig()
    collector: CollectorConfig = CollectorConfig()
    worker: WorkerConfig = WorkerConfig()
    sink: SinkConfig = SinkConfig()
    guardrails: GuardrailConfig = GuardrailConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    ledger: LedgerConfig = LedgerConfig()
    enforce: EnforceConfig = EnforceConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def setting_names() -> dict[str, str]:
    """Every environment variable voipflow reads -> dotted setting name."""
    names = {CONFIG_ENV: "config"}
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for sub in ann.model_fields:
                names[f"{ENV_PREFIX}{name.upper()}_{sub.upper()}"] = f"{name}.{sub}"
        else:
            names[f"{ENV_PREFIX}{name.upper()}"] = name
    return names


def _env_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + "_".join(p.upper() for p in parts[:2])


def _check_replaced(config_file: str | None) -> None:
    """Fail on a replaced setting, in the environment or the config file, naming the new one."""
    in_file: dict[str, Any] = {}
    if config_file:
        try:
            in_file = tomllib.loads(Path(config_file).read_text())
        except (OSError, ValueError):
            in_file = {}  # read (and reported) by the settings sources below
    for old, (new, why) in REPLACED.items():
        section, _, key = old.removeprefix(ENV_PREFIX).lower().partition("_")
        table = in_file.get(section)
        if old in os.environ:
            where = old
        elif isinstance(table, dict) and key in table:
            where = f"{old} ([{section}] {key} in {config_file})"
        else:
            continue
        raise SettingsError(f"{where} was replaced by {new} ({why}): move its value there")


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read and validate settings; raise :class:`SettingsError` naming the culprit."""
    if config_file is not None:
        if not Path(config_file).is_file():
            raise SettingsError(f"{CONFIG_ENV}/--config: no such file {config_file!s}")
        os.environ[CONFIG_ENV] = str(config_file)
    elif os.environ.get(CONFIG_ENV) and not Path(os.environ[CONFIG_ENV]).is_file():
        raise SettingsError(f"{CONFIG_ENV}: no such file {os.environ[CONFIG_ENV]}")
    _check_replaced(os.environ.get(CONFIG_ENV))
    known = setting_names()
    for var in os.environ:
        if var.startswith(ENV_PREFIX) and var not in known:
            close = difflib.get_close_matches(var, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(f"{var} is not a voipflow setting{hint}; unset it")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = _env_name(err["loc"])
        msg = str(err["msg"])
        if msg.removeprefix("Value error, ").startswith(ENV_PREFIX):
            # The message names its settings itself; no input (it may be a secret).
            raise SettingsError(msg.removeprefix("Value error, ")) from None
        value = "'***'" if "PASSWORD" in name else repr(err.get("input"))
        raise SettingsError(f"{name}={value}: {msg}") from exc
    except ValueError as exc:  # malformed TOML or JSON-in-env
        raise SettingsError(f"settings could not be read: {exc}") from exc
