"""The demo's parts on their own, without a broker: what they make of settings and options.

``test_demo.py`` runs the whole demo; these check the pieces it is built
from, each given its settings, options and printer explicitly.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from voipflow.demo import DemoOptions, Printer
from voipflow.demo.pipeline import child_env
from voipflow.demo.plan import DEMO_CITIES, DEMO_HOME_NETWORKS, DemoPlan
from voipflow.demo.report import CityRow, render, truth_per_city
from voipflow.demo.simulator import simulator_config
from voipflow.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("VOIPFLOW_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("VOIPFLOW_DATA_DIR", str(tmp_path / "var"))


def test_plan_fills_in_the_worker_settings_the_user_left_unset(tmp_path: Path) -> None:
    plan = DemoPlan.from_settings(load_settings())
    assert plan.cities_csv == DEMO_CITIES and DEMO_CITIES.is_file()
    assert plan.home_networks == DEMO_HOME_NETWORKS
    assert (plan.lateness_s, plan.idle_close_s) == (20, 2.0)
    assert plan.data_dir == (tmp_path / "var").resolve()
    assert plan.truth_path == plan.data_dir / "demo" / "truth.json"


def test_plan_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOIPFLOW_WORKER_LATENESS_S", "45")
    monkeypatch.setenv("VOIPFLOW_WORKER_HOME_NETWORKS", "10.0.0.0/8")
    plan = DemoPlan.from_settings(load_settings())
    assert (plan.lateness_s, plan.home_networks) == (45, "10.0.0.0/8")
    assert plan.idle_close_s == 2.0  # still the demo's

    env = child_env(plan, DemoOptions(window_s=5), "127.0.0.1:9092", "127.0.0.1:2055")
    assert env["VOIPFLOW_WORKER_LATENESS_S"] == "45"
    assert env["VOIPFLOW_WORKER_WINDOW_S"] == "5"
    assert env["VOIPFLOW_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"
    assert env["VOIPFLOW_COLLECTOR_LISTEN"] == "127.0.0.1:2055"
    assert env["VOIPFLOW_WORKER_PREFIX_TABLE"] == str(DEMO_CITIES.resolve())


def test_simulator_sends_ipv6_only_where_the_worker_sees_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = DemoOptions(duration_s=7, rate=50, seed=3)
    cfg = simulator_config(DemoPlan.from_settings(load_settings()), options, "127.0.0.1:2055")
    assert cfg.ipv6_share == 0.25  # the demo's home networks cover the cities' IPv6 prefixes
    assert (cfg.duration_s, cfg.rate, cfg.seed, cfg.target) == (7, 50, 3, "127.0.0.1:2055")

    monkeypatch.setenv("VOIPFLOW_WORKER_HOME_NETWORKS", "10.0.0.0/8")
    cfg = simulator_config(DemoPlan.from_settings(load_settings()), options, "127.0.0.1:2055")
    assert cfg.ipv6_share == 0.0


def test_report_sums_the_truth_per_city_and_renders_aligned_columns() -> None:
    truth = {
        "cities": [{"city": "Lyon", "bytes_total": 1000}, {"city": "Rome", "bytes_total": 500}],
        "usage": [
            {"city": "Lyon", "is_voip": True, "flows": 3, "bytes_total": 300, "call_seconds": 90},
            {"city": "Lyon", "is_voip": True, "flows": 1, "bytes_total": 100, "call_seconds": 30},
            {"city": "Lyon", "is_voip": False, "flows": 9, "bytes_total": 600, "call_seconds": 0},
            {"city": "Rome", "is_voip": False, "flows": 5, "bytes_total": 500, "call_seconds": 0},
        ],
    }
    sent = truth_per_city(truth)
    assert sent["Lyon"] == {"flows": 4, "bytes": 400, "minutes": 2.0, "all_bytes": 1000}
    assert sent["Rome"] == {"flows": 0, "bytes": 0, "minutes": 0.0, "all_bytes": 500}

    row = CityRow("Lyon", 2.0, 7, 4, 396_000_000, 0.4, "whatsapp", sent_bytes=400_000_000)
    lines = render([row]).splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1
    assert lines[2].split() == [
        "Lyon",
        "2.0",
        "7",
        "4",
        "396.0",
        "40.0",
        "%",
        "whatsapp",
        "99.0",
        "%",
    ]


def test_printer_stamps_progress_lines_but_not_report_lines() -> None:
    out = io.StringIO()
    printer = Printer(out)
    printer.say("kafka: ready")
    printer.line("city  call min")
    said, table = out.getvalue().splitlines()
    assert re.fullmatch(r"\[ +\d+\.\ds\] kafka: ready", said), said
    assert table == "city  call min"
