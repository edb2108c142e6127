"""The policy evaluator process: voip-usage.v1 in, rules.v1 and rule-events.v1 out.

A thin loop around :class:`voipflow.enforcement.evaluator.Evaluator` and
:class:`voipflow.enforcement.admission.Admission`, in its own Kafka consumer
group (``VOIPFLOW_EVALUATOR_GROUP_ID``). Several processes may run in the
group; they share the work by city and fail over to each other, and a
restarted one neither forgets the windows it was counting nor emits a rule
twice.

Three stages, all in each process, each on topics of the group:

1. **re-key**: windows of voip-usage.v1 (keyed by window, so a city's windows
   lie on several partitions) are written unchanged to the scopes topic on
   the partition of their city (:func:`~voipflow.enforcement.partitioning.scope_partition`).
2. **evaluate**: the owner of scopes partition ``p`` runs one
   :class:`Evaluator` over the cities of ``p``. Its state lives on partition
   ``p`` of the compacted state topic (``VOIPFLOW_EVALUATOR_STATE_TOPIC``,
   as many partitions as the scopes topic). When the group gives a process
   ``p`` it reads state partition ``p`` before it evaluates a window of it,
   and proposes again the rules that state holds in force (the admission
   ignores versions it has published); when ``p`` is taken away the process
   drops that state. Rules that pass the per-scope logic, the never-block
   check and the per-city cap are *proposals*.
3. **admit**: the owner of the single-partition proposals topic runs the
   :class:`Admission`: the global caps, and the only writes to rules.v1.
   A refusal goes back to the city's evaluator on the scopes topic.

Every loop turn does the same four steps, and their order is what makes the
guarantees hold after a SIGKILL anywhere:

1. poll (usage windows, scoped windows, refusals, proposals; voip-flows
   batches when a policy targets observed peers) from the committed offsets;
2. evaluate; write the state entries that changed (each on its partition)
   and the re-keyed windows, and flush;
3. publish the proposals, rules, tombstones and events they produced, and flush;
4. commit the input offsets.

Killed before 2 completes: the input is read again and counted once (state
is unchanged; a window seen before changes nothing). Killed between 2 and 3:
the new owner of a scopes partition proposes its rules in force again, and
the new owner of the admission reads its state *and* rules.v1 and publishes
what the state says is in force but the topic lacks (and tombstones what the
topic holds but the state withdrew). Killed between 3 and 4: the input comes
again, the state already holds it, nothing is emitted twice.

Peers for ``observed_peers`` targets: every process reads every partition of
voip-flows outside the group (a city's flows need not lie on a partition it
owns), from ``VOIPFLOW_EVALUATOR_PEER_TIMEOUT_S`` ago at start, so a restarted
or newly assigned evaluator has the peers of the last timeout at once.
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
from voipflow.enforcement.admission import Admission, AdmissionOutput, Declined
from voipflow.enforcement.config import EvaluatorConfig, GuardrailConfig
from voipflow.enforcement.errors import EnforcementError, PolicyError
from voipflow.enforcement.evaluator import Evaluator, Output, Publish
from voipflow.enforcement.evaluator_outputs import DECLINED, Outputs
from voipflow.enforcement.guardrails import Guardrails
from voipflow.enforcement.kafka_io import (
    COMPACTED,
    LoopProcess,
    make_producer,
    partition_count,
    read_table,
    subscribe_group,
    tail_topic,
)
from voipflow.enforcement.policy import load_policies, policy_files
from voipflow.enforcement.targets import PeerSet, TargetResolver, load_city_prefixes
from voipflow.schemas import voipflows
from voipflow.schemas.rules import decode_rule
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


def _rebalance_listener(changes: list[tuple[str, set[Any]]]) -> Any:
    """A listener that records the group's assignment changes in ``changes``.

    kafka-python calls it from inside ``poll``; the state of a partition is
    read with another consumer, which the loop does after ``poll`` returns,
    before any record of that ``poll`` is evaluated.
    """
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            changes.append(("revoked", set(revoked)))

        def on_partitions_assigned(self, assigned: Any) -> None:
            changes.append(("assigned", set(assigned)))

    return Listener()


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
        self.policies = load_policies(cfg.policies)  # a bad file fails the start
        self._mtimes = _mtimes(cfg.policies)
        self.peers = PeerSet(int(cfg.peer_timeout_s * 1000), cfg.max_peers)
        self.resolver = TargetResolver(
            load_providers(setup.provider_dir),
            load_city_prefixes(cfg.prefix_table or setup.prefix_table),
            self.peers,
        )
        self.scopes_topic, self.proposals_topic, self.admission_topic = cfg.internal_topics()
        #: scopes partition -> the evaluator of its cities
        self.owned: dict[int, Evaluator] = {}
        #: the admission, while this process owns the proposals partition
        self.admission: Admission | None = None
        self.partitions = 0
        self._pending: list[tuple[str, Output | Declined]] = []
        self._rebalances: list[tuple[str, set[Any]]] = []
        self._batches = 0
        #: Windows this process evaluated and proposals it decided (also in the metrics).
        self.windows = 0
        self.proposals = 0

    def new_evaluator(self) -> Evaluator:
        """An evaluator for the cities of one scopes partition (no global caps)."""
        return Evaluator(
            list(self.policies), self.resolver, Guardrails(self.setup.guardrails),
            global_caps=False,
        )  # fmt: skip

    def new_admission(self) -> Admission:
        return Admission(list(self.policies), Guardrails(self.setup.guardrails))

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
                self.cfg.state_topic: k.partitions,
                self.scopes_topic: k.partitions,
                self.proposals_topic: 1,
                self.admission_topic: 1,
            },
            {
                k.rules_topic: COMPACTED,
                self.cfg.state_topic: COMPACTED,
                self.admission_topic: COMPACTED,
            },
        )

    def start(self) -> None:
        state_n = partition_count(self.bootstrap, self.cfg.state_topic, self._kafka)
        scopes_n = partition_count(self.bootstrap, self.scopes_topic, self._kafka)
        if state_n != scopes_n or state_n < 1:
            raise EnforcementError(
                f"the state topic {self.cfg.state_topic} (VOIPFLOW_EVALUATOR_STATE_TOPIC) has "
                f"{state_n} partitions and the scopes topic {self.scopes_topic} "
                f"(VOIPFLOW_EVALUATOR_SCOPES_TOPIC) {scopes_n}: a city's state must lie on the "
                "partition of its windows. Point VOIPFLOW_EVALUATOR_STATE_TOPIC and "
                "VOIPFLOW_EVALUATOR_SCOPES_TOPIC at new topics (they are created with "
                "VOIPFLOW_KAFKA_PARTITIONS partitions)"
            )
        self.partitions = scopes_n
        self._producer = make_producer(self.bootstrap, "voipflow-evaluator", self._kafka)
        self._out = Outputs(
            self._producer, self.setup.kafka, self.scopes_topic, self.proposals_topic, scopes_n
        )
        self._start_loop()

    # -- ownership: restore what the group gives, drop what it takes -------------

    def _apply_rebalances(self) -> None:
        changes, self._rebalances[:] = list(self._rebalances), []
        for kind, tps in changes:
            mine = {tp.partition for tp in tps if tp.topic == self.scopes_topic}
            admission = any(tp.topic == self.proposals_topic for tp in tps)
            if kind == "revoked":
                for p in mine:
                    self.owned.pop(p, None)
                if admission:
                    self.admission = None
            else:
                self._own(sorted(mine), admission)
        if changes:
            log.info(
                "evaluator owns",
                extra={"scopes": sorted(self.owned), "admission": self.admission is not None},
            )
        metrics.PARTITIONS_OWNED.labels("scopes").set(len(self.owned))
        metrics.PARTITIONS_OWNED.labels("admission").set(int(self.admission is not None))

    def _own(self, partitions: list[int], admission: bool) -> None:
        now_ms = int(time.time() * 1000)
        entries = 0
        for p in partitions:
            # one read per partition: an entry belongs to the partition it was written on
            state = read_table(self.bootstrap, self.cfg.state_topic, self._kafka, partitions=[p])
            entries += len(state)
            ev = self.new_evaluator()
            ev.restore((key, json.loads(v)) for key, v in state.items() if v is not None)
            ev.set_policies(self.policies)  # its withdrawals are the admission's to publish
            self.owned[p] = ev
            for entry in ev.rules.values():
                if entry["active"] and entry["rule"]["expires_ms"] > now_ms:
                    run = int(entry.get("run", 0))
                    self._pending.append(("scope", Publish(entry["rule"], run)))
        if partitions:
            log.info(
                "evaluator partitions restored",
                extra={"partitions": partitions, "state_entries": entries},
            )
        if admission:
            self._own_admission(now_ms)

    def _own_admission(self, now_ms: int) -> None:
        k = self.setup.kafka
        adm = self.new_admission()
        state = read_table(self.bootstrap, self.admission_topic, self._kafka)
        adm.restore((key, json.loads(v)) for key, v in state.items() if v is not None)
        on_topic: dict[str, dict[str, Any] | None] = {}
        for key, value in read_table(self.bootstrap, k.rules_topic, self._kafka).items():
            try:
                on_topic[key] = decode_rule(value) if value is not None else None
            except ValueError:
                on_topic[key] = None
        outputs = adm.reconcile(on_topic)
        outputs += adm.set_policies(self.policies)  # policies may have changed meanwhile
        outputs += adm.expire(now_ms)
        self.admission = adm
        self._pending += [("admission", o) for o in outputs]
        log.info(
            "evaluator admission restored",
            extra={
                "state_entries": len(state),
                "rules_in_force": len(adm.active_rules()),
                "repaired": len(outputs),
            },
        )

    # -- loop -------------------------------------------------------------------

    def _subscribe(self) -> tuple[Any, AssignmentWatch]:
        k = self.setup.kafka
        topics = [k.usage_topic, self.scopes_topic, self.proposals_topic]
        return subscribe_group(
            self.bootstrap,
            self.cfg.group_id,
            "voipflow-evaluator",
            topics,
            self._kafka,
            listener=_rebalance_listener(self._rebalances),
            session_timeout_s=self.cfg.session_timeout_s,
        )

    def _run(self) -> None:
        k = self.setup.kafka
        consumer, watch = self._subscribe()
        self._consumer = consumer
        flows = None
        if any(p.target == "observed_peers" for p in self.policies):
            # every process reads every city's peers: a city's flows need not lie on
            # a voip-flows partition this process owns; the last peer timeout of them
            since = int((time.time() - self.cfg.peer_timeout_s) * 1000)
            flows = tail_topic(
                self.bootstrap, k.voip_flows_topic, "voipflow-evaluator-peers", since, self._kafka
            )
            self._catch_up(flows)
        try:
            self._loop(consumer, watch, flows)
        finally:
            if flows is not None:
                flows.close(autocommit=False)

    def _catch_up(self, flows: Any, timeout_s: float = 60.0) -> None:
        """Read the peers up to the end of voip-flows before the first window."""
        ends = flows.end_offsets(list(flows.assignment()))
        deadline = time.monotonic() + timeout_s
        while any(flows.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                log.warning("peers not read to the end of voip-flows in %.0f s", timeout_s)
                return
            for records in flows.poll(timeout_ms=500).values():
                for rec in records:
                    self._peers(rec.value)

    def _loop(self, consumer: Any, watch: AssignmentWatch, flows: Any) -> None:
        k = self.setup.kafka
        last_tick = last_reload = 0.0
        last_input = time.monotonic()
        while not self._stop.is_set():
            polled = consumer.poll(timeout_ms=200)
            watch.check()
            peers = flows.poll(timeout_ms=0) if flows is not None else {}
            for records in peers.values():
                for rec in records:
                    self._peers(rec.value)
            self._apply_rebalances()  # before any record of this poll is evaluated
            now_ms = int(time.time() * 1000)
            got = False
            for tp, records in polled.items():
                got = got or bool(records)
                if tp.topic == k.usage_topic:
                    for rec in records:
                        self._rekey(rec.key, rec.value)
                elif tp.topic == self.scopes_topic:
                    self._evaluate(tp.partition, records, now_ms)
                elif tp.topic == self.proposals_topic:
                    self._admit(records, now_ms)
            if got or peers or not consumer.assignment():
                # idle counts from when the group gave this evaluator its
                # partitions: after a SIGKILL the group waits for the dead
                # member's session to time out first
                last_input = time.monotonic()
            mono = time.monotonic()
            if mono - last_tick >= self.cfg.tick_s:
                last_tick = mono
                self._tick(now_ms)
            if mono - last_reload >= self.cfg.reload_s:
                last_reload = mono
                self._reload()
            self._persist()
            if got:
                consumer.commit()
            idle = self.cfg.exit_when_idle_s
            if idle and time.monotonic() - last_input >= idle:
                log.info(
                    "no usage windows for a while; stopping",
                    extra={"idle_s": idle, "windows": self.windows, "proposals": self.proposals},
                )
                return

    def _rekey(self, key: bytes | None, value: bytes | None) -> None:
        """Write one voip-usage.v1 window to the scopes partition of its city."""
        if value is None:
            return
        try:
            usage = decode_usage(value)
        except UsageError as exc:
            metrics.BAD_MESSAGES.labels("evaluator", "usage", type(exc).__name__).inc()
            log.warning("bad usage window skipped: %s", exc)
            return
        self._out.rekey(key, value, str(usage["city"]))

    def _evaluate(self, partition: int, records: list[Any], now_ms: int) -> None:
        ev = self.owned.get(partition)
        if ev is None:  # the group gave the partition, its state was not restored
            raise EnforcementError(f"{self.scopes_topic}[{partition}] evaluated without its state")
        for rec in records:
            if rec.value is None:
                continue
            if any(name == DECLINED for name, _ in rec.headers or ()):
                d = json.loads(rec.value)
                ev.declined(str(d["rule_id"]), int(d["version"]), str(d["code"]), int(d["run"]))
                continue
            usage = decode_usage(rec.value)  # checked when it was re-keyed
            metrics.WINDOWS.inc()
            self.windows += 1
            self._pending += [("scope", o) for o in ev.on_usage(usage, now_ms)]

    def _admit(self, records: list[Any], now_ms: int) -> None:
        adm = self.admission
        if adm is None:
            raise EnforcementError(f"{self.proposals_topic} read without the admission's state")
        for rec in records:
            if rec.value is None:
                continue
            msg = json.loads(rec.value)
            outcome, outputs = adm.on_proposal(msg["rule"], int(msg["run"]), now_ms)
            metrics.PROPOSALS.labels(outcome).inc()
            self.proposals += 1
            self._pending += [("admission", o) for o in outputs]

    def _tick(self, now_ms: int) -> None:
        for ev in self.owned.values():
            ev.expire(now_ms)  # the admission publishes the tombstones
        if self.admission is not None:
            self._pending += [("admission", o) for o in self.admission.expire(now_ms)]
        self.peers.expire(now_ms)

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

    def _reload(self) -> list[AdmissionOutput]:
        """Reload changed policy files; the admission's withdrawals (also returned)."""
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
        self.policies = policies
        for ev in self.owned.values():
            ev.set_policies(policies)
        if self.admission is None:
            return []
        out = self.admission.set_policies(policies)
        self._pending += [("admission", o) for o in out]
        return out

    # -- output -------------------------------------------------------------------

    def _persist(self) -> None:
        """Write the state that changed, then the outputs (steps 2 and 3 of the loop)."""
        wrote = False
        for part, ev in self.owned.items():
            for key, value in ev.changes().items():
                self._out.state(self.cfg.state_topic, key, value, part)
                wrote = True
        if self.admission is not None:
            for key, value in self.admission.changes().items():
                self._out.state(self.admission_topic, key, value, 0)
                wrote = True
        outputs, self._pending = self._pending, []
        if not wrote and not outputs:
            return
        self._producer.flush()
        self._batches += 1
        kill_at = self.cfg.fault_kill_after_batches
        if kill_at and self._batches >= kill_at and outputs:
            # state written, rules not yet published: the worst moment to die
            log.warning("fault injection: SIGKILL after writing state")
            os.kill(os.getpid(), signal.SIGKILL)
        for source, out in outputs:
            if source == "scope":
                self._out.propose(out)
            else:
                self._out.emit(out)
        self._producer.flush()
        if self.admission is not None:
            metrics.ACTIVE_RULES.set(len(self.admission.active_rules()))
