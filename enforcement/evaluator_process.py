"""The policy evaluator process: voip-usage.v1 in, rules.v1 and rule-events.v1 out.

A thin loop around :class:`voipflow.enforcement.evaluator.Evaluator`, in its own Kafka
consumer group (``VOIPFLOW_EVALUATOR_GROUP_ID``). Its state lives in a
compacted topic (``VOIPFLOW_EVALUATOR_STATE_TOPIC``), so a restarted
evaluator neither forgets the windows it was counting nor emits a rule twice.
The order of each step is what makes that hold after a SIGKILL anywhere:

1. poll usage windows (and voip-flows batches when a policy targets
   observed peers) from the committed offsets;
2. evaluate them; write the state entries that changed, and flush;
3. publish the rules, tombstones and events they produced, and flush;
4. commit the input offsets.

Killed before 2 completes: the windows are read again and counted once
(state is unchanged). Killed between 2 and 3: at start the evaluator reads
its state *and* rules.v1, and publishes what the state says is in force but
the topic lacks (and tombstones what the topic holds but the state
withdrew) -- so nothing is lost and nothing published twice. Killed between
3 and 4: the windows come again, the state already holds them, nothing is
emitted.

One evaluator runs per group: the windows of one city lie on several
partitions of voip-usage.v1 (it is keyed by window), and the state is global.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voipflow.enforcement import metrics
from voipflow.enforcement.config import EvaluatorConfig, GuardrailConfig
from voipflow.enforcement.errors import EnforcementError, PolicyError
from voipflow.enforcement.evaluator import (
    Evaluator,
    Event,
    Output,
    Publish,
    Withdraw,
    proposed_event,
)
from voipflow.enforcement.guardrails import Guardrails
from voipflow.enforcement.kafka_io import (
    COMPACTED,
    LoopProcess,
    make_producer,
    read_table,
    subscribe_group,
)
from voipflow.enforcement.policy import load_policies, policy_files
from voipflow.enforcement.targets import PeerSet, TargetResolver, load_city_prefixes
from voipflow.schemas import voipflows
from voipflow.schemas.rule_events import encode_rule_event, event_key
from voipflow.schemas.rules import decode_rule, encode_rule, rule_key
from voipflow.schemas.topics import KafkaConfig
from voipflow.schemas.usage import UsageError, decode_usage
from voipflow.storage.sink.assignment import AssignmentWatch
from voipflow.streams.providers import load_providers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluatorSetup:
    evaluator: EvaluatorConfig
    guardrails: GuardrailConfig
    kafka: KafkaConfig
    provider_dir: Path | None
    prefix_table: Path | None


def _mtimes(path: Path) -> tuple[tuple[str, float], ...]:
    out = []
    for f in policy_files(path):
        try:
            out.append((str(f), f.stat().st_mtime))
        except OSError:
            out.append((str(f), -1.0))
    return tuple(out)


class EvaluatorProcess(LoopProcess):
    """The loop; ``start()`` runs it in a thread, ``done`` is set when it ends."""

    name = "evaluator"

    def __init__(self, setup: EvaluatorSetup, bootstrap: str) -> None:
        super().__init__()
        cfg = setup.evaluator
        if cfg.policies is None:
            raise PolicyError("VOIPFLOW_EVALUATOR_POLICIES is empty")
        self.setup = setup
        self._kafka = setup.kafka
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.policy_path = cfg.policies
        policies = load_policies(cfg.policies)  # a bad file fails the start
        self._mtimes = _mtimes(cfg.policies)
        peers = PeerSet(int(cfg.peer_timeout_s * 1000), cfg.max_peers)
        resolver = TargetResolver(
            load_providers(setup.provider_dir),
            load_city_prefixes(cfg.prefix_table or setup.prefix_table),
            peers,
        )
        self.evaluator = Evaluator(policies, resolver, Guardrails(setup.guardrails))
        self.peers = peers
        self._batches = 0

    # -- component -----------------------------------------------------------

    def topics(self) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
        """The topics this process needs (name -> partitions) and their configs.

        The command creates them before :meth:`start`, so this package needs
        no admin client of its own.
        """
        k = self.setup.kafka
        return (
            {
                k.usage_topic: k.partitions,
                k.rules_topic: k.partitions,
                k.rule_events_topic: k.partitions,
                self.cfg.state_topic: 1,
            },
            {k.rules_topic: COMPACTED, self.cfg.state_topic: COMPACTED},
        )

    def start(self) -> None:
        self._producer = make_producer(self.bootstrap, "voipflow-evaluator", self._kafka)
        self._recover()
        self._start_loop()

    # -- start: state and the rules in force -----------------------------------

    def _recover(self) -> None:
        k = self.setup.kafka
        state = read_table(self.bootstrap, self.cfg.state_topic, self._kafka)
        self.evaluator.restore(
            (key, json.loads(value)) for key, value in state.items() if value is not None
        )
        on_topic: dict[str, dict[str, Any] | None] = {}
        for key, value in read_table(self.bootstrap, k.rules_topic, self._kafka).items():
            try:
                on_topic[key] = decode_rule(value) if value is not None else None
            except ValueError:
                on_topic[key] = None
        outputs: list[Output] = []
        for rid, entry in self.evaluator.rules.items():
            rule, topic_rule = entry["rule"], on_topic.get(rid)
            if entry["active"]:
                if topic_rule is None or topic_rule["version"] < rule["version"]:
                    # the same event id as the one that may have been lost
                    outputs += [Event(proposed_event(rule)), Publish(rule)]
            elif topic_rule is not None:
                outputs.append(Withdraw(rid, "withdrawn", rule))
        # policies may have changed while the evaluator was down
        outputs += self.evaluator.set_policies(self.evaluator.policies)
        self._emit(outputs)
        log.info(
            "evaluator state restored",
            extra={
                "state_entries": len(state),
                "rules_in_force": len(self.evaluator.active_rules()),
                "repaired": len(outputs),
            },
        )

    # -- loop -------------------------------------------------------------------

    def _subscribe(self) -> tuple[Any, AssignmentWatch]:
        k = self.setup.kafka
        topics = [k.usage_topic]
        if any(p.target == "observed_peers" for p in self.evaluator.policies):
            topics.append(k.voip_flows_topic)
        return subscribe_group(
            self.bootstrap, self.cfg.group_id, "voipflow-evaluator", topics, self._kafka
        )

    def _run(self) -> None:
        k = self.setup.kafka
        consumer, watch = self._subscribe()
        self._consumer = consumer
        last_tick = last_reload = 0.0
        last_input = time.monotonic()
        while not self._stop.is_set():
            polled = consumer.poll(timeout_ms=200)
            watch.check()
            now_ms = int(time.time() * 1000)
            outputs: list[Output] = []
            got = False
            for tp, records in polled.items():
                for rec in records:
                    got = True
                    if tp.topic == k.voip_flows_topic:
                        self._peers(rec.value)
                    else:
                        outputs += self._usage(rec.value, now_ms)
            if got or not consumer.assignment():
                # idle counts from when the group gave this evaluator its
                # partitions: after a SIGKILL the group waits for the dead
                # member's session to time out first
                last_input = time.monotonic()
            mono = time.monotonic()
            if mono - last_tick >= self.cfg.tick_s:
                last_tick = mono
                outputs += self.evaluator.expire(now_ms)
                self.peers.expire(now_ms)
            if mono - last_reload >= self.cfg.reload_s:
                last_reload = mono
                outputs += self._reload()
            self._persist(outputs)
            if got:
                consumer.commit()
            idle = self.cfg.exit_when_idle_s
            if idle and time.monotonic() - last_input >= idle:
                log.info("no usage windows for a while; stopping", extra={"idle_s": idle})
                return

    def _usage(self, value: bytes | None, now_ms: int) -> list[Output]:
        if value is None:
            return []
        try:
            usage = decode_usage(value)
        except UsageError as exc:
            metrics.BAD_MESSAGES.labels("evaluator", "usage", type(exc).__name__).inc()
            log.warning("bad usage window skipped: %s", exc)
            return []
        metrics.WINDOWS.inc()
        return self.evaluator.on_usage(usage, now_ms)

    def _peers(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            batch = voipflows.decode(value)
        except voipflows.BatchError as exc:
            metrics.BAD_MESSAGES.labels("evaluator", "voip-flows", type(exc).__name__).inc()
            log.warning("bad voip-flows batch skipped: %s", exc)
            return
        cols = {
            "city": batch["city"].to_numpy(zero_copy_only=False),
            "app": batch["app"].to_numpy(zero_copy_only=False),
            "peer_addr": batch["peer_addr"],
            "flow_end_ms": batch["flow_end_ms"],
        }
        self.peers.add_batch(cols)

    def _reload(self) -> list[Output]:
        mtimes = _mtimes(self.policy_path)
        if mtimes == self._mtimes:
            return []
        self._mtimes = mtimes
        try:
            policies = load_policies(self.policy_path)
        except EnforcementError as exc:
            metrics.POLICY_RELOADS.labels("failed").inc()
            log.error("policy reload failed; the running policies stay: %s", exc)
            return []
        metrics.POLICY_RELOADS.labels("ok").inc()
        log.info("policies reloaded", extra={"policies": len(policies)})
        return self.evaluator.set_policies(policies)

    # -- output -------------------------------------------------------------------

    def _persist(self, outputs: list[Output]) -> None:
        changes = self.evaluator.changes()
        if not changes and not outputs:
            return
        for key, value in changes.items():
            data = None if value is None else json.dumps(value, separators=(",", ":")).encode()
            self._producer.send(self.cfg.state_topic, key=key.encode(), value=data)
        self._producer.flush()
        self._batches += 1
        kill_at = self.cfg.fault_kill_after_batches
        if kill_at and self._batches >= kill_at and outputs:
            # state written, rules not yet published: the worst moment to die
            log.warning("fault injection: SIGKILL after writing state")
            os.kill(os.getpid(), signal.SIGKILL)
        self._emit(outputs)
        metrics.ACTIVE_RULES.set(len(self.evaluator.active_rules()))

    def _emit(self, outputs: list[Output]) -> None:
        if not outputs:
            return
        k = self.setup.kafka
        for out in outputs:
            if isinstance(out, Publish):
                self._producer.send(
                    k.rules_topic, key=rule_key(out.rule["rule_id"]), value=encode_rule(out.rule)
                )
                metrics.RULES_PUBLISHED.labels(out.rule["action"]).inc()
            elif isinstance(out, Withdraw):
                self._producer.send(
                    k.rules_topic,
                    key=rule_key(out.rule_id),
                    value=None,
                    headers=[("reason", out.reason.encode())],
                )
                metrics.RULES_WITHDRAWN.labels("evaluator", out.reason).inc()
            elif isinstance(out, Event):
                ev = out.event
                if ev["event"] == "refused":
                    metrics.RULES_REFUSED.labels(ev["detail"].split(":")[0]).inc()
                    log.warning("rule refused by a guardrail: %s: %s", ev["rule_id"], ev["detail"])
                self._producer.send(
                    k.rule_events_topic, key=event_key(ev["rule_id"]), value=encode_rule_event(ev)
                )
        self._producer.flush()
