"""The ClickHouse sink: Kafka topics -> batched, idempotent, columnar inserts.

One kafka-python consumer (group ``voipflow-sink``) reads voip-flows (v2; v1 still read),
voip-usage.v1, traffic.v1 and exporter-health.v1. Messages are parsed into columns
(:mod:`voipflow.storage.sink.tables`) and gathered per topic partition until a batch
holds ``batch_rows`` rows or its oldest message waited ``batch_delay_s``
(``window_batch_delay_s`` for the usage and traffic topics' closed windows); the
batch then goes to ClickHouse in one columnar insert and only after that
insert succeeded are its offsets committed.

Exactly once (intents, tokens, replays cut at the same offsets, first copies
of re-published windows) is :mod:`voipflow.storage.sink.replay`; republished
voip-flows messages (seen at their source position before) are left out by
:mod:`voipflow.storage.sink.sources`; the ``pipeline_stats``
rows are :mod:`voipflow.storage.sink.stats`; the metrics :mod:`voipflow.storage.sink.metrics`.

Failures
--------
A message that cannot be parsed is counted by topic and reason, logged at a
bounded rate, optionally copied to a dead-letter topic, and its offset is
committed with the batch around it: a poison message never blocks. A
transient ClickHouse error pauses consumption (``pause()``), waits with
exponential backoff (polling so the group membership stays alive), retries
the same batch and resumes: Kafka holds the backlog. A permanent error stops
the sink with one message naming the table and the cause; the batch stays
uncommitted.

Errors: :mod:`voipflow.storage.sink.errors`.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voipflow.schemas.topics import KafkaConfig, kafka_client_options
from voipflow.schemas.voipflows import PositionError, SourcePosition, read_position
from voipflow.storage.clickhouse import ClickHouse, ClickHouseError, PermanentError, connect
from voipflow.storage.config import ClickHouseConfig, SinkConfig
from voipflow.storage.sink.assignment import AssignmentWatch, no_auto_create
from voipflow.storage.sink.errors import SinkStopped
from voipflow.storage.sink.metrics import SinkMetrics
from voipflow.storage.sink.replay import (
    batch_token,
    drop_present,
    first_copies,
    intent_metadata,
    pending_last,
)
from voipflow.storage.sink.sources import SourceMarks, read_marks, with_marks
from voipflow.storage.sink.stats import StatsWriter, stats_rows
from voipflow.storage.sink.tables import (
    BadMessage,
    Part,
    TableSpec,
    combine,
    default_specs,
    with_offsets,
)
from voipflow.storage.sink.targets import TableInfo, adapt, check_tables

log = logging.getLogger(__name__)

#: Upper bound of one blocking Kafka call (offset commit, committed offsets).
KAFKA_CALL_MS = 30_000
#: Seconds between checks that partitions with messages are being fetched.
PROGRESS_CHECK_S = 10.0
#: How long a sink waits for partitions before it says so (and again after as long).
UNASSIGNED_WARNING_S = 30.0


@dataclass(slots=True)
class _Batch:
    spec: TableSpec
    parts: list[Part] = field(default_factory=list)
    rows: int = 0
    first: int = -1
    last: int = -1
    since: float = 0.0
    bad: list[tuple[int, str]] = field(default_factory=list)
    #: Source marks as of ``first`` (what an intent at ``first`` carries).
    marks: SourceMarks = field(default_factory=SourceMarks)
    #: Republished voip-flows messages left out, and their rows.
    republished: int = 0
    republished_rows: int = 0


class _Abandon(Exception):
    """The batch must not be committed (partition revoked or sink stopping)."""


class Sink:
    """The sink component: ``start()`` runs the loop in a thread, ``stop()`` ends it."""

    name = "sink"

    def __init__(
        self,
        config: SinkConfig,
        kafka: KafkaConfig,
        clickhouse: ClickHouseConfig,
        data_dir: Path | str,
        *,
        bootstrap: str | None = None,
        ch: ClickHouse | None = None,
        specs: Sequence[TableSpec] | None = None,
        metrics: SinkMetrics | None = None,
    ) -> None:
        self.config = config
        #: The sink's Prometheus metrics (a fresh registry unless one is given).
        self.metrics = metrics if metrics is not None else SinkMetrics()
        self.kafka = kafka
        self.clickhouse_config = clickhouse
        self.data_dir = Path(data_dir)
        self.bootstrap = bootstrap if bootstrap is not None else kafka.bootstrap
        if not self.bootstrap:
            raise ValueError("no Kafka bootstrap servers given")
        all_specs = list(
            specs
            if specs is not None
            else default_specs(
                kafka.voip_flows_topic,
                kafka.usage_topic,
                kafka.health_topic,
                traffic_topic=kafka.traffic_topic,
                flows_table=config.flows_table,
                rules_topic=kafka.rules_topic,
                rule_events_topic=kafka.rule_events_topic,
            )
        )
        wanted = {t.strip() for t in config.topics.split(",") if t.strip()}
        unknown = wanted - {s.topic for s in all_specs}
        if unknown:
            raise ValueError(f"topics {sorted(unknown)} are not sink topics")
        self.specs = {s.topic: s for s in all_specs if not wanted or s.topic in wanted}
        self._ch = ch
        self._own_ch = ch is None
        self._consumer: Any = None
        self._watch: AssignmentWatch | None = None
        self._producer: Any = None
        self._tables: dict[str, TableInfo] = {}
        self._batches: dict[Any, _Batch] = {}
        self._pinned: dict[Any, int] = {}  # tp -> last offset of an intent to replay
        self._fresh: set[Any] = set()  # assigned, committed metadata not read yet
        self._uncertain: set[Any] = set()  # next insert's outcome may be in already
        self._held: list[Any] = []  # records polled during a retry, processed after it
        self._committed: dict[Any, int] = {}
        #: Source marks per partition, as of the last message added
        #: (storage.sink.sources); unknown until its committed metadata is read.
        self._marks: dict[Any, SourceMarks] = {}
        #: End offsets of the topics' partitions when the loop started (or
        #: when a partition unknown then was first assigned): an exit when
        #: idle waits until those are committed.
        self._end_offsets: dict[Any, int] = {}
        self._inserts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set when the loop ended; ``failure`` holds a permanent error.
        self.done = threading.Event()
        self.failure: SinkStopped | None = None
        #: (topic, partition) the group gave this sink, as of the last rebalance.
        self.assigned: frozenset[tuple[str, int]] = frozenset()
        self.bad_messages: dict[tuple[str, str], int] = {}
        self.rows_inserted: dict[str, int] = {}
        #: Transient ClickHouse errors met (each one paused and retried).
        self.transient_errors = 0
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._stats: StatsWriter | None = None
        #: Positions seen by the last progress check (see _check_progress).
        self._positions: dict[Any, int | None] = {}
        self._progress_due = 0.0

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._ch is None:
            self._ch = connect(self.clickhouse_config, self.data_dir)
        self._check_tables()
        from kafka.errors import KafkaError

        try:
            self._consumer = self._make_consumer()
        except KafkaError as exc:
            raise SinkStopped(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        if self.config.dead_letter_topic:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", **kafka_client_options(self.kafka)
            )
        self._thread = threading.Thread(target=self._run_guarded, name="sink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._consumer is not None:
            # Never commit on close: only flushed batches are committed.
            self._consumer.close(autocommit=False)
            self._consumer = None
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None
        if self._own_ch and self._ch is not None:
            self._ch.close()
            self._ch = None

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    # -- set-up -----------------------------------------------------------------

    def _make_consumer(self) -> Any:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        sink = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                sink._forget(revoked)
                sink.assigned = frozenset()
                if revoked:
                    log.info("partitions revoked", extra={"partitions": _tp_list(revoked)})

            def on_partitions_assigned(self, assigned: Any) -> None:
                sink._fresh.update(assigned)
                sink.assigned = frozenset((tp.topic, tp.partition) for tp in assigned)
                log.info(
                    "partitions assigned",
                    extra={"group": sink.config.group_id, "partitions": _tp_list(assigned)},
                )

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.config.group_id,
            client_id=f"voipflow-sink-{self.instance}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2000,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            session_timeout_ms=int(self.config.session_timeout_s * 1000),
            heartbeat_interval_ms=max(500, int(self.config.session_timeout_s * 1000 / 4)),
            # A sink started before the worker must not create the topics
            # itself, with the broker's default of one partition.
            allow_auto_create_topics=False,
            **kafka_client_options(self.kafka),
        )
        no_auto_create(consumer)
        listener = Listener()
        consumer.subscribe(sorted(self.specs), listener=listener)
        self._watch = AssignmentWatch(consumer, self.specs, listener, component="sink")
        return consumer

    def _check_tables(self) -> None:
        assert self._ch is not None
        self._tables = check_tables(self._ch, self.specs.values())
        self._stats = StatsWriter(self._ch, self.instance, self.config.stats_interval_s)
        self._stats.check_table()

    # -- main loop ----------------------------------------------------------------

    def _run_guarded(self) -> None:
        try:
            self._run()
        except SinkStopped as exc:
            self.failure = exc
            log.critical("sink stopped: %s", exc)
        except Exception as exc:  # a bug: stop loudly rather than spin
            self.failure = SinkStopped(f"unexpected {type(exc).__name__}: {exc}")
            log.critical("sink stopped by an unexpected error", exc_info=True)
        finally:
            self.done.set()

    def _run(self) -> None:
        if self.config.exit_when_idle_s:
            self._end_offsets.update(self._partition_ends(self._topic_partitions()))
        last_record = time.monotonic()
        drained_since: float | None = None
        unassigned_warning = time.monotonic() + UNASSIGNED_WARNING_S
        while not self._stop.is_set():
            if self._held:
                records, self._held = self._held, []
            else:
                polled = self._consumer.poll(timeout_ms=200)
                records = [r for batch in polled.values() for r in batch]
                if self._watch is not None:
                    self._watch.check()
            for tp in list(self._fresh):  # newly assigned: an intent to replay?
                self._read_intent(tp)
            if records:
                last_record = time.monotonic()
                self._add(records)
            self._flush_due()
            self._update_lag()
            self._check_progress()
            if not self.assigned and time.monotonic() >= unassigned_warning:
                unassigned_warning = time.monotonic() + UNASSIGNED_WARNING_S
                log.warning(
                    "no partitions assigned to this sink yet "
                    "(the group has not formed, or it has more sinks than partitions)",
                    extra={"group": self.config.group_id, "topics": ",".join(sorted(self.specs))},
                )
            if self._stats is not None and self._stats.due():
                self._stats.write(
                    stats_rows(
                        self.rows_inserted, self.bad_messages, self.transient_errors, self._lags()
                    )
                )
            if not self.config.exit_when_idle_s:
                continue
            # Idle time counts from when the sink caught up, not from its
            # start: empty topics are not drained before the group gave this
            # sink its partitions and it saw where they end.
            if not self._drained():
                drained_since = None
                continue
            now = time.monotonic()
            drained_since = drained_since or now
            if now - max(last_record, drained_since) >= self.config.exit_when_idle_s:
                log.info(
                    "idle, exiting",
                    extra={
                        "idle_s": self.config.exit_when_idle_s,
                        "partitions": len(self._consumer.assignment()),
                    },
                )
                return

    def _topic_partitions(self) -> list[Any]:
        from kafka.structs import TopicPartition

        return [
            TopicPartition(topic, p)
            for topic in sorted(self.specs)
            for p in sorted(self._consumer.partitions_for_topic(topic))
        ]

    def _partition_ends(self, partitions: list[Any]) -> dict[Any, int]:
        """End offsets of ``partitions``; those the broker did not answer for are left out."""
        from kafka.errors import KafkaError

        if not partitions:
            return {}
        try:
            return dict(self._consumer.end_offsets(partitions, timeout_ms=10_000))
        except KafkaError as exc:
            log.warning("end offsets not known yet", extra={"error": str(exc)})
            return {}

    def _drained(self) -> bool:
        """Partitions assigned, each committed up to where it ended at the start (and up to
        its high watermark), nothing pending."""
        assigned = self._consumer.assignment()
        if not assigned or self._batches or self._fresh or self._held:
            return False
        unknown = [tp for tp in assigned if tp not in self._end_offsets]
        self._end_offsets.update(self._partition_ends(unknown))
        for tp in assigned:
            if tp not in self._end_offsets:
                return False
            end = max(self._end_offsets[tp], self._consumer.highwater(tp) or 0)
            # With no batch open, what the consumer read is committed; its
            # position also covers offsets that retention already deleted.
            done = max(self._committed.get(tp, 0), self._consumer.position(tp))
            if done < end:
                return False
        return True

    def _check_progress(self) -> None:
        """Fetch again any partition that has messages but made no progress.

        A consumer can stop fetching a partition while it waits for an offset
        reset or validation that a plain ``poll()`` does not drive to the end
        (kafka-python 3.x has had such stalls). Every ``PROGRESS_CHECK_S``, a
        partition whose position lies behind its end offset and has not moved
        since the previous check is sought to where it stands (or to the start,
        if it never got a position), which discards its fetch state and starts
        over. Harmless when nothing is wrong: the same records come next.
        """
        from kafka.errors import KafkaError

        now = time.monotonic()
        if now < self._progress_due:
            return
        self._progress_due = now + PROGRESS_CHECK_S
        paused = self._consumer.paused()
        assigned = [tp for tp in self._consumer.assignment() if tp not in paused]
        ends = self._partition_ends(assigned)
        seen, self._positions = self._positions, {}
        for tp in assigned:
            end = ends.get(tp)
            if end is None:
                continue
            try:
                position = self._consumer.position(tp, timeout_ms=1000)
            except KafkaError:
                continue  # revoked meanwhile
            self._positions[tp] = position
            if tp not in seen or seen[tp] != position or (position or 0) >= end:
                continue
            self.metrics.stalls.labels(tp.topic).inc()
            log.warning(
                "partition has messages but its position did not move; fetching it again",
                extra={
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "position": position,
                    "end": end,
                },
            )
            if position is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, position)

    def _forget(self, partitions: Any) -> None:
        for tp in partitions:
            self._batches.pop(tp, None)
            self._pinned.pop(tp, None)
            self._fresh.discard(tp)
            self._uncertain.discard(tp)
            self._marks.pop(tp, None)

    def _read_intent(self, tp: Any) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import TopicPartition

        try:
            committed = self._consumer.committed(
                TopicPartition(tp.topic, tp.partition), metadata=True, timeout_ms=KAFKA_CALL_MS
            )
        except KafkaError as exc:  # stays fresh: asked again, its records wait till then
            log.warning(
                "committed offset not known yet",
                extra={"topic": tp.topic, "partition": tp.partition, "error": str(exc)},
            )
            return
        self._fresh.discard(tp)
        self._uncertain.add(tp)
        if committed is None:
            self._marks[tp] = SourceMarks()
            return
        self._committed[tp] = committed.offset
        self._marks[tp] = read_marks(committed.metadata)
        last = pending_last(committed.offset, committed.metadata)
        if last is not None:
            self._pinned[tp] = last
            log.info(
                "replaying a batch that may have been inserted already",
                extra={
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "first": committed.offset,
                    "last": last,
                },
            )

    def _add(self, records: list[Any]) -> None:
        from kafka.structs import TopicPartition

        unread: set[Any] = set()  # committed offset not known: fetched again later
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            if tp in unread:
                continue
            if tp in self._fresh:  # assigned during this poll
                self._read_intent(tp)
                if tp in self._fresh:
                    # An intent left there would decide where this batch ends.
                    unread.add(tp)
                    self._consumer.seek(tp, rec.offset)
                    continue
            marks = self._marks.get(tp)
            if marks is None:
                # Forgotten after a refused commit: its records wait for the
                # rejoin, which reads the committed offset and marks again.
                unread.add(tp)
                if tp in self._consumer.assignment():
                    self._consumer.seek(tp, rec.offset)
                continue
            spec = self.specs[rec.topic]
            batch = self._batches.get(tp)
            if batch is None:
                batch = self._batches[tp] = _Batch(
                    spec, first=rec.offset, since=time.monotonic(), marks=marks.copy()
                )
            pinned = self._pinned.get(tp)
            if pinned is not None and rec.offset > pinned:
                # The intent's messages are gone (retention): nothing to replay.
                self._pinned.pop(tp)
            try:
                if rec.value is None and not spec.tombstones:
                    raise BadMessage("empty", "message without a value")
                if rec.value is not None:
                    part = spec.parse(rec.value)
                    if spec.source_positions and not marks.admit(_position(rec)):
                        batch.republished += 1
                        batch.republished_rows += part[1]
                    else:
                        if self._tables[spec.table].with_offsets:
                            part = with_offsets(part, rec.partition, rec.offset)
                        batch.parts.append(part)
                        batch.rows += part[1]
            except BadMessage as exc:
                self._bad(rec, exc)
                batch.bad.append((rec.offset, exc.reason))
            batch.last = rec.offset
            if pinned is not None and rec.offset == pinned:
                self._flush(tp, replay=True)
            elif batch.rows >= self.config.batch_rows:
                self._flush(tp)

    def _bad(self, rec: Any, exc: BadMessage) -> None:
        key = (rec.topic, exc.reason)
        self.bad_messages[key] = self.bad_messages.get(key, 0) + 1
        self.metrics.bad.labels(rec.topic, exc.reason).inc()
        log.warning(
            "bad message skipped",
            extra={
                "topic": rec.topic,
                "partition": rec.partition,
                "offset": rec.offset,
                "reason": exc.reason,
                "detail": exc.detail[:200],
            },
        )
        if self._producer is not None:
            self._producer.send(
                self.config.dead_letter_topic,
                value=rec.value,
                key=rec.key,
                headers=[
                    ("reason", exc.reason.encode()),
                    ("detail", exc.detail[:500].encode()),
                    ("topic", rec.topic.encode()),
                    ("partition", str(rec.partition).encode()),
                    ("offset", str(rec.offset).encode()),
                ],
            )

    def _flush_due(self) -> None:
        now = time.monotonic()
        for tp, batch in list(self._batches.items()):
            if tp in self._pinned:
                continue  # an intent is replayed whole, never cut by time
            full = batch.rows >= self.config.batch_rows
            cfg = self.config
            delay = cfg.window_batch_delay_s if batch.spec.windows else cfg.batch_delay_s
            if full or now - batch.since >= delay:
                self._flush(tp)

    # -- one batch ----------------------------------------------------------------

    def _flush(self, tp: Any, replay: bool = False) -> None:
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        batch = self._batches.pop(tp)
        self._pinned.pop(tp, None)
        spec = batch.spec
        marks_after = self._marks[tp].copy()  # as of batch.last
        try:
            if batch.rows:
                if not replay:
                    intent = with_marks(intent_metadata(batch.first, batch.last), batch.marks)
                    self._commit(tp, OffsetAndMetadata(batch.first, intent, -1))
                token = batch_token(spec.table, tp.topic, tp.partition, batch.first, batch.last)
                self._insert(tp, batch, token, uncertain=replay or tp in self._uncertain)
                self._uncertain.discard(tp)
                self._inserts += 1
                if self._inserts == self.config.fault_kill_after_inserts:
                    log.critical("fault injection: killing the sink after an insert")
                    logging.shutdown()
                    os.kill(os.getpid(), signal.SIGKILL)
            if batch.republished:
                self._republished(tp, batch)
            if self._producer is not None and batch.bad:
                self._producer.flush(timeout=30)
            self._commit(tp, OffsetAndMetadata(batch.last + 1, with_marks("", marks_after), -1))
            self._committed[tp] = batch.last + 1
        except _Abandon:
            return
        except CommitFailedError:
            # The group rebalanced: the partition's next owner replays the batch
            # (with this batch's intent, if it was committed).
            log.warning("offset commit refused after a rebalance; batch left to replay")
            self._forget([tp])
        except KafkaError as exc:
            log.warning("offset commit failed; batch left to replay", extra={"error": str(exc)})
            self._forget([tp])
            self._uncertain.add(tp)
            if batch.rows:
                # Rebuilt from the same offsets, so it carries the same token
                # and ClickHouse drops it if the insert went in.
                self._pinned[tp] = batch.last
            self._marks[tp] = batch.marks  # filtered again from the same marks
            self._consumer.seek(tp, batch.first)

    def _republished(self, tp: Any, batch: _Batch) -> None:
        table = batch.spec.table
        self.metrics.republished.labels(table).inc(batch.republished_rows)
        log.info(
            "republished voip-flows messages left out (seen at their source position before)",
            extra={
                "table": table,
                "topic": tp.topic,
                "partition": tp.partition,
                "messages": batch.republished,
                "rows": batch.republished_rows,
            },
        )

    def _commit(self, tp: Any, offset: Any) -> None:
        # Bounded: a commit that times out is handled like a refused one.
        self._consumer.commit({tp: offset}, timeout_ms=KAFKA_CALL_MS)

    def _insert(self, tp: Any, batch: _Batch, token: str, uncertain: bool) -> None:
        try:
            self._insert_retrying(tp, batch, token, uncertain)
        finally:
            self._resume()

    def _insert_retrying(self, tp: Any, batch: _Batch, token: str, uncertain: bool) -> None:
        assert self._ch is not None
        spec = batch.spec
        info = self._tables[spec.table]
        delay = self.config.retry_initial_s
        while True:
            try:
                cols, n = combine(batch.parts)
                cols = adapt(cols, info)
                if uncertain and info.with_offsets and not self._ch.supports_dedup_token:
                    cols, n = drop_present(
                        self._ch,
                        self.metrics,
                        spec.table,
                        tp.partition,
                        batch.first,
                        batch.last,
                        cols,
                        n,
                    )
                if spec.first_copy_key and n:
                    cols, n = first_copies(self._ch, self.metrics, spec, cols, n)
                if n:
                    t0 = time.perf_counter()
                    self._ch.insert(spec.table, cols, dedup_token=token)
                    self.metrics.insert_seconds.labels(spec.table).observe(time.perf_counter() - t0)
                    self.metrics.inserts.labels(spec.table).inc()
                    self.metrics.rows.labels(spec.table).inc(n)
                    if spec.table not in self.rows_inserted:
                        log.info("first rows inserted", extra={"table": spec.table, "rows": n})
                    self.rows_inserted[spec.table] = self.rows_inserted.get(spec.table, 0) + n
                return
            except PermanentError as exc:
                self.metrics.errors.labels(spec.table, "permanent").inc()
                raise SinkStopped(
                    f"cannot insert into {self._ch.database}.{spec.table} "
                    f"({type(exc).__name__}, code {exc.code}): {exc}; "
                    f"offsets {batch.first}-{batch.last} of {tp.topic}/{tp.partition} "
                    "are not committed and will be retried after the fix"
                ) from exc
            except ClickHouseError as exc:
                self.metrics.errors.labels(spec.table, "transient").inc()
                self.transient_errors += 1
                uncertain = True
                log.warning(
                    "ClickHouse insert failed, retrying",
                    extra={"table": spec.table, "error": str(exc)[:200], "retry_in_s": delay},
                )
                self._wait_paused(delay, tp)
                delay = min(delay * 2, self.config.retry_max_s)

    def _wait_paused(self, delay: float, tp: Any) -> None:
        """Pause every partition and keep the group alive for ``delay`` seconds."""
        self.metrics.paused.set(1)
        deadline = time.monotonic() + delay * random.uniform(0.8, 1.2)
        while True:
            if self._stop.is_set():
                raise _Abandon()
            assigned = self._consumer.assignment()
            if tp not in assigned:
                log.info("partition revoked during a retry; its batch is left to replay")
                raise _Abandon()
            self._consumer.pause(*assigned)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            polled = self._consumer.poll(timeout_ms=int(min(left, 1.0) * 1000))
            for records in polled.values():  # only partitions assigned during the wait
                self._held.extend(records)

    def _resume(self) -> None:
        paused = self._consumer.paused()
        if paused:
            self._consumer.resume(*paused)
            self.metrics.paused.set(0)
            log.info("ClickHouse insert succeeded again; consumption resumed")

    def _lags(self) -> dict[tuple[str, int], int]:
        """Messages not yet committed per assigned partition whose end is known."""
        lags: dict[tuple[str, int], int] = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                lags[(tp.topic, tp.partition)] = max(0, high - self._committed.get(tp, 0))
        return lags

    def _update_lag(self) -> None:
        if self._consumer is None:
            return
        for (topic, partition), lag in self._lags().items():
            self.metrics.lag.labels(topic, str(partition)).set(lag)


def _position(rec: Any) -> SourcePosition | None:
    """The source position of a voip-flows message; a malformed one makes it bad."""
    try:
        return read_position(rec.headers)
    except PositionError as exc:
        raise BadMessage("source_position", str(exc)) from exc


def _tp_list(partitions: Any) -> str:
    return ",".join(sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)) or "none"


__all__ = ["Sink"]
