"""How every voipflow Kafka client authenticates and encrypts: TLS and SASL settings.

Production Kafka runs with TLS and SASL; every producer, consumer and admin
client of voipflow (the collector's publisher, the sink, the worker's Faust
app, the topic administration, the demo's probes, the enforcement consumers)
connects with the same ``[kafka]`` settings. :class:`KafkaSecurity` declares
them (``KafkaConfig`` inherits it) and checks them at start: a missing or
unreadable file, a certificate that does not load, or a clear-text password
fails with a message naming the setting. :func:`kafka_client_options` is the
one place that turns them into keyword arguments of each client library, so
a client added later honours them by passing ``**kafka_client_options(cfg)``.

The password never appears in ``repr``/``str`` of the settings (``SecretStr``),
nor in validation errors (inputs are hidden); it is read from
``VOIPFLOW_KAFKA_SASL_PASSWORD`` or from the file
``VOIPFLOW_KAFKA_SASL_PASSWORD_FILE`` names (a mounted secret), never both.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationInfo, field_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
ClientLibrary = Literal["kafka-python", "aiokafka", "faust"]

_TLS = ("SSL", "SASL_SSL")
_SASL = ("SASL_PLAINTEXT", "SASL_SSL")
_P = "VOIPFLOW_KAFKA_"


def _readable_file(value: Path | None, setting: str) -> Path | None:
    if value is None or str(value) in ("", "."):
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"{setting}: no such file {path}")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc
    return path


class KafkaSecurity(BaseModel):
    """The TLS and SASL part of ``[kafka]``; fields are checked in declaration order."""

    model_config = ConfigDict(validate_default=True, hide_input_in_errors=True)

    #: How clients talk to the brokers: ``PLAINTEXT``, ``SSL`` (TLS),
    #: ``SASL_PLAINTEXT`` (user and password, no TLS) or ``SASL_SSL`` (both).
    security_protocol: SecurityProtocol = "PLAINTEXT"
    #: SASL mechanism with ``SASL_*``: ``SCRAM-SHA-512``, ``SCRAM-SHA-256``, or
    #: ``PLAIN`` (only over TLS: it sends the password itself).
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    #: SASL user name (required with ``SASL_*``).
    sasl_username: str = ""
    #: SASL password; never logged. Prefer ``sasl_password_file``.
    sasl_password: SecretStr = SecretStr("")
    #: File holding the SASL password (a mounted secret; one trailing newline
    #: is ignored). Set this or ``sasl_password``, not both.
    sasl_password_file: Path | None = None
    #: CA certificates (PEM) that sign the brokers' certificates; empty: the
    #: system's trusted CAs.
    ssl_cafile: Path | None = None
    #: Client certificate chain (PEM) for mutual TLS; empty: none.
    ssl_certfile: Path | None = None
    #: Private key (PEM) of the client certificate; empty: inside ``ssl_certfile``.
    ssl_keyfile: Path | None = None
    #: Password of an encrypted ``ssl_keyfile``; never logged.
    ssl_key_password: SecretStr = SecretStr("")
    #: Check that a broker's certificate names the host connected to. Turn it
    #: off only for brokers reached through addresses their certificates lack.
    ssl_check_hostname: bool = True

    @field_validator("sasl_mechanism")
    @classmethod
    def _check_mechanism(cls, v: str, info: ValidationInfo) -> str:
        if v == "PLAIN" and info.data.get("security_protocol") == "SASL_PLAINTEXT":
            raise ValueError(
                f"{_P}SASL_MECHANISM=PLAIN with {_P}SECURITY_PROTOCOL=SASL_PLAINTEXT would "
                f"send the password in clear text: use {_P}SECURITY_PROTOCOL=SASL_SSL or "
                f"{_P}SASL_MECHANISM=SCRAM-SHA-512"
            )
        return v

    @field_validator("sasl_username")
    @classmethod
    def _check_username(cls, v: str, info: ValidationInfo) -> str:
        protocol = info.data.get("security_protocol")
        if protocol in _SASL and not v.strip():
            raise ValueError(
                f"{_P}SECURITY_PROTOCOL={protocol} needs a user: set {_P}SASL_USERNAME"
            )
        if protocol not in _SASL and v.strip():
            raise ValueError(
                f"{_P}SASL_USERNAME is set but {_P}SECURITY_PROTOCOL={protocol} uses no SASL: "
                "use SASL_SSL or unset it"
            )
        return v.strip()

    @field_validator("sasl_password_file")
    @classmethod
    def _check_password(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        path = _readable_file(v, f"{_P}SASL_PASSWORD_FILE")
        protocol = info.data.get("security_protocol")
        given = info.data.get("sasl_password")
        in_env = given is not None and bool(given.get_secret_value())
        if path is not None and in_env:
            raise ValueError(f"both {_P}SASL_PASSWORD and {_P}SASL_PASSWORD_FILE are set: keep one")
        if path is not None and not _read_secret(path):
            raise ValueError(f"{_P}SASL_PASSWORD_FILE: {path} is empty")
        if protocol in _SASL and path is None and not in_env:
            raise ValueError(
                f"{_P}SECURITY_PROTOCOL={protocol} needs a password: set "
                f"{_P}SASL_PASSWORD_FILE (a file holding it) or {_P}SASL_PASSWORD"
            )
        if protocol not in _SASL and (path is not None or in_env):
            raise ValueError(
                f"a SASL password is set but {_P}SECURITY_PROTOCOL={protocol} uses no SASL: "
                "use SASL_SSL or unset it"
            )
        return path

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _check_tls_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        setting = f"{_P}{str(info.field_name).upper()}"
        path = _readable_file(v, setting)
        protocol = info.data.get("security_protocol")
        if path is not None and protocol not in _TLS:
            raise ValueError(
                f"{setting} is set but {_P}SECURITY_PROTOCOL={protocol} uses no TLS: "
                "use SSL or SASL_SSL, or unset it"
            )
        if path is not None and info.field_name == "ssl_cafile":
            try:
                ssl.create_default_context(cafile=str(path))
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(
                    f"{setting}: {path} holds no usable CA certificate ({exc})"
                ) from exc
        return path

    @field_validator("ssl_key_password")
    @classmethod
    def _check_client_cert(cls, v: SecretStr, info: ValidationInfo) -> SecretStr:
        cert, key = info.data.get("ssl_certfile"), info.data.get("ssl_keyfile")
        if key is not None and cert is None:
            raise ValueError(f"{_P}SSL_KEYFILE is set without {_P}SSL_CERTFILE: set both")
        if v.get_secret_value() and key is None and cert is None:
            raise ValueError(f"{_P}SSL_KEY_PASSWORD is set without a key: set {_P}SSL_KEYFILE")
        if cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            try:
                ctx.load_cert_chain(
                    str(cert), str(key) if key else None, v.get_secret_value() or None
                )
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"{_P}SSL_CERTFILE={cert} with {_P}SSL_KEYFILE={key or '(in the certfile)'} "
                    f"does not load ({type(exc).__name__}: {getattr(exc, 'reason', None) or exc}): "
                    f"check the key belongs to the certificate and {_P}SSL_KEY_PASSWORD"
                ) from None
        return v

    # -- derived --------------------------------------------------------------

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in _TLS

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in _SASL

    def sasl_secret(self) -> str:
        """The SASL password, from the file when one is configured (read now: rotation works)."""
        if self.sasl_password_file is not None:
            return _read_secret(self.sasl_password_file)
        return self.sasl_password.get_secret_value()

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: the CA file (or system CAs), client certificate, hostname check."""
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        ctx.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile is not None:
            ctx.load_cert_chain(
                str(self.ssl_certfile),
                str(self.ssl_keyfile) if self.ssl_keyfile else None,
                self.ssl_key_password.get_secret_value() or None,
            )
        return ctx


def _read_secret(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text


def kafka_client_options(
    kafka_config: KafkaSecurity, library: ClientLibrary = "kafka-python"
) -> dict[str, Any]:
    """Keyword arguments that make a client of ``library`` connect as configured.

    * ``kafka-python`` (``KafkaProducer``, ``KafkaConsumer``, ``KafkaAdminClient``):
      ``security_protocol``, ``sasl_*``, ``ssl_cafile``, ``ssl_certfile``,
      ``ssl_keyfile``, ``ssl_password``, ``ssl_check_hostname``.
    * ``aiokafka`` (``AIOKafkaProducer``/``AIOKafkaConsumer``): ``security_protocol``,
      ``sasl_*`` and an ``ssl_context``.
    * ``faust`` (``faust.App(...)``): ``broker_credentials`` (``SASLCredentials``
      or ``SSLCredentials`` carrying the TLS context); empty for PLAINTEXT.

    Pass them with ``**``: PLAINTEXT gives only ``security_protocol`` (or
    nothing for Faust), so the default stays the clients' own default.
    """
    k = kafka_config
    if library == "faust":
        return _faust_options(k)
    opts: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.uses_sasl:
        opts.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_secret(),
        )
    if not k.uses_tls:
        return opts
    if library == "aiokafka":
        opts["ssl_context"] = k.ssl_context()
        return opts
    opts["ssl_check_hostname"] = k.ssl_check_hostname
    if k.ssl_cafile is not None:
        opts["ssl_cafile"] = str(k.ssl_cafile)
    if k.ssl_certfile is not None:
        opts["ssl_certfile"] = str(k.ssl_certfile)
        if k.ssl_keyfile is not None:
            opts["ssl_keyfile"] = str(k.ssl_keyfile)
        if k.ssl_key_password.get_secret_value():
            opts["ssl_password"] = k.ssl_key_password.get_secret_value()
    return opts


def _faust_options(k: KafkaSecurity) -> dict[str, Any]:
    import faust

    if k.uses_sasl:
        # A TLS context turns Faust's SASLCredentials into SASL_SSL; none: SASL_PLAINTEXT.
        creds: Any = faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_secret(),
            ssl_context=k.ssl_context() if k.uses_tls else None,
            mechanism=k.sasl_mechanism,
        )
        return {"broker_credentials": creds}
    if k.uses_tls:
        return {"broker_credentials": faust.SSLCredentials(k.ssl_context())}
    return {}
