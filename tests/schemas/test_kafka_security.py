"""TLS and SASL settings of ``[kafka]``: checked at start, secrets hidden, options per library.

Certificates are real ones made with ``openssl`` (tests/fixtures/kafka_secure.py);
the SSL contexts are built by Python's ``ssl`` module from them. No broker is
needed here; tests/test_kafka_secure.py connects to one.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import faust
import pytest

from tests.fixtures.kafka_secure import TlsFiles, make_tls_files
from tests.fixtures.paths import REPO
from voipflow.schemas.kafka_security import KafkaSecurity, kafka_client_options
from voipflow.schemas.topics import KafkaConfig
from voipflow.settings import SettingsError, load_settings

PASSWORD = "s3cret-Pa55word-for-tests"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in list(os.environ):
        if var.startswith("VOIPFLOW_"):
            monkeypatch.delenv(var)
    return monkeypatch


def load(env: pytest.MonkeyPatch, **values: str) -> KafkaConfig:
    for k, v in values.items():
        env.setenv(f"VOIPFLOW_KAFKA_{k.upper()}", v)
    return load_settings().kafka


def sasl_ssl(tls: TlsFiles, **more: str) -> dict[str, str]:
    return {
        "security_protocol": "SASL_SSL",
        "sasl_username": "voipflow",
        "sasl_password": PASSWORD,
        "ssl_cafile": str(tls.ca),
        **more,
    }


def test_plain_over_clear_text_is_refused_naming_both_settings(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as err:
        load(
            env,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="u",
            sasl_password=PASSWORD,
        )
    msg = str(err.value)
    assert "VOIPFLOW_KAFKA_SASL_MECHANISM=PLAIN" in msg
    assert "VOIPFLOW_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT" in msg
    assert PASSWORD not in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"security_protocol": "SASL_SSL", "sasl_password": "x"},
            "set VOIPFLOW_KAFKA_SASL_USERNAME",
        ),
        ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "VOIPFLOW_KAFKA_SASL_PASSWORD"),
        ({"sasl_username": "u"}, "VOIPFLOW_KAFKA_SASL_USERNAME is set but"),
        ({"sasl_password": PASSWORD}, "a SASL password is set but"),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password_file": "/nope"},
            "VOIPFLOW_KAFKA_SASL_PASSWORD_FILE: no such file /nope",
        ),
        ({"ssl_cafile": "/etc/hostname"}, "VOIPFLOW_KAFKA_SSL_CAFILE is set but"),
        (
            {"security_protocol": "SSL", "ssl_cafile": "/etc/hostname"},
            "VOIPFLOW_KAFKA_SSL_CAFILE: /etc/hostname holds no usable CA certificate",
        ),
        (
            {"security_protocol": "SSL", "ssl_certfile": "/nope.pem"},
            "VOIPFLOW_KAFKA_SSL_CERTFILE: no such file /nope.pem",
        ),
    ],
)
def test_bad_settings_fail_at_start_naming_the_setting(
    env: pytest.MonkeyPatch, values: dict[str, str], expected: str
) -> None:
    with pytest.raises(SettingsError) as err:
        load(env, **values)
    assert expected in str(err.value)
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value.__cause__)


def test_password_file_and_password_together_are_refused(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    with pytest.raises(SettingsError, match="both VOIPFLOW_KAFKA_SASL_PASSWORD and"):
        load(
            env,
            security_protocol="SASL_SSL",
            sasl_username="u",
            sasl_password=PASSWORD,
            sasl_password_file=str(secret),
        )
    env.delenv("VOIPFLOW_KAFKA_SASL_PASSWORD")
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(SettingsError, match="is empty"):
        load(env, security_protocol="SASL_SSL", sasl_username="u", sasl_password_file=str(empty))


def test_password_comes_from_the_file_without_its_newline(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    k = load(env, security_protocol="SASL_SSL", sasl_username="u", sasl_password_file=str(secret))
    assert k.sasl_secret() == PASSWORD
    assert kafka_client_options(k)["sasl_plain_password"] == PASSWORD


def test_client_key_that_does_not_match_or_has_the_wrong_password_is_refused(
    env: pytest.MonkeyPatch, tls: TlsFiles
) -> None:
    with pytest.raises(SettingsError) as err:
        load(
            env,
            security_protocol="SSL",
            ssl_certfile=str(tls.client_cert),
            ssl_keyfile=str(tls.broker_keystore),  # another key
        )
    assert "VOIPFLOW_KAFKA_SSL_CERTFILE=" in str(err.value)
    assert "VOIPFLOW_KAFKA_SSL_KEYFILE=" in str(err.value)
    with pytest.raises(SettingsError) as err:
        load(
            env,
            security_protocol="SSL",
            ssl_certfile=str(tls.client_cert),
            ssl_keyfile=str(tls.client_key_encrypted),
            ssl_key_password="not-" + tls.client_key_password,
        )
    assert "VOIPFLOW_KAFKA_SSL_KEY_PASSWORD" in str(err.value)
    assert tls.client_key_password not in str(err.value)
    env.delenv("VOIPFLOW_KAFKA_SSL_CERTFILE")
    env.delenv("VOIPFLOW_KAFKA_SSL_KEY_PASSWORD")
    with pytest.raises(SettingsError, match="VOIPFLOW_KAFKA_SSL_KEYFILE is set without"):
        load(env, security_protocol="SSL", ssl_keyfile=str(tls.client_key))


def test_secrets_never_show_in_repr_str_or_errors(env: pytest.MonkeyPatch, tls: TlsFiles) -> None:
    k = load(
        env,
        **sasl_ssl(
            tls,
            ssl_certfile=str(tls.client_cert),
            ssl_keyfile=str(tls.client_key_encrypted),
            ssl_key_password=tls.client_key_password,
        ),
    )
    settings = load_settings()
    for text in (repr(k), str(k), repr(settings), str(settings), k.model_dump_json()):
        assert PASSWORD not in text and tls.client_key_password not in text
    # A malformed value next to the password: pydantic's own error hides inputs too.
    with pytest.raises(SettingsError) as err:
        load(env, ssl_check_hostname="maybe")
    chain = f"{err.value} {err.value.__cause__}"
    assert "VOIPFLOW_KAFKA_SSL_CHECK_HOSTNAME" in chain and PASSWORD not in chain


def test_settings_command_masks_the_passwords(tls: TlsFiles) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env.update({f"VOIPFLOW_KAFKA_{k.upper()}": v for k, v in sasl_ssl(tls).items()})
    env["VOIPFLOW_KAFKA_SSL_CERTFILE"] = str(tls.client_cert)
    env["VOIPFLOW_KAFKA_SSL_KEYFILE"] = str(tls.client_key_encrypted)
    env["VOIPFLOW_KAFKA_SSL_KEY_PASSWORD"] = tls.client_key_password
    for fmt in ([], ["--json"]):
        out = subprocess.run(
            [sys.executable, "-m", "voipflow", "settings", *fmt],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "VOIPFLOW_KAFKA_SASL_PASSWORD" in out.stdout and "SASL_SSL" in out.stdout
        assert PASSWORD not in out.stdout + out.stderr
        assert tls.client_key_password not in out.stdout + out.stderr


def test_kafka_python_options(tls: TlsFiles) -> None:
    assert kafka_client_options(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}
    k = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="voipflow",
        sasl_password=PASSWORD,  # type: ignore[arg-type]
        ssl_cafile=tls.ca,
        ssl_certfile=tls.client_cert,
        ssl_keyfile=tls.client_key_encrypted,
        ssl_key_password=tls.client_key_password,  # type: ignore[arg-type]
        ssl_check_hostname=False,
    )
    assert kafka_client_options(k) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "voipflow",
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": str(tls.ca),
        "ssl_certfile": str(tls.client_cert),
        "ssl_keyfile": str(tls.client_key_encrypted),
        "ssl_password": tls.client_key_password,
        "ssl_check_hostname": False,
    }


def test_aiokafka_and_faust_options_carry_a_verifying_tls_context(tls: TlsFiles) -> None:
    k = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_username="voipflow",
        sasl_password=PASSWORD,  # type: ignore[arg-type]
        ssl_cafile=tls.ca,
    )
    aio = kafka_client_options(k, "aiokafka")
    assert aio["security_protocol"] == "SASL_SSL" and aio["sasl_mechanism"] == "SCRAM-SHA-512"
    ctx = aio["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "voipflow test CA"),),)]

    creds = kafka_client_options(k, "faust")["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.username == "voipflow" and creds.password == PASSWORD
    assert PASSWORD not in repr(creds)

    tls_only = KafkaSecurity(security_protocol="SSL", ssl_cafile=tls.ca)
    ssl_creds = kafka_client_options(tls_only, "faust")["broker_credentials"]
    assert isinstance(ssl_creds, faust.SSLCredentials) and ssl_creds.protocol.value == "SSL"
    assert kafka_client_options(KafkaSecurity(), "faust") == {}


def test_settings_command_masks_the_clickhouse_url_password() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIPFLOW_")}
    env["VOIPFLOW_CLICKHOUSE_URL"] = f"clickhouses://voipflow:{PASSWORD}@ch1:9440/voipflow"
    out = subprocess.run(
        [sys.executable, "-m", "voipflow", "settings", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    shown = json.loads(out.stdout)["VOIPFLOW_CLICKHOUSE_URL"]
    assert shown == "clickhouses://voipflow:***@ch1:9440/voipflow"
