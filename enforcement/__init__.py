"""Enforcement: operator policy becomes rules on Kafka, enforcement points apply
them, and a ledger follows each rule.

The pure parts (no I/O) are :mod:`enforcement.policy` (the YAML policy model),
:mod:`enforcement.targets` (what a rule matches on the wire),
:mod:`enforcement.guardrails` (what a rule may never do) and
:mod:`enforcement.evaluator` (usage windows in, rule decisions out) and
:mod:`enforcement.ledger` (each rule's state machine). The processes around
them are thin loops: :mod:`enforcement.evaluator_process` and
:mod:`enforcement.ledger_process`.

The enforcement points (nftables, BGP FlowSpec, log) that consume rules.v1
and answer on rules-feedback.v1 are :mod:`enforcement.points`.

Errors are in :mod:`enforcement.errors` (points: :mod:`enforcement.points.errors`).
"""
