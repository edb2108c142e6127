"""The enforcement loop in the demo (``voipflow demo --policy FILE``).

With a policy the demo starts three more children after the pipeline's:

* ``voipflow policy run`` (the evaluator) on the worker's usage windows,
  with ``VOIPFLOW_EVALUATOR_POLICIES`` set to the file;
* ``voipflow ledger``, which follows every rule to its feedback;
* ``voipflow enforce --backend log`` (or ``nftables``), the enforcement point,
  point id ``demo``; the log backend writes what it would do to
  ``<data_dir>/demo/enforce-actions.log``.

The nftables backend changes a kernel's filters, so the demo gives it a
network namespace of its own (``voipflow-demo-<pid>``, removed at the end)
unless ``VOIPFLOW_ENFORCE_NFT_NETNS`` names one: the rules are installed
and counted there, and this host's own traffic is never filtered.

At the end of the drain (:class:`RulesWatch`) the demo waits until the
evaluator has read every usage window, every rule it proposed during the
run has an enforcement point's feedback recorded by the ledger on
rule-events.v1, and the ledger has read all of rules.v1 and
rules-feedback.v1 (so its ``published`` events are out too: feedback can
reach it before the rule does); then the sink commits rules.v1 and
rule-events.v1 like the other topics, and the report shows the rules from ClickHouse
(:mod:`voipflow.demo.rules`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from voipflow.children import ChildProcess
from voipflow.demo.errors import DemoError
from voipflow.demo.options import DemoOptions
from voipflow.demo.pipeline import create_topics
from voipflow.demo.plan import DemoPlan
from voipflow.schemas.kafka_security import kafka_client_options
from voipflow.schemas.rule_events import RuleEventError, decode_rule_event
from voipflow.settings import Settings

#: The enforcement point's name in feedback, unless VOIPFLOW_ENFORCE_POINT_ID is set.
DEMO_POINT_ID = "demo"
#: Feedback that ends a rule's wait: the point applied it, or said why not.
FINAL_FEEDBACK = ("applied", "failed")


def check_backend(backend: str) -> str | None:
    """Why ``backend`` cannot run here (None: it can)."""
    if backend == "nftables":
        if os.geteuid() != 0:
            return "--enforce-backend nftables: needs root (it changes the kernel's filters)"
        for prog in ("nft", "ip"):
            if shutil.which(prog) is None:
                return f"--enforce-backend nftables: no `{prog}` program on PATH"
    return None


class NetNamespace:
    """A network namespace of the demo's own for the nftables point (a component)."""

    name = "netns"

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._made = False

    def start(self) -> None:
        res = subprocess.run(
            ["ip", "netns", "add", self.netns], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise DemoError(f"ip netns add {self.netns}: {res.stderr.strip()}")
        self._made = True

    def stop(self) -> None:
        if self._made:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
            self._made = False


class EnforcementTopics:
    """rules.v1 (compacted), rules-feedback.v1 and rule-events.v1, before any child reads them.

    The sink subscribes to them at its start, before the evaluator would
    create them; created here, every child finds them as they will stay.
    """

    name = "enforcement topics"

    def __init__(self, settings: Settings, bootstrap: Callable[[], str]) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.partitions: dict[str, int] = {}

    def start(self) -> None:
        k = self.settings.kafka
        self.partitions = create_topics(
            self.settings,
            self.bootstrap(),
            {
                k.rules_topic: k.partitions,
                k.feedback_topic: k.partitions,
                k.rule_events_topic: k.partitions,
            },
            {k.rules_topic: {"cleanup.policy": "compact"}},
        )

    def stop(self) -> None:
        pass


def enforcement_env(
    settings: Settings, plan: DemoPlan, options: DemoOptions, env: dict[str, str]
) -> tuple[dict[str, str], NetNamespace | None]:
    """The children's environment plus the enforcement settings; the namespace to make, if any."""
    assert options.policy is not None
    out = dict(env)
    out["VOIPFLOW_EVALUATOR_POLICIES"] = str(options.policy.resolve())
    given = settings.enforce.model_fields_set
    if "point_id" not in given:
        out["VOIPFLOW_ENFORCE_POINT_ID"] = DEMO_POINT_ID
    if "log_output" not in given:
        out["VOIPFLOW_ENFORCE_LOG_OUTPUT"] = str(actions_log(plan))
    netns = None
    if options.enforce_backend == "nftables" and "nft_netns" not in given:
        netns = NetNamespace(f"voipflow-demo-{os.getpid()}")
        out["VOIPFLOW_ENFORCE_NFT_NETNS"] = netns.netns
    return out, netns


def actions_log(plan: DemoPlan) -> Path:
    """Where the log backend writes what it would do."""
    return plan.demo_dir / "enforce-actions.log"


def enforcement_children(
    plan: DemoPlan, options: DemoOptions, env: dict[str, str]
) -> list[ChildProcess]:
    """The enforcement point, the ledger and the evaluator, in the order they start."""
    commands = [
        ("enforce", ["enforce", "--backend", options.enforce_backend]),
        ("ledger", ["ledger"]),
        ("evaluator", ["policy", "run"]),
    ]
    return [
        ChildProcess(
            name,
            args,
            env=env,
            log_file=plan.log_dir / f"{name}.log",
            data_dir=plan.data_dir,
        )
        for name, args in commands
    ]


class RuleEventsReader:
    """Reads rule-events.v1 from the start: which rules were proposed and answered since ``t0``."""

    def __init__(self, settings: Settings, bootstrap: str, since_ms: int) -> None:
        self.topic = settings.kafka.rule_events_topic
        self.since_ms = since_ms
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="voipflow-demo-rules",
            enable_auto_commit=False,
            **kafka_client_options(settings.kafka),
        )
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.tps = tps
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        #: rule id -> the latest version proposed since ``since_ms``.
        self.proposed: dict[str, int] = {}
        #: rule id -> the latest version an enforcement point applied or failed.
        self.answered: dict[str, int] = {}
        self.refused: set[str] = set()
        self.bad = 0

    def poll(self) -> bool:
        """Read what is there; True once everything published before the call is read."""
        ends = self.consumer.end_offsets(self.tps) if self.tps else {}
        for records in self.consumer.poll(timeout_ms=500, max_records=5000).values():
            for rec in records:
                try:
                    ev = decode_rule_event(rec.value)
                except RuleEventError:
                    self.bad += 1
                    continue
                if ev["ts_ms"] < self.since_ms:
                    continue
                rid, version = ev["rule_id"], int(ev["rule_version"])
                if ev["event"] == "proposed":
                    self.proposed[rid] = max(version, self.proposed.get(rid, 0))
                elif ev["event"] == "refused":
                    self.refused.add(rid)
                elif ev["event"] == "feedback" and ev["feedback"] in FINAL_FEEDBACK:
                    self.answered[rid] = max(version, self.answered.get(rid, 0))
        return all(self.consumer.position(tp) >= end for tp, end in ends.items())

    def waiting(self) -> list[str]:
        """Rules proposed during the run that no point has answered at their latest version."""
        return sorted(r for r, v in self.proposed.items() if self.answered.get(r, 0) < v)

    def close(self) -> None:
        self.consumer.close()


class RulesWatch:
    """The drain steps of the enforcement loop, and the topics the sink must commit."""

    def __init__(self, settings: Settings, since_ms: int) -> None:
        self.settings = settings
        self.since_ms = since_ms
        self.reader: RuleEventsReader | None = None
        self.figures: dict[str, Any] = {}

    def sink_topics(self) -> list[str]:
        k = self.settings.kafka
        return [k.rules_topic, k.rule_events_topic]

    def evaluator_caught_up(self, probe: Any) -> bool:
        s = self.settings
        return bool(probe.lag(s.evaluator.group_id, [s.kafka.usage_topic]) == 0)

    def ledger_caught_up(self, probe: Any) -> bool:
        """The ledger has read every rule and feedback (its events are out before it commits)."""
        k = self.settings.kafka
        group = self.settings.ledger.group_id
        return bool(probe.lag(group, [k.rules_topic, k.feedback_topic]) == 0)

    def rules_answered(self, bootstrap: str) -> bool:
        if self.reader is None:
            self.reader = RuleEventsReader(self.settings, bootstrap, self.since_ms)
        read_all = self.reader.poll()
        waiting = self.reader.waiting()
        self.figures = {
            "proposed": len(self.reader.proposed),
            "answered": len(self.reader.answered),
            "refused": len(self.reader.refused),
            "waiting": waiting,
        }
        return read_all and not waiting

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
