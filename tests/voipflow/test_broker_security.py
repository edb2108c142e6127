"""The secure local broker's configuration: a SASL_SSL listener, SCRAM users at format time.

The broker itself runs in tests/test_kafka_secure.py (``secure_kafka``); this
checks what is written for it and what is refused before anything starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from voipflow.broker_security import BrokerSecurity, listener_properties, scram_format_args


def test_listener_properties_and_format_arguments() -> None:
    sec = BrokerSecurity(
        keystore=Path("/k.pem"),
        truststore=Path("/ca.pem"),
        client_auth="required",
        users={"admin": SecretStr("a-pw"), "vf": SecretStr("v-pw")},
    )
    props = listener_properties(sec, "127.0.0.1", 9094)
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
    assert (
        'username="admin" password="a-pw"'
        in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    )
    assert 'user_vf="v-pw"' in props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert (props["ssl.keystore.type"], props["ssl.keystore.location"]) == ("PEM", "/k.pem")
    assert (props["ssl.truststore.type"], props["ssl.client.auth"]) == ("PEM", "required")
    assert scram_format_args(sec) == [
        "--add-scram", "SCRAM-SHA-512=[name=admin,password=a-pw]",
        "--add-scram", "SCRAM-SHA-256=[name=admin,password=a-pw]",
        "--add-scram", "SCRAM-SHA-512=[name=vf,password=v-pw]",
        "--add-scram", "SCRAM-SHA-256=[name=vf,password=v-pw]",
    ]  # fmt: skip


@pytest.mark.parametrize("password", ['a"b', "a,b", "a]b", ""])
def test_passwords_the_format_tool_or_jaas_cannot_quote_are_refused(password: str) -> None:
    with pytest.raises(ValidationError):
        BrokerSecurity(keystore=Path("/k.pem"), users={"vf": SecretStr(password)})
    with pytest.raises(ValidationError):
        BrokerSecurity(keystore=Path("/k.pem"), users={})
