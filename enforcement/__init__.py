"""Enforcement: operator policy becomes rules on Kafka, enforcement points apply
them, and a ledger follows each rule.

The pure parts (no I/O) are :mod:`voipflow.enforcement.policy` (the YAML policy model),
:mod:`voipflow.enforcement.targets` (what a rule matches on the wire),
:mod:`voipflow.enforcement.guardrails` (what a rule may never do) and
:mod:`voipflow.enforcement.evaluator` (usage windows in, rule decisions out) and
:mod:`voipflow.enforcement.ledger` (each rule's state machine). The processes around
them are thin loops: :mod:`voipflow.enforcement.evaluator_process` and
:mod:`voipflow.enforcement.ledger_process`.

The enforcement points (nftables, BGP FlowSpec, log) that consume rules.v1
and answer on rules-feedback.v1 are :mod:`voipflow.enforcement.points`.

Errors are in :mod:`voipflow.enforcement.errors` (points:
:mod:`voipflow.enforcement.points.errors`).
"""
