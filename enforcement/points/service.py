"""The enforcement point process: Kafka in, backend changes, feedback out.

At start the point reads ``rules.v1`` from the beginning of every partition
(it assigns them itself: each point needs all rules, so points never share
partitions, and its consumer group only records offsets for lag dashboards)
up to the end offsets it found, and only then reconciles the backend once.
A restart therefore never removes a rule just because it was not read yet.

After that it reconciles when rules arrive, when the next rule expires, and
every ``reconcile_s``, so a table deleted by hand comes back. A bad rule is
refused, counted, logged at a bounded rate and reported; a backend that
cannot be read or changed is counted and retried on the next pass. Neither
stops the point.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors

from voipflow.enforcement.points.backend import Backend
from voipflow.enforcement.points.config import EnforceConfig
from voipflow.enforcement.points.desired import DesiredRules, Network
from voipflow.enforcement.points.errors import BackendError, EnforceError
from voipflow.enforcement.points.metrics import EnforceMetrics
from voipflow.enforcement.points.reconcile import Feedback, Reconciler, now_ms
from voipflow.schemas.rules import encode_feedback, feedback_key

log = logging.getLogger(__name__)


class EnforcementPoint:
    """A component (``start``/``stop``) that keeps one backend equal to the rules in force."""

    name = "enforce"

    def __init__(
        self,
        config: EnforceConfig,
        backend: Backend,
        *,
        bootstrap: str,
        rules_topic: str,
        feedback_topic: str,
        metrics: EnforceMetrics | None = None,
        rebuild_timeout_s: float = 60.0,
        client_options: Mapping[str, Any] | None = None,
        never_block: Sequence[Network] = (),
    ) -> None:
        """``never_block``: prefixes no rule may touch here, whatever it says
        (the guardrails' ``VOIPFLOW_GUARDRAILS_*`` prefixes, the same the
        evaluator cuts out of its rules)."""
        self.config = config
        self.backend = backend
        self.bootstrap = bootstrap
        self.rules_topic = rules_topic
        self.feedback_topic = feedback_topic
        self.metrics = metrics or EnforceMetrics()
        self.rebuild_timeout_s = rebuild_timeout_s
        #: TLS/SASL keyword arguments of the Kafka clients (``kafka_client_options``).
        self.client_options = dict(client_options or {})
        self.point = config.point_name()
        self.desired = DesiredRules(never_block=list(never_block), max_rules=config.max_rules)
        self.reconciler = Reconciler(
            backend, self.desired, Feedback(self.point, backend.name), self.metrics
        )
        #: Set once the desired set is rebuilt and the first reconcile ran.
        self.ready = threading.Event()
        #: Set when the loop ended (stopped, or failed: see ``failure``).
        self.done = threading.Event()
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self.backend.start()
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=f"voipflow-enforce-{self.point}",
                acks="all",
                linger_ms=20,
                **self.client_options,
            )
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=self.config.group_name(),
                client_id=f"voipflow-enforce-{self.point}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=5000,
                **self.client_options,
            )
        except kafka_errors.KafkaError as exc:
            self.backend.stop()
            raise EnforceError(f"cannot connect to Kafka at {self.bootstrap}: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name="enforce", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing must not hide the reason we stop
                    log.exception("closing a Kafka client failed")
        self.backend.stop()

    # -- the loop -------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._rebuild()
            self._loop()
        except BaseException as exc:
            self.failure = exc
            log.exception("enforcement point stopped", extra={"point": self.point})
        finally:
            self.done.set()

    def _partitions(self) -> list[TopicPartition]:
        assert self._consumer is not None
        deadline = time.monotonic() + self.rebuild_timeout_s
        while True:
            parts = self._consumer.partitions_for_topic(self.rules_topic)
            if parts:
                return [TopicPartition(self.rules_topic, p) for p in sorted(parts)]
            if time.monotonic() > deadline:
                raise EnforceError(
                    f"topic {self.rules_topic} does not exist (VOIPFLOW_KAFKA_RULES_TOPIC)"
                )
            time.sleep(0.2)

    def _rebuild(self) -> None:
        """Read the whole topic up to its end offsets, then reconcile once."""
        consumer = self._consumer
        assert consumer is not None
        tps = self._partitions()
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        started = time.monotonic()
        count = 0
        # Refusals are reported once the topic is read: only those still the
        # latest message of their key (a later valid version or tombstone
        # makes an old refusal history, not news).
        refused: dict[str, dict[str, Any]] = {}
        while not self._stop.is_set():
            if all(consumer.position(tp) >= end[tp] for tp in tps):
                break
            count += self._take(consumer.poll(timeout_ms=500), refused)
        if self._stop.is_set():
            return  # a partial set must never reach the backend: it would remove rules
        self._send(list(refused.values()))
        log.info(
            "rules rebuilt from the topic",
            extra={
                "messages": count,
                "in_force": len(self.desired.in_force(now_ms())),
                "ms": int((time.monotonic() - started) * 1000),
            },
        )
        self._reconcile(hits=False)
        self.ready.set()

    def _loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        next_reconcile = time.monotonic() + self.config.reconcile_s
        next_hits = time.monotonic() + self.config.hits_s
        next_commit = time.monotonic() + 5.0
        while not self._stop.is_set():
            wait = min(next_reconcile, next_hits) - time.monotonic()
            expiry_ms = self._next_expiry_in_ms()
            if expiry_ms is not None:
                wait = min(wait, expiry_ms / 1000)
            records = consumer.poll(timeout_ms=int(min(1000, max(10, wait * 1000))))
            dirty = self._take(records) > 0
            mono = time.monotonic()
            expiry_ms = self._next_expiry_in_ms()
            expired = expiry_ms is not None and expiry_ms <= 0
            periodic = mono >= next_reconcile
            hits = mono >= next_hits
            if dirty or expired or periodic or hits:
                if not self._reconcile(hits=hits):
                    # The backend failed: try again soon, not in a tight loop.
                    next_reconcile = mono + min(1.0, self.config.reconcile_s)
                    self._stop.wait(min(1.0, self.config.reconcile_s))
                    continue
                if periodic or expired:
                    next_reconcile = mono + self.config.reconcile_s
                if hits:
                    next_hits = mono + self.config.hits_s
            if mono >= next_commit:
                next_commit = mono + 5.0
                try:
                    consumer.commit()
                except kafka_errors.KafkaError as exc:
                    log.warning("offset commit failed", extra={"error": str(exc)})

    def _next_expiry_in_ms(self) -> int | None:
        now = now_ms()
        nxt = self.desired.next_expiry_ms(now)
        # An installed rule whose expiry passed is also due (it is no longer in force).
        overdue = any(r.expires_ms <= now for r in self.reconciler.applied.values())
        if overdue:
            return 0
        return None if nxt is None else nxt - now

    def _take(
        self, records: dict[Any, list[Any]], deferred: dict[str, dict[str, Any]] | None = None
    ) -> int:
        count = 0
        out = []
        for batch in records.values():
            for rec in batch:
                count += 1
                self.metrics.messages.labels("tombstone" if rec.value is None else "rule").inc()
                change = self.desired.apply(rec.key, rec.value)
                if deferred is not None and not change.stale:
                    deferred.pop(change.rule_id, None)
                if change.refused is not None:
                    r = change.refused
                    self.metrics.refused.labels(r.reason).inc()
                    log.warning(
                        "rule refused",
                        extra={
                            "rule_id": r.rule_id,
                            "version": r.version,
                            "reason": r.reason,
                            "error": r.error[:300],
                            "partition": rec.partition,
                            "offset": rec.offset,
                        },
                    )
                    msg = self.reconciler.feedback.refused(r, now_ms())
                    if deferred is not None:
                        deferred[r.rule_id] = msg
                    else:
                        out.append(msg)
        self._send(out)
        return count

    def _reconcile(self, *, hits: bool) -> bool:
        try:
            out = self.reconciler.reconcile(hits=hits)
        except BackendError as exc:
            self.metrics.backend_errors.inc()
            log.error(
                "reconcile failed; retrying on the next pass",
                extra={"backend": self.backend.name, "error": str(exc)[:500]},
            )
            return False
        self._send(out)
        return True

    def _send(self, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        producer = self._producer
        assert producer is not None
        for msg in messages:
            producer.send(
                self.feedback_topic,
                key=feedback_key(msg["rule_id"], msg["enforcement_point"]),
                value=encode_feedback(msg),
            )
            self.metrics.feedback.labels(msg["status"]).inc()
            if msg["status"] != "hits":
                log.info(
                    "rule %s",
                    msg["status"],
                    extra={
                        "rule_id": msg["rule_id"],
                        "version": msg["rule_version"],
                        "mode": msg["mode"],
                        "detail": msg.get("detail") or msg.get("error", ""),
                    },
                )
        try:
            producer.flush(timeout=10)
        except kafka_errors.KafkaError as exc:
            log.error("feedback not delivered", extra={"error": str(exc), "n": len(messages)})
