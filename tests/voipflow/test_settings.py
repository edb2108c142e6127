"""Settings: environment, config file, and one clear line for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from voipflow.cli import main
from voipflow.settings import SettingsError, load_settings, setting_names


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("VOIPFLOW_"):
            monkeypatch.delenv(var)


def test_environment_sets_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOIPFLOW_KAFKA_BOOTSTRAP", "10.0.0.1:9092,10.0.0.2:9092")
    monkeypatch.setenv("VOIPFLOW_COLLECTOR_LISTEN", "127.0.0.1:4739")
    monkeypatch.setenv("VOIPFLOW_DATA_DIR", "/tmp/x")
    s = load_settings()
    assert s.kafka.bootstrap == "10.0.0.1:9092,10.0.0.2:9092"
    assert s.collector.listen == "127.0.0.1:4739"
    assert str(s.data_dir) == "/tmp/x"


def test_config_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "voipflow.toml"
    cfg.write_text('[kafka]\npartitions = 8\nbootstrap = "k:9092"\n[collector]\nworkers = 2\n')
    monkeypatch.setenv("VOIPFLOW_KAFKA_PARTITIONS", "12")
    s = load_settings(cfg)
    assert s.kafka.partitions == 12
    assert s.kafka.bootstrap == "k:9092"
    assert s.collector.workers == 2


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("VOIPFLOW_COLLECTOR_LISTEN", "nowhere", "VOIPFLOW_COLLECTOR_LISTEN"),
        ("VOIPFLOW_KAFKA_BOOTSTRAP", "broker-without-port", "VOIPFLOW_KAFKA_BOOTSTRAP"),
        ("VOIPFLOW_CLICKHOUSE_URL", "http://ch:8123", "VOIPFLOW_CLICKHOUSE_URL"),
        ("VOIPFLOW_KAFKA_PARTITIONS", "0", "VOIPFLOW_KAFKA_PARTITIONS"),
        # A 7 s window would straddle two hours of the hourly rollup.
        ("VOIPFLOW_WORKER_WINDOW_S", "7", "VOIPFLOW_WORKER_WINDOW_S='7': Value error, 7 does"),
        ("VOIPFLOW_KAFKA_BOOTSTRAPP", "x:1", "did you mean VOIPFLOW_KAFKA_BOOTSTRAP"),
    ],
)
def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert named in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOIPFLOW_COLLECTOR_WORKERS", "-1")
    assert main(["settings"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("voipflow: bad setting: VOIPFLOW_COLLECTOR_WORKERS")
    assert len(err.splitlines()) == 1


def test_every_variable_is_listed() -> None:
    names = setting_names()
    assert "VOIPFLOW_CLICKHOUSE_URL" in names
    assert "VOIPFLOW_KAFKA_BOOTSTRAP" in names
    assert all(n.startswith("VOIPFLOW_") for n in names)
