"""Where the evaluator process sends what it produces, and how each message looks.

* :meth:`Outputs.rekey` -- a voip-usage.v1 window, unchanged, to the scopes
  partition of its city;
* :meth:`Outputs.state` -- a state entry to its partition of a compacted topic;
* :meth:`Outputs.propose` -- an evaluator's rule to the proposals topic (its
  refusals go straight to rule-events.v1);
* :meth:`Outputs.emit` -- the admission's rules, tombstones and events to
  rules.v1 and rule-events.v1, and its refusals back to the city's scopes
  partition (marked with the :data:`DECLINED` header).

The caller flushes the producer; nothing here waits.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from voipflow.enforcement import metrics
from voipflow.enforcement.admission import Declined
from voipflow.enforcement.evaluator import Event, Output, Publish, Withdraw
from voipflow.enforcement.partitioning import scope_partition
from voipflow.schemas.rule_events import encode_rule_event, event_key
from voipflow.schemas.rules import encode_rule, rule_key
from voipflow.schemas.topics import KafkaConfig

log = logging.getLogger(__name__)

#: Header that marks a refusal of the admission on the scopes topic (the other
#: messages there are usage windows).
DECLINED = "voipflow-declined"


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Outputs:
    """The evaluator's producer and the topics its outputs go to."""

    def __init__(
        self,
        producer: Any,
        kafka: KafkaConfig,
        scopes_topic: str,
        proposals_topic: str,
        partitions: int,
    ) -> None:
        self.producer = producer
        self.kafka = kafka
        self.scopes_topic = scopes_topic
        self.proposals_topic = proposals_topic
        self.partitions = partitions

    def rekey(self, key: bytes | None, value: bytes, city: str) -> None:
        """One voip-usage.v1 window to the scopes partition of ``city``."""
        part = scope_partition(city, self.partitions)
        self.producer.send(self.scopes_topic, key=key, value=value, partition=part)

    def state(self, topic: str, key: str, value: dict[str, Any] | None, partition: int) -> None:
        """One state entry (None: its tombstone) to ``partition`` of ``topic``."""
        data = None if value is None else _json(value)
        self.producer.send(topic, key=key.encode(), value=data, partition=partition)

    def propose(self, out: Output | Declined) -> None:
        """An evaluator's output: a proposal to the admission, or a refusal event."""
        if isinstance(out, Publish):
            msg = {"rule": out.rule, "run": out.run_start}
            self.producer.send(
                self.proposals_topic,
                key=rule_key(out.rule["rule_id"]),
                value=_json(msg),
                partition=0,
            )
        elif isinstance(out, Event) and out.event["event"] == "refused":
            self.emit(out)
        # the proposed event and the tombstones are the admission's to publish

    def emit(self, out: Output | Declined) -> None:
        """One output of the admission (or an evaluator's refusal event)."""
        k = self.kafka
        if isinstance(out, Publish):
            self.producer.send(
                k.rules_topic, key=rule_key(out.rule["rule_id"]), value=encode_rule(out.rule)
            )
            metrics.RULES_PUBLISHED.labels(out.rule["action"]).inc()
        elif isinstance(out, Withdraw):
            self.producer.send(
                k.rules_topic,
                key=rule_key(out.rule_id),
                value=None,
                headers=[("reason", out.reason.encode())],
            )
            metrics.RULES_WITHDRAWN.labels("evaluator", out.reason).inc()
        elif isinstance(out, Declined):
            body = {"rule_id": out.rule_id, "version": out.version, "code": out.code,
                    "run": out.run_start}  # fmt: skip
            self.producer.send(
                self.scopes_topic,
                key=out.city.encode(),
                value=_json(body),
                partition=scope_partition(out.city, self.partitions),
                headers=[(DECLINED, b"1")],
            )
        else:
            ev = out.event
            if ev["event"] == "refused":
                metrics.RULES_REFUSED.labels(ev["detail"].split(":")[0]).inc()
                log.warning("rule refused by a guardrail: %s: %s", ev["rule_id"], ev["detail"])
            self.producer.send(
                k.rule_events_topic, key=event_key(ev["rule_id"]), value=encode_rule_event(ev)
            )
