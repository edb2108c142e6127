"""The demo's one way into ClickHouse: check the server, apply the schema, open it for the report.

The demo's process opens ClickHouse only before the sink starts and after it
has stopped: chdb (the default, in-process) has one owner at a time, and the
sink owns it in between. Every import of the ClickHouse layer the demo needs
is here.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from voipflow.dashboards import CityTableError
from voipflow.dashboards.cities import city_columns, read_cities
from voipflow.demo.errors import DemoSettingError
from voipflow.settings import Settings
from voipflow.storage.clickhouse import ClickHouse, ClickHouseError, connect
from voipflow.storage.clickhouse.http_client import open_clickhouse, read_endpoint
from voipflow.storage.clickhouse.migrations import Migrator, RenderOptions


def _mask(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def setting_error(settings: Settings, exc: Exception) -> DemoSettingError:
    """``exc`` as a bad setting naming where ClickHouse is (its password masked)."""
    url = settings.clickhouse.url
    if url:
        return DemoSettingError(f"VOIPFLOW_CLICKHOUSE_URL={_mask(url)}: {exc}")
    return DemoSettingError(f"VOIPFLOW_DATA_DIR={settings.data_dir} (chdb): {exc}")


@contextlib.contextmanager
def opened(settings: Settings, data_dir: Path) -> Iterator[ClickHouse]:
    """ClickHouse as the settings say, closed on exit (chdb lives in ``data_dir``)."""
    ch = connect(settings.clickhouse, data_dir)
    try:
        yield ch
    finally:
        ch.close()


@contextlib.contextmanager
def opened_for_reading(settings: Settings, data_dir: Path) -> Iterator[ClickHouse]:
    """Like :func:`opened`, through the sink's SQL endpoint if a sink still holds chdb."""
    ch = open_clickhouse(settings.clickhouse, data_dir)
    try:
        yield ch
    finally:
        ch.close()


def sql_endpoint_url(data_dir: Path) -> str | None:
    """Where the demo's sink serves SQL, once it does (None before, or when it does not)."""
    endpoint = read_endpoint(Path(data_dir) / "clickhouse")
    return endpoint.url if endpoint is not None else None


def check_server(settings: Settings, data_dir: Path) -> None:
    """A configured ClickHouse server answers; chdb, in this process, needs no check."""
    if not settings.clickhouse.url:
        return
    try:
        with opened(settings, data_dir) as ch:
            ch.query("SELECT 1")
    except ClickHouseError as exc:
        raise setting_error(settings, exc) from exc


class ClickHouseSchema:
    """Applies the migrations and loads the city table, then lets go of ClickHouse."""

    name = "clickhouse"

    def __init__(self, settings: Settings, data_dir: Path, cities_csv: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.cities_csv = cities_csv
        self.applied = 0
        self.cities = 0
        self.where = ""

    def start(self) -> None:
        cfg = self.settings.clickhouse
        try:
            cities = read_cities(self.cities_csv)
        except CityTableError as exc:
            raise DemoSettingError(f"VOIPFLOW_WORKER_PREFIX_TABLE: {exc}") from exc
        try:
            with opened(self.settings, self.data_dir) as ch:
                self.applied = len(
                    Migrator(ch, RenderOptions.from_config(cfg, ch.database)).migrate()
                )
                ch.insert("cities", city_columns(cities))
                self.cities = len(cities)
                self.where = f"{ch.kind} database {ch.database}" + (
                    "" if cfg.url else f" in {self.data_dir / 'clickhouse'}"
                )
        except ClickHouseError as exc:
            raise setting_error(self.settings, exc) from exc

    def stop(self) -> None:
        pass
