"""Kafka administration voipflow needs at start: is the broker there, do the topics exist.

Both functions use kafka-python's admin client and translate its errors at
this boundary, so callers handle only the tree below. Every message is one
line that names the setting to fix (``VOIPFLOW_KAFKA_BOOTSTRAP`` by default).
Given the ``[kafka]`` settings (``security=``), they connect with its TLS and
SASL options, and a broker that refuses the credentials or a certificate that
does not verify fails at start naming the TLS or SASL setting to fix.

Errors::

    KafkaAdminError          anything that went wrong talking to Kafka here
    +-- BrokerUnreachable    no broker answered at the bootstrap address in time
    |   +-- AuthenticationFailed  TLS or SASL refused (certificate, user, password)
    +-- TopicError           the broker refused to create a topic (bad
                             replication factor, bad config, policy ...)

:func:`raise_message_limits` raises the ``max.message.bytes`` of existing
topics that are below what their messages need (topics created before a
limit was configured); a broker that refuses is a warning, not an error.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka import errors as kafka_errors

from voipflow.kafka_auth import diagnose
from voipflow.schemas.kafka_security import KafkaSecurity, kafka_client_options

log = logging.getLogger(__name__)

BOOTSTRAP_SETTING = "VOIPFLOW_KAFKA_BOOTSTRAP"


class KafkaAdminError(Exception):
    """A Kafka administration step failed; ``str()`` is one line."""


class BrokerUnreachable(KafkaAdminError):
    """No Kafka broker answered at the configured bootstrap address."""


class AuthenticationFailed(BrokerUnreachable):
    """A broker answered but TLS or SASL failed: a certificate, the user or the password."""


class TopicError(KafkaAdminError):
    """The broker refused to create or describe a topic."""


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for server in filter(None, (s.strip() for s in bootstrap.split(","))):
        host, _, port = server.rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


def _probe(bootstrap: str, timeout_s: float) -> str | None:
    """None if a bootstrap server accepts TCP, else why none does, in a few words."""
    reasons = []
    for host, port in _servers(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=min(timeout_s, 2.0)):
                return None
        except socket.gaierror:
            reasons.append(f"cannot resolve {host}")
        except ConnectionRefusedError:
            reasons.append(f"{host}:{port} refused the connection")
        except OSError as exc:
            reasons.append(f"{host}:{port}: {exc.strerror or exc}")
    return "; ".join(reasons) or "no servers given"


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 50:
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def _quiet_client_logs() -> Iterator[list[str]]:
    """Silence kafka-python while it bootstraps, keeping what it said went wrong.

    It logs every failed connection attempt at ERROR; our caller turns the
    failure into one line naming the setting (the kept lines say which: a
    refused password, a certificate that does not verify), so those lines are
    only noise.
    """
    logger = logging.getLogger("kafka")
    old_level, old_propagate = logger.level, logger.propagate
    keep = _Keep()
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(keep)
    try:
        yield keep.messages
    finally:
        logger.removeHandler(keep)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


_S = "VOIPFLOW_KAFKA_"


@contextlib.contextmanager
def _admin(
    bootstrap: str, timeout_s: float, setting: str, security: KafkaSecurity | None = None
) -> Iterator[KafkaAdminClient]:
    if not _servers(bootstrap):
        raise BrokerUnreachable(f"{setting} is empty: set it to host:port of a Kafka broker")
    timeout_ms = max(1000, int(timeout_s * 1000))
    options = kafka_client_options(security) if security is not None else {}
    try:
        with _quiet_client_logs() as said:
            client = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="voipflow-admin",
                bootstrap_timeout_ms=timeout_ms,
                request_timeout_ms=max(timeout_ms, 5000),
                **options,
            )
    except kafka_errors.KafkaError as exc:
        reason = _probe(bootstrap, 1.0)
        refused = diagnose(said, bootstrap, security) if reason is None else None
        if refused is not None:
            raise AuthenticationFailed(refused) from None
        reason = reason or (
            "a server accepts TCP but does not answer as Kafka; "
            f"check {_S}SECURITY_PROTOCOL against the broker's listener"
        )
        raise BrokerUnreachable(
            f"{setting}={bootstrap}: no Kafka broker answered within {timeout_s:.0f} s ({reason})"
        ) from exc
    try:
        yield client
    finally:
        client.close()


def wait_for_broker(
    bootstrap: str,
    timeout_s: float = 10.0,
    *,
    setting: str = BOOTSTRAP_SETTING,
    security: KafkaSecurity | None = None,
) -> None:
    """Return once a broker at ``bootstrap`` answers; else raise :class:`BrokerUnreachable`.

    Meant for process start: an unreachable broker fails within ``timeout_s``
    with one line naming ``setting``, instead of clients retrying forever. A
    broker that is still starting (port not open yet) is waited for.
    """
    if not _servers(bootstrap):
        raise BrokerUnreachable(f"{setting} is empty: set it to host:port of a Kafka broker")
    deadline = time.monotonic() + timeout_s
    while (reason := _probe(bootstrap, timeout_s)) is not None:
        if time.monotonic() >= deadline:
            raise BrokerUnreachable(
                f"{setting}={bootstrap}: no Kafka broker answered within {timeout_s:.0f} s "
                f"({reason})"
            )
        time.sleep(0.2)
    remaining = max(1.0, deadline - time.monotonic())
    with _admin(bootstrap, remaining, setting, security) as admin:
        try:
            admin.describe_cluster()
        except kafka_errors.KafkaError as exc:
            raise BrokerUnreachable(
                f"{setting}={bootstrap}: the broker answered but cannot describe the cluster "
                f"({type(exc).__name__}: {exc})"
            ) from exc


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    counts = {}
    for topic in admin.describe_topics(names):
        if topic.get("error_code", 0) == 0:
            counts[topic["name"]] = len(topic.get("partitions") or [])
    return counts


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    *,
    min_insync_replicas: int = 0,
    timeout_s: float = 30.0,
    setting: str = BOOTSTRAP_SETTING,
    security: KafkaSecurity | None = None,
) -> dict[str, int]:
    """Create the missing ones of ``topics`` (name -> partitions); return partitions per topic.

    Idempotent: existing topics are left as they are (also when another process
    creates one at the same moment). An existing topic with fewer partitions
    than wanted is logged as a warning, not changed, because adding partitions
    moves keys to other partitions. ``configs`` maps a topic name to its topic
    configs (``cleanup.policy``, ``retention.ms`` ...), used when it is created;
    ``min_insync_replicas`` (when not 0) is added to every created topic's configs.
    """
    configs = configs or {}
    wanted = dict(topics)
    if min_insync_replicas:
        isr = {"min.insync.replicas": str(min_insync_replicas)}
        configs = {name: {**isr, **configs.get(name, {})} for name in wanted}
    with _admin(bootstrap, min(timeout_s, 10.0), setting, security) as admin:
        try:
            existing = set(admin.list_topics())
            missing = {name: n for name, n in wanted.items() if name not in existing}
            if missing:
                _create(admin, missing, replication_factor, configs, timeout_s)
            counts = _partition_counts(admin, list(wanted))
            unseen = [name for name in wanted if name not in counts]
            if unseen:
                # Created (by us or by another process a moment ago) but not yet
                # in this broker's metadata cache: KRaft propagates it later.
                admin.wait_for_topics(unseen, timeout_ms=int(timeout_s * 1000))
                counts.update(_partition_counts(admin, unseen))
        except kafka_errors.KafkaError as exc:
            raise TopicError(
                f"{setting}={bootstrap}: topic administration failed ({type(exc).__name__}: {exc})"
            ) from exc
    for name, want in wanted.items():
        have = counts.get(name)
        if have is None:
            raise TopicError(f"topic {name} does not exist after creating it")
        if have < want:
            log.warning(
                "topic has fewer partitions than configured; only that many consumers "
                "share its load",
                extra={"topic": name, "partitions": have, "wanted": want},
            )
    return counts


MESSAGE_LIMIT = "max.message.bytes"


def raise_message_limits(
    bootstrap: str,
    limits: Mapping[str, int],
    timeout_s: float = 30.0,
    setting: str = BOOTSTRAP_SETTING,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Set ``max.message.bytes`` of each existing topic of ``limits`` (name ->
    bytes) that is below it, or has no value of its own (the broker's default,
    1 MB unless changed); return the topics raised. Missing topics are left to
    whoever creates them. A refusal (an ACL, a policy) is logged with the
    command that does it by hand: the topic works until a message passes its
    limit.
    """
    from kafka.admin import ConfigResource, ConfigResourceType

    raised: list[str] = []
    with _admin(bootstrap, min(timeout_s, 10.0), setting, security) as admin:
        try:
            existing = set(admin.list_topics())
            names = [n for n in limits if n in existing]
            if not names:
                return raised
            described = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
            ).get("topic", {})
        except kafka_errors.KafkaError as exc:
            raise TopicError(
                f"{setting}={bootstrap}: cannot read topic configs ({type(exc).__name__}: {exc})"
            ) from exc
        for name in names:
            entry = described.get(name, {}).get(MESSAGE_LIMIT)
            have = int(entry["value"]) if entry else None
            want = int(limits[name])
            if have is not None and have >= want:
                continue
            change = ConfigResource(
                ConfigResourceType.TOPIC, name, configs={MESSAGE_LIMIT: str(want)}
            )
            try:
                status = admin.alter_configs([change]).get("topic", {}).get(name)
            except kafka_errors.KafkaError as exc:
                status = f"{type(exc).__name__}: {exc}"
            if status == "OK":
                raised.append(name)
                log.info(
                    "raised a topic's message size limit",
                    extra={
                        "topic": name,
                        "from": have if have is not None else "default",
                        "to": want,
                    },
                )
            else:
                log.warning(
                    f"topic {name} keeps its message size limit ({status}); messages above it "
                    f"will be refused: run kafka-configs.sh --alter --entity-type topics "
                    f"--entity-name {name} --add-config {MESSAGE_LIMIT}={want}",
                )
    return raised


def _create(
    admin: KafkaAdminClient,
    missing: Mapping[str, int],
    replication_factor: int,
    configs: Mapping[str, Mapping[str, str]],
    timeout_s: float,
) -> None:
    request: dict[str, dict[str, Any]] = {
        name: {
            "num_partitions": partitions,
            "replication_factor": replication_factor,
            "configs": {k: str(v) for k, v in configs.get(name, {}).items()},
        }
        for name, partitions in missing.items()
    }
    started = time.monotonic()
    result = admin.create_topics(request, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    created = []
    for topic in result.get("topics", []):
        code = topic.get("error_code", 0)
        if code == 0:
            created.append(topic["name"])
        elif kafka_errors.for_code(code) is not kafka_errors.TopicAlreadyExistsError:
            err = kafka_errors.for_code(code)
            hint = ""
            if err is kafka_errors.InvalidReplicationFactorError:
                hint = f" (VOIPFLOW_KAFKA_REPLICATION_FACTOR={replication_factor})"
            raise TopicError(
                f"cannot create topic {topic['name']}: {err.__name__}: "
                f"{topic.get('error_message') or 'refused by the broker'}{hint}"
            )
    if created:
        # The create response comes before every partition has a leader (KRaft
        # propagates metadata asynchronously); producing right away would fail.
        admin.wait_for_topics(created, timeout_ms=int(timeout_s * 1000))
        log.info(
            "created topics",
            extra={"topics": ",".join(created), "ms": int((time.monotonic() - started) * 1000)},
        )
