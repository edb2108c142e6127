"""The Kafka topics the contracts travel on, and the broker that carries them.

One settings model (``[kafka]``, ``VOIPFLOW_KAFKA_*``) shared by the
collectors' wiring, the worker (:mod:`voipflow.streams`) and the sink
(:mod:`voipflow.storage`): the topic names are part of the contracts listed in the
README, so they live beside the schemas rather than in one of the
applications that use them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from voipflow.schemas.kafka_security import KafkaSecurity, kafka_client_options

__all__ = ["KafkaConfig", "KafkaSecurity", "kafka_client_options"]

#: Topic configs of rules.v1 (and of the evaluator's and ledger's state
#: topics): compacted, so a consumer reading from the start gets the latest
#: message per key, and a tombstone removes the key.
COMPACTED_TOPIC = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}

#: The largest message the worker writes to its window topics: a city's state
#: in its table's changelog, a bundle of partials, a closed window's usage row.
#: They carry the exact subscriber hashes of a window (8 bytes each in a state,
#: about 20 characters in a usage row), so they grow with the subscribers a
#: city has in a window; Kafka's default of 1 MB was reached at 340,000
#: flows/s on two cores (benchmarks/e2e_bench.py), and the worker's producer
#: then stopped. 32 MiB holds about 1.5 million subscribers in one usage row.
WINDOW_MESSAGE_MAX_BYTES = 32 << 20

#: Topic configs of the topics that carry such messages.
WINDOW_TOPIC = {"max.message.bytes": str(WINDOW_MESSAGE_MAX_BYTES)}


class KafkaConfig(KafkaSecurity):
    """``[kafka]``: brokers and topics, and (inherited) the TLS and SASL of every client.

    Every Kafka client passes ``**kafka_client_options(kafka_config)`` (see
    :mod:`voipflow.schemas.kafka_security`) so it connects as configured.
    """

    #: Bootstrap servers, comma separated. Empty: use the local broker that
    #: ``voipflow kafka start`` runs (its address is in the data directory).
    bootstrap: str = ""
    #: Partitions of the topics voipflow creates.
    partitions: int = Field(4, ge=1)
    #: Replication factor of the topics voipflow creates (3 in production).
    replication_factor: int = Field(1, ge=1)
    #: ``min.insync.replicas`` of the topics voipflow creates: with producers'
    #: acks=all, a write is acknowledged once this many replicas have it (2 with
    #: replication factor 3). 0 leaves the broker's default.
    min_insync_replicas: int = Field(0, ge=0)
    #: Seconds a process waits at start for a broker to answer. Past it, the
    #: process exits with one line naming VOIPFLOW_KAFKA_BOOTSTRAP rather than
    #: retrying forever.
    connect_timeout_s: float = Field(30.0, gt=0)
    #: Compression of produced messages.
    compression: Literal["none", "gzip", "lz4", "zstd"] = "lz4"
    #: Flow batches from the collectors (schemas/flowbatch.py).
    flows_topic: str = "flows.v1"
    #: Classified VoIP flows from the workers (schemas/voipflows.py).
    voip_flows_topic: str = "voip-flows.v1"
    #: Closed usage windows per city and app (schemas/json/voip-usage.v1.json).
    usage_topic: str = "voip-usage.v1"
    #: Closed traffic windows per exporter, all flows (schemas/json/traffic.v1.json).
    traffic_topic: str = "traffic.v1"
    #: Rules for enforcement points.
    rules_topic: str = "rules.v1"
    #: Enforcement points' feedback on rules.
    feedback_topic: str = "rules-feedback.v1"
    #: The rule ledger's state changes (schemas/json/rule-events.v1.json).
    rule_events_topic: str = "rule-events.v1"
    #: Per-exporter health reports from the collectors (schemas/json/exporter-health.v1.json).
    health_topic: str = "exporter-health.v1"

    @field_validator("min_insync_replicas")
    @classmethod
    def _check_min_isr(cls, v: int, info: ValidationInfo) -> int:
        rf = info.data.get("replication_factor")
        if rf is not None and v > rf:
            raise ValueError(
                f"must not exceed replication_factor ({rf}): no write could ever be acknowledged"
            )
        return v

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, v: str) -> str:
        for server in filter(None, (s.strip() for s in v.split(","))):
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server!r}")
        return v
