"""docker-compose.yml and the Dockerfile agree with the code they deploy.

No Docker engine runs here, so the file is checked statically: it parses,
every ``VOIPFLOW_*`` variable it sets is a real setting whose value loads,
each voipflow service runs a real subcommand, the provisioning it mounts
exists and names the ClickHouse plugin, and dependencies wait on real
healthchecks.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from typing import Any

import pytest
import yaml

from tests.fixtures.paths import REPO
from voipflow.cli import COMMANDS, build_parser
from voipflow.settings import SettingsError, load_settings, setting_names

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
#: Values for the variables docker-compose.yml requires from the operator.
OPERATOR_ENV = {"CLICKHOUSE_PASSWORD": "s3cret", "GRAFANA_ADMIN_PASSWORD": "admin-s3cret"}
_VAR = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value: str) -> str:
    """Expand ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` as compose does."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        if name in OPERATOR_ENV:
            return OPERATOR_ENV[name]
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"${{{name}}} has no default and is not an operator variable")

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _interpolate(str(v)) for k, v in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _voipflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).startswith("voipflow") or "build" in svc
    }


def test_the_stack_has_every_part(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert {"collector", "worker", "sink"} <= set(_voipflow_services(compose))
    # KRaft, one node that is both broker and controller, no ZooKeeper.
    kafka_env = _env(services["kafka"])
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not [k for k in kafka_env if "ZOOKEEPER" in k]
    assert "zookeeper" not in services


def test_every_voipflow_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = setting_names()
    seen = set()
    for name, svc in compose["services"].items():
        for var in _env(svc):
            if var.startswith("VOIPFLOW_"):
                assert var in known, f"service {name} sets {var}, which is no voipflow setting"
                seen.add(var)
    docker_env = re.findall(r"\b(VOIPFLOW_[A-Z0-9_]+)=", DOCKERFILE.read_text())
    assert docker_env, "the Dockerfile sets no VOIPFLOW_ defaults"
    for var in docker_env:
        assert var in known, f"the Dockerfile sets {var}, which is no voipflow setting"
    assert {"VOIPFLOW_KAFKA_BOOTSTRAP", "VOIPFLOW_CLICKHOUSE_URL"} <= seen


def test_voipflow_services_are_configured_only_by_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in list(os.environ):
        if var.startswith("VOIPFLOW_"):
            monkeypatch.delenv(var)
    for name, svc in _voipflow_services(compose).items():
        env = _env(svc)
        others = [v for v in env if not v.startswith("VOIPFLOW_")]
        assert not others, f"service {name} is configured outside VOIPFLOW_*: {others}"
        # A path inside the container is checked where the service's volume
        # mounts it from, so a setting that names a mounted file is read too.
        mounts = [v.split(":")[:2] for v in svc.get("volumes", []) if v.startswith("./")]
        with monkeypatch.context() as m:
            for var, value in env.items():
                for src, dst in mounts:
                    if value == dst or value.startswith(dst + "/"):
                        value = str(REPO / src) + value[len(dst) :]
                m.setenv(var, value)
            try:
                settings = load_settings()
            except SettingsError as exc:
                pytest.fail(f"service {name}: {exc}")
        assert settings.kafka.bootstrap == "kafka:9092"
        assert settings.clickhouse.url.startswith("clickhouse://voipflow:s3cret@clickhouse:9000/")


def test_each_voipflow_service_runs_a_real_subcommand(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, svc in _voipflow_services(compose).items():
        command = svc.get("command")
        argv = shlex.split(command) if isinstance(command, str) else list(command or [])
        assert argv, f"service {name} has no command"
        assert argv[0] in COMMANDS, f"service {name} runs `voipflow {argv[0]}`: no such command"
        # Commands already written must accept the exact arguments given.
        if importlib.util.find_spec(COMMANDS[argv[0]][0]) is not None:
            parser.parse_args(argv)
    runs = {svc["command"][0] for svc in _voipflow_services(compose).values()}
    assert {"collect", "worker", "sink"} <= runs


def test_collector_publishes_netflow_and_ipfix_ports(compose: dict[str, Any]) -> None:
    collector = compose["services"]["collector"]
    listen_port = _env(collector)["VOIPFLOW_COLLECTOR_LISTEN"].rpartition(":")[2]
    published = {}
    for spec in collector["ports"]:
        host, _, target = str(spec).partition(":")
        container, _, proto = target.partition("/")
        published[host] = (container, proto)
    assert published["2055"] == (listen_port, "udp")
    assert published["4739"] == (listen_port, "udp")


def test_dependencies_wait_for_healthy_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s missing check"
            else:
                assert condition == "service_completed_successfully"
                assert services[dep].get("restart") == "no"
    for name in ("kafka", "clickhouse", "grafana", "collector", "worker", "sink"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name in ("collector", "worker", "sink"):
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["sink"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"


def test_mounted_provisioning_exists_and_is_wired(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {}
    for spec in grafana["volumes"]:
        source, target = str(spec).split(":")[:2]
        if source.startswith("."):
            assert (REPO / source).exists(), f"grafana mounts missing {source}"
            mounts[target] = REPO / source
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == REPO / "dashboards" / "provisioning"

    datasources = yaml.safe_load((provisioning / "datasources" / "clickhouse.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    plugins = _env(grafana)["GF_PLUGINS_PREINSTALL_SYNC"].split(",")
    assert "grafana-clickhouse-datasource" in plugins
    # Every ${VAR} the data source reads is given to the Grafana container.
    used = set(re.findall(r"\$\{([A-Z_]+)\}", yaml.safe_dump(datasources)))
    assert used and used <= set(_env(grafana))
    assert _env(grafana)["CLICKHOUSE_HOST"] in compose["services"]

    dashboards = yaml.safe_load((provisioning / "dashboards" / "voipflow.yaml").read_text())
    (provider,) = dashboards["providers"]
    assert mounts[provider["options"]["path"]] == REPO / "dashboards"


def test_dockerfile_installs_the_project_on_python_311_slim() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert any(ln.startswith("RUN pip install .") for ln in lines)
    assert 'ENTRYPOINT ["voipflow"]' in lines
    ignored = (REPO / ".dockerignore").read_text().split()
    for needed in ("pyproject.toml", "voipflow", "collectors", "streams", "schemas"):
        assert needed not in ignored and (REPO / needed).exists()
