"""The native backend's TLS options: what a ``clickhouses://`` URL hands to clickhouse-driver.

No TLS server runs here (the Debian clickhouse-server of the tests listens
in clear text); this checks the URL the README documents reaches the driver's
``Client`` as its TLS keyword arguments, and that the safe form of the URL
keeps credentials and options out of messages.
"""

from __future__ import annotations

from voipflow.storage.clickhouse.native import NativeClickHouse


def test_clickhouses_url_turns_tls_on_with_the_drivers_options() -> None:
    ch = NativeClickHouse(
        "clickhouses://voipflow:pw@ch1.example.net:9440/voipflow"
        "?ca_certs=/etc/voipflow/ch-ca.pem&check_hostname=false"
        "&certfile=/etc/c.pem&keyfile=/etc/c.key&keypass=key-secret"
    )
    kwargs = ch._kwargs
    assert kwargs["secure"] is True and kwargs["port"] == 9440
    assert kwargs["ca_certs"] == "/etc/voipflow/ch-ca.pem"
    assert kwargs["check_hostname"] is False
    assert (kwargs["certfile"], kwargs["keyfile"]) == ("/etc/c.pem", "/etc/c.key")
    assert ch.url_safe == "ch1.example.net:9440/voipflow"
    assert "pw" not in ch.url_safe and "key-secret" not in ch.url_safe


def test_secure_query_option_on_a_clickhouse_url() -> None:
    assert NativeClickHouse("clickhouse://h:9440/db?secure=true")._kwargs["secure"] is True
    assert "secure" not in NativeClickHouse("clickhouse://h:9000/db")._kwargs
