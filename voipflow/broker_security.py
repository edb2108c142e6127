"""A SASL_SSL listener for the local broker, as production Kafka runs.

:class:`BrokerSecurity` asks :class:`~voipflow.broker.LocalBroker` to listen
with TLS and SASL (SCRAM-SHA-512, SCRAM-SHA-256, and PLAIN, which TLS makes
acceptable) instead of PLAINTEXT, so that every voipflow client can be run
against the real thing. Certificates are PEM files (Kafka 4 reads PEM key
stores, no Java keystore needed); SCRAM users are written into the KRaft
metadata when storage is formatted (``kafka-storage format --add-scram``), the
only way a KRaft broker learns them before it can serve requests. The
controller listener stays PLAINTEXT on loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

#: The listener's name in server.properties.
LISTENER = "SASL_SSL"
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class BrokerSecurity(BaseModel):
    """TLS material and SASL users of a secure local broker."""

    #: PEM file with the broker's private key (unencrypted PKCS#8) followed by
    #: its certificate chain; the certificate must name the broker's host.
    keystore: Path
    #: CA certificates (PEM) that sign client certificates; needed with
    #: ``client_auth`` other than ``none``.
    truststore: Path | None = None
    #: Whether clients must present a certificate (mutual TLS).
    client_auth: Literal["none", "requested", "required"] = "none"
    #: SASL users (name -> password); the first one is the broker's own, for
    #: its connections to itself.
    users: dict[str, SecretStr] = Field(min_length=1)

    @field_validator("users")
    @classmethod
    def _check_users(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, password in v.items():
            # The storage tool's --add-scram syntax and JAAS quoting have no escapes.
            bad = set(name + password.get_secret_value()) & set(',[]="\\;= ')
            if bad or not name or not password.get_secret_value():
                raise ValueError(f'user {name!r}: names and passwords must avoid , [ ] = " ; \\')
        return v

    @property
    def admin(self) -> tuple[str, str]:
        name, password = next(iter(self.users.items()))
        return name, password.get_secret_value()


def listener_properties(security: BrokerSecurity, host: str, port: int) -> dict[str, str]:
    """server.properties lines of the SASL_SSL listener on ``host:port``."""
    admin, admin_password = security.admin
    scram = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin}" password="{admin_password}";'
    )
    plain_users = " ".join(f'user_{n}="{p.get_secret_value()}"' for n, p in security.users.items())
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{admin}" password="{admin_password}" {plain_users};'
    )
    lines = {
        "listener.security.protocol.map": f"{LISTENER}:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": LISTENER,
        "sasl.enabled.mechanisms": ",".join(MECHANISMS),
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(security.keystore),
        "ssl.client.auth": security.client_auth,
        "ssl.endpoint.identification.algorithm": "https",
    }
    if security.truststore is not None:
        lines["ssl.truststore.type"] = "PEM"
        lines["ssl.truststore.location"] = str(security.truststore)
    return lines


def scram_format_args(security: BrokerSecurity) -> list[str]:
    """``--add-scram`` arguments of ``kafka-storage format`` for every user and SCRAM hash."""
    args = []
    for name, password in security.users.items():
        for mech in MECHANISMS[:2]:
            args += ["--add-scram", f"{mech}=[name={name},password={password.get_secret_value()}]"]
    return args
