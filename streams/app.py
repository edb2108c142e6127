"""The Faust application of the worker: topics, the per-key state table, the agents.

Data path (every arrow is Kafka)::

    flows.v1 --[flow agent: decode, enrich, classify, pre-aggregate]-->
        voip-flows.v1 (topic)         VoIP records (voip-flows.v2 batches), one per city
        <app_id>-city-partials        one JSON partial per city, keyed by city,
                                      and one per exporter, keyed EXPORTER_KEY_PREFIX + address;
                                      a batch's partials go as one bundle per partition
                                      their keys hash to (pipeline.BUNDLE_KEY)
    <app_id>-city-partials --[keyed agent: table city_state[key]]-->
        voip-usage.v1                 closed city windows, JSON, once per window
        traffic.v1                    closed exporter windows (all traffic), JSON

Re-keying per batch by city (not per flow) sends every city's partials to one
partition, so exactly one worker owns a city and its table entry. The flow
agent bundles the partials of one batch whose keys hash to the same partition
(the producer's own partitioner, the one a tick for the key takes) into one
message: a dozen cities cost a few messages, not a dozen produce calls and
as many events for the keyed agent; the table
has a changelog topic, so a worker that takes over after a crash restores the
city's state. The agents are at-least-once: the city and exporter states
remember the last source offset they applied per flows.v1 partition and skip
re-deliveries.

flows.v1 is keyed by exporter, so the flow agent already sees each exporter on
one partition, but it cannot hold the exporter state itself: a Faust table is
only written by the stream that owns its partition, and an exporter that goes
quiet needs idle ticks to close its last windows, which the worker cannot put
on the collectors' flows.v1. Exporter partials therefore travel like city
partials, on the same internal topic and into the same table under keys that
start with :data:`EXPORTER_KEY_PREFIX` (a NUL, which no city name holds). One
topic and one table keep the worker's topology, and the work of a rebalance
(partitions to assign, changelogs to restore), as it was without exporters.

At-least-once needs every message of an assigned partition to reach the
agent; :class:`WorkerFaustApp` closes the one way Faust 0.15 loses them
across a rebalance (see :class:`KeepBuffersOnResume`).

:func:`build_app` is side-effect free until the worker runs the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from voipflow.schemas.topics import (
    WINDOW_MESSAGE_MAX_BYTES,
    WINDOW_TOPIC,
    KafkaConfig,
    kafka_client_options,
)
from voipflow.streams.commits import guard_commit_head, use_delivered_buffer
from voipflow.streams.config import WorkerConfig
from voipflow.streams.order import pin_read_offsets


class KeepBuffersOnResume(FlowControlEvent):
    """Flow control that empties the agents' buffers when flow is suspended, not resumed.

    Faust suspends flow and clears the agents' buffers when partitions are
    revoked; that drops what was fetched under the old assignment. When table
    recovery ends it resumes the stream partitions, seeks them to the committed
    offsets and only then resumes flow, which (in mode's ``FlowControlEvent``)
    clears the buffers again. Messages fetched in between belong to the new
    assignment, and the fetcher has already moved its read offsets past them,
    so the copies it fetches again after the seek are discarded as already
    read: the agent never sees those messages, and the offset commit passes
    over them (a flows.v1 batch lost for every city, seen in the worker kill
    test). Keeping the buffers at resume is safe: messages of an older
    assignment are skipped by the stream's generation check, and the
    re-fetched copies of kept messages are re-deliveries that the city state
    recognises by their source offset.
    """

    _resuming = False

    def resume(self) -> None:
        self._resuming = True
        try:
            super().resume()
        finally:
            self._resuming = False

    def clear(self) -> None:
        if not self._resuming:
            super().clear()


class WorkerFaustApp(faust.App):
    """The worker's Faust app: :class:`KeepBuffersOnResume` as its flow control, a
    producer buffer that commits wait for (:mod:`voipflow.streams.commits`), read
    offsets that a missing offset can be pinned at (:mod:`voipflow.streams.order`)."""

    @cached_property
    def read_offset_pins(self) -> dict[Any, int]:
        """The consumer's read-offset pins, for :class:`~voipflow.streams.order.OffsetGate`."""
        return {}

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return KeepBuffersOnResume(loop=self.loop)

    def _new_consumer(self) -> Any:
        # Commits never pass an unacked first message (see streams.commits).
        consumer = super()._new_consumer()
        guard_commit_head(consumer)
        # A passed-over offset can be fetched again (see streams.order).
        pin_read_offsets(consumer, self.read_offset_pins)
        return consumer

    def _new_producer(self) -> Any:
        # Commits wait for every changelog record (see streams.commits).
        producer = super()._new_producer()
        use_delivered_buffer(producer)
        return producer


@dataclass(slots=True)
class WorkerApp:
    app: faust.App
    flows: Any
    partials: Any
    usage: Any
    voip_flows: Any
    city_state: Any
    partials_topic: str
    traffic: Any


class WorkerSettingError(ValueError):
    """Settings of [kafka] and [worker] that contradict each other."""


def compression_codecs(kafka: KafkaConfig, worker: WorkerConfig) -> tuple[str | None, str | None]:
    """(Kafka client compression, Arrow IPC compression of voip-flows.v1) of the worker."""
    codec = kafka.compression
    if codec == "none":
        return None, None
    if worker.compression_layer == "kafka":
        return codec, None
    if codec not in ("lz4", "zstd"):
        raise WorkerSettingError(
            f"VOIPFLOW_KAFKA_COMPRESSION={codec!r}: Arrow IPC compresses with lz4 or zstd only; "
            "choose one or set VOIPFLOW_WORKER_COMPRESSION_LAYER=kafka"
        )
    return None, codec


#: The worker's one table: city and exporter window states.
CITY_STATE_TABLE = "city-state"


def partials_topic_name(worker: WorkerConfig) -> str:
    return f"{worker.app_id}-city-partials"


def changelog_topic_name(worker: WorkerConfig) -> str:
    """The city-state table's changelog (Faust names it after the app and table)."""
    return f"{worker.app_id}-{CITY_STATE_TABLE}-changelog"


def window_message_limits(kafka: KafkaConfig, worker: WorkerConfig) -> dict[str, int]:
    """The topics the worker writes window messages to, each with the
    ``max.message.bytes`` they need. The worker raises them to it at start
    (``raise_message_limits``), whoever created them: itself a moment before,
    the demo, an operator, an older version. The changelog, which Faust
    creates after that, gets it from the table's topic configs."""
    names = (kafka.usage_topic, partials_topic_name(worker), changelog_topic_name(worker))
    return dict.fromkeys(names, WINDOW_MESSAGE_MAX_BYTES)


#: Table and internal-topic keys of exporters start with this (NUL: never in a city name).
EXPORTER_KEY_PREFIX = "\x00"


def build_app(
    kafka: KafkaConfig, worker: WorkerConfig, bootstrap: str, data_dir: Path
) -> WorkerApp:
    """The Faust app with its topics and table.

    Agents are added by :mod:`voipflow.streams.agents`.
    """
    datadir = data_dir / "faust" / worker.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    servers = ";".join(f"kafka://{s.strip()}" for s in bootstrap.split(",") if s.strip())
    app = WorkerFaustApp(
        worker.app_id,
        broker=servers,
        store="memory://",  # state comes back from the changelog topic at start
        datadir=str(datadir),
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        producer_compression_type=compression_codecs(kafka, worker)[0],
        # A busy city's state and usage rows pass Kafka's default of 1 MB
        # (voipflow.schemas.topics.WINDOW_MESSAGE_MAX_BYTES); the request
        # carries some overhead beyond the message.
        producer_max_request_size=WINDOW_MESSAGE_MAX_BYTES + (1 << 20),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # A killed worker's partitions move to the others after this long.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # Partitions that appear after the group formed (a topic created or
        # grown meanwhile) are seen, and the group rebalanced by its leader,
        # within 10 s rather than Kafka's default of 5 min.
        consumer_metadata_max_age_ms=10_000,
        table_cleanup_interval=30.0,
        # Bytes everywhere: the contracts' own encoders run in the pipeline.
        key_serializer="raw",
        value_serializer="raw",
        # TLS and SASL of [kafka]: Faust's broker_credentials for aiokafka.
        **kafka_client_options(kafka, "faust"),
    )
    partials_name = partials_topic_name(worker)
    flows = app.topic(
        kafka.flows_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    partials = app.topic(
        partials_name,
        key_type=str,
        value_type=bytes,
        partitions=kafka.partitions,
    )
    usage = app.topic(
        kafka.usage_topic,
        key_type=str,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    voip_flows = app.topic(
        kafka.voip_flows_topic,
        key_type=str,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    city_state = app.Table(
        CITY_STATE_TABLE,
        key_type=str,
        value_type=bytes,
        partitions=kafka.partitions,
        extra_topic_configs=WINDOW_TOPIC,
        help="per-city and per-exporter window state (JSON), see streams.aggregate/traffic",
    )
    traffic = app.topic(
        kafka.traffic_topic,
        key_type=str,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    return WorkerApp(
        app,
        flows,
        partials,
        usage,
        voip_flows,
        city_state,
        partials_name,
        traffic,
    )
