"""Why a Kafka client could not connect with TLS or SASL, in one line naming the setting.

kafka-python reports a failed bootstrap as a timeout. What went wrong is in
its log lines (a refused password, a certificate that does not verify) when
it managed to read the broker's answer, but a broker that refuses a password
also closes the connection, and the client sometimes sees only the close.
:func:`diagnose` therefore reads the client's lines first, then checks the
TLS handshake itself (deterministic: the CA, the host name, the protocol),
and only then concludes that the SASL exchange was refused. The messages never
hold a password.
"""

from __future__ import annotations

import socket
import ssl

from voipflow.schemas.kafka_security import KafkaSecurity

_S = "VOIPFLOW_KAFKA_"


def diagnose(said: list[str], bootstrap: str, security: KafkaSecurity | None) -> str | None:
    """One line naming the TLS or SASL setting that failed, or None if none did."""
    found = _from_client_log(" ".join(said), bootstrap, security)
    if found is not None or security is None or security.security_protocol == "PLAINTEXT":
        return found
    if security.uses_tls:
        found = _tls_handshake(bootstrap, security)
        if found is not None:
            return found
    if security.uses_sasl:
        return _sasl_refused(
            bootstrap, security, "closed the connection during SASL authentication"
        )
    return None


def _sasl_refused(bootstrap: str, security: KafkaSecurity | None, what: str) -> str:
    user = security.sasl_username if security is not None else "?"
    mech = security.sasl_mechanism if security is not None else "?"
    return (
        f"{_S}SASL_USERNAME={user}: the broker at {bootstrap} {what} ({mech}): this user's "
        f"password is wrong or the broker does not offer {mech}; check "
        f"{_S}SASL_PASSWORD_FILE or {_S}SASL_PASSWORD and {_S}SASL_MECHANISM"
    )


def _from_client_log(text: str, bootstrap: str, security: KafkaSecurity | None) -> str | None:
    low = text.lower()
    if "authentication failed" in low or "saslauthenticationfailed" in low:
        return _sasl_refused(bootstrap, security, "refused the credentials")
    if "authorization" in low and "failed" in low:
        return (
            f"{_S}SASL_USERNAME: the broker at {bootstrap} does not authorise this user "
            "to describe the cluster: grant it (kafka-acls) or use another user"
        )
    if "certificate verify failed" in low:
        return _verify_failed(low, bootstrap, security)
    if "wrong_version_number" in low or "wrong version number" in low:
        return _not_tls(bootstrap, security)
    return None


def _verify_failed(low: str, bootstrap: str, security: KafkaSecurity | None) -> str:
    if "mismatch" in low:
        return (
            f"{_S}BOOTSTRAP={bootstrap}: the broker's certificate does not name this host "
            f"(hostname verification, {_S}SSL_CHECK_HOSTNAME): connect by a name the "
            "certificate holds"
        )
    cafile = security.ssl_cafile if security is not None else None
    return (
        f"{_S}SSL_CAFILE={cafile or '(system CAs)'}: the certificate of the broker at "
        f"{bootstrap} does not verify: set the CA that signed it"
    )


def _not_tls(bootstrap: str, security: KafkaSecurity | None) -> str:
    protocol = security.security_protocol if security is not None else "PLAINTEXT"
    return (
        f"{_S}SECURITY_PROTOCOL={protocol}: the broker at {bootstrap} does not speak TLS "
        "there: use PLAINTEXT or SASL_PLAINTEXT, or the broker's TLS listener"
    )


def _tls_handshake(bootstrap: str, security: KafkaSecurity) -> str | None:
    """Why a TLS handshake with the first reachable bootstrap server fails, or None."""
    ctx = security.ssl_context()
    for server in filter(None, (s.strip() for s in bootstrap.split(","))):
        host, _, port = server.rpartition(":")
        host = host.strip("[]")
        try:
            with (
                socket.create_connection((host, int(port)), timeout=5.0) as raw,
                ctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                tls.getpeercert()
            return None
        except ssl.SSLCertVerificationError as exc:
            return _verify_failed(f"certificate verify failed {exc}".lower(), bootstrap, security)
        except ssl.SSLError as exc:
            if "wrong_version_number" in str(exc).lower():
                return _not_tls(bootstrap, security)
            return (
                f"{_S}SECURITY_PROTOCOL={security.security_protocol}: the TLS handshake with "
                f"{server} failed ({exc.reason or exc}); if the broker requires a client "
                f"certificate, set {_S}SSL_CERTFILE and {_S}SSL_KEYFILE"
            )
        except OSError:
            continue
    return None
