"""The rule ledger process: rules.v1 and rules-feedback.v1 in, rule-events.v1 out.

A thin loop around :class:`voipflow.enforcement.ledger.Ledger` in its own consumer
group (``VOIPFLOW_LEDGER_GROUP_ID``), with its state on a compacted topic
(``VOIPFLOW_LEDGER_STATE_TOPIC``) written before the batch's events and
before its offsets are committed, like the evaluator: a restarted ledger
reads its state back, and reports read again are recognised and skipped.

It republishes rules nobody acknowledged, tombstones expired rules (with
header ``reason=expired``), and escalates failures: an error log line, the
``voipflow_ledger_escalations_total`` metric and an ``escalated`` event.
The sink writes rule-events.v1 to ``rule_events`` and rules.v1 to ``rules``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from voipflow.enforcement import metrics
from voipflow.enforcement.config import LedgerConfig
from voipflow.enforcement.kafka_io import (
    COMPACTED,
    LoopProcess,
    make_producer,
    read_table,
    subscribe_group,
)
from voipflow.enforcement.ledger import (
    Escalation,
    Ledger,
    LedgerOutput,
    Record,
    Republish,
    Tombstone,
)
from voipflow.schemas.rule_events import encode_rule_event, event_key
from voipflow.schemas.rules import (
    FeedbackError,
    RuleError,
    decode_feedback,
    decode_rule,
    encode_rule,
    rule_key,
)
from voipflow.schemas.topics import KafkaConfig

log = logging.getLogger(__name__)


class LedgerProcess(LoopProcess):
    """The loop; ``start()`` runs it in a thread, ``done`` is set when it ends."""

    name = "ledger"

    def __init__(self, config: LedgerConfig, kafka: KafkaConfig, bootstrap: str) -> None:
        super().__init__()
        self.cfg = config
        self.kafka = kafka
        self._kafka = kafka
        self.bootstrap = bootstrap
        self.ledger = Ledger(int(config.feedback_timeout_s * 1000), config.max_republish)

    def topics(self) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
        """The topics this process needs (name -> partitions) and their configs.

        The command creates them before :meth:`start`, so this package needs
        no admin client of its own.
        """
        k = self.kafka
        return (
            {
                k.rules_topic: k.partitions,
                k.feedback_topic: k.partitions,
                k.rule_events_topic: k.partitions,
                self.cfg.state_topic: 1,
            },
            {k.rules_topic: COMPACTED, self.cfg.state_topic: COMPACTED},
        )

    def start(self) -> None:
        state = read_table(self.bootstrap, self.cfg.state_topic, self._kafka)
        self.ledger.restore((k, json.loads(v)) for k, v in state.items() if v is not None)
        log.info("ledger state restored", extra={"rules": len(self.ledger.rules)})
        self._producer = make_producer(self.bootstrap, "voipflow-ledger", self._kafka)
        self._start_loop()

    def _run(self) -> None:
        k = self.kafka
        consumer, watch = subscribe_group(
            self.bootstrap,
            self.cfg.group_id,
            "voipflow-ledger",
            [k.rules_topic, k.feedback_topic],
            self._kafka,
        )
        self._consumer = consumer
        last_tick = 0.0
        last_input = time.monotonic()
        while not self._stop.is_set():
            polled = consumer.poll(timeout_ms=200)
            watch.check()
            now_ms = int(time.time() * 1000)
            outputs: list[LedgerOutput] = []
            got = False
            for tp, records in polled.items():
                for rec in records:
                    got = True
                    if tp.topic == k.rules_topic:
                        outputs += self._rule(rec, now_ms)
                    else:
                        outputs += self._feedback(rec.value, now_ms)
            if got or not consumer.assignment():
                last_input = time.monotonic()
            if time.monotonic() - last_tick >= self.cfg.tick_s:
                last_tick = time.monotonic()
                outputs += self.ledger.tick(now_ms)
            self._persist(outputs)
            if got:
                consumer.commit()
            idle = self.cfg.exit_when_idle_s
            if idle and time.monotonic() - last_input >= idle:
                log.info("nothing to follow for a while; stopping", extra={"idle_s": idle})
                return

    def _rule(self, rec: Any, now_ms: int) -> list[LedgerOutput]:
        rid = rec.key.decode("utf-8", "replace") if rec.key is not None else ""
        if rec.value is None:
            headers = dict(rec.headers or [])
            reason = (headers.get("reason") or b"withdrawn").decode("utf-8", "replace")
            return self.ledger.on_tombstone(rid, reason, now_ms)
        try:
            rule = decode_rule(rec.value)
        except RuleError as exc:
            metrics.BAD_MESSAGES.labels("ledger", "rules", type(exc).__name__).inc()
            log.warning("bad rule skipped: %s", exc)
            return []
        return self.ledger.on_rule(rule, now_ms)

    def _feedback(self, value: bytes | None, now_ms: int) -> list[LedgerOutput]:
        if value is None:
            return []
        try:
            fb = decode_feedback(value)
        except FeedbackError as exc:
            metrics.BAD_MESSAGES.labels("ledger", "feedback", type(exc).__name__).inc()
            log.warning("bad feedback skipped: %s", exc)
            return []
        return self.ledger.on_feedback(fb, now_ms)

    def _persist(self, outputs: list[LedgerOutput]) -> None:
        changes = self.ledger.changes()
        if not changes and not outputs:
            return
        for key, value in changes.items():
            data = None if value is None else json.dumps(value, separators=(",", ":")).encode()
            self._producer.send(self.cfg.state_topic, key=key.encode(), value=data)
        self._producer.flush()
        k = self.kafka
        for out in outputs:
            if isinstance(out, Record):
                ev = out.event
                metrics.TRANSITIONS.labels(ev["state"]).inc()
                self._producer.send(
                    k.rule_events_topic, key=event_key(ev["rule_id"]), value=encode_rule_event(ev)
                )
            elif isinstance(out, Republish):
                metrics.REPUBLISHED.inc()
                rule = {**out.rule, "produced_ms": int(time.time() * 1000)}
                self._producer.send(
                    k.rules_topic, key=rule_key(rule["rule_id"]), value=encode_rule(rule)
                )
            elif isinstance(out, Tombstone):
                metrics.RULES_WITHDRAWN.labels("ledger", "expired").inc()
                self._producer.send(
                    k.rules_topic,
                    key=rule_key(out.rule_id),
                    value=None,
                    headers=[("reason", b"expired")],
                )
            elif isinstance(out, Escalation):
                metrics.ESCALATIONS.labels(out.reason).inc()
                log.error(
                    "rule escalated: %s: %s: %s",
                    out.rule_id,
                    out.reason,
                    out.detail,
                    extra={"rule_id": out.rule_id, "reason": out.reason},
                )
        self._producer.flush()
