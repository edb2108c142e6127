"""``voipflow rules list|show ID|simulate``: rules as ClickHouse holds them, and what-ifs.

``list`` prints the rules in force (``--all``: every rule) at their latest
version and state; ``show ID`` one rule's versions, events, enforcement
points and effectiveness (VoIP of its city and app before and while it was
applied, and the leakage); ``simulate --policy FILE --since 7d`` runs a
policy file over the usage history and prints when and where it would have
fired, how many rules, how many subscribers they would have touched and
which guardrails would have refused. ``--format json`` for machines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from voipflow.enforcement.errors import EnforcementError
from voipflow.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="rules in force at their latest version and state")
    ls.add_argument("--all", action="store_true", help="also expired and withdrawn rules")
    ls.add_argument("--limit", type=int, default=200)
    show = sub.add_parser("show", help="one rule: versions, events, hits, effectiveness")
    show.add_argument("rule_id", metavar="ID")
    sim = sub.add_parser("simulate", help="run a policy file over the usage history")
    sim.add_argument("--policy", type=Path, required=True, metavar="FILE")
    sim.add_argument("--since", default="7d", help="how far back: 90m, 12h, 7d (default 7d)")
    for p in (ls, show, sim):
        p.add_argument("--format", choices=("text", "json"), default="text")


def _when(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    text = [[_when(r[c]) if c in _TIMES else str(r[c]) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in text]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for t in text:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))


_TIMES = {"created", "expires", "last_change", "ts", "at_ms", "expires_ms"}


def _json(obj: Any) -> None:
    print(json.dumps(obj, default=str, ensure_ascii=False, indent=2))


def run(args: argparse.Namespace, settings: Settings) -> int:
    from voipflow.storage.clickhouse import ClickHouseError, connect

    try:
        ch = connect(settings.clickhouse, settings.data_dir)
    except ClickHouseError as exc:
        print(f"voipflow rules: {exc}", file=sys.stderr)
        return 2
    try:
        if args.rules_command == "list":
            return _list(ch, args)
        if args.rules_command == "show":
            return _show(ch, args)
        return _simulate(ch, args, settings)
    except ClickHouseError as exc:
        print(f"voipflow rules: {exc} (run `voipflow db migrate` first?)", file=sys.stderr)
        return 1
    except EnforcementError as exc:
        print(f"voipflow rules: {exc}", file=sys.stderr)
        return 1
    finally:
        ch.close()


def _list(ch: Any, args: argparse.Namespace) -> int:
    from voipflow.enforcement.history import list_rules

    rows = list_rules(ch, all_rules=args.all, limit=args.limit)
    if args.format == "json":
        _json(rows)
    elif rows:
        cols = ["rule_id", "version", "state", "action", "mode", "city", "app", "target"]
        _table(rows, [*cols, "created", "expires"])
    else:
        print("no rules" + ("" if args.all else " in force (--all lists every rule)"))
    return 0


def _show(ch: Any, args: argparse.Namespace) -> int:
    from voipflow.enforcement.history import show_rule

    info = show_rule(ch, args.rule_id)
    if info is None:
        print(f"voipflow rules: no rule {args.rule_id!r} (voipflow rules list)", file=sys.stderr)
        return 1
    if args.format == "json":
        for v in info["versions"]:
            v.pop("body", None)
        _json(info)
        return 0
    rule = info["rule"] or {}
    print(f"rule {info['rule_id']}")
    if rule:
        print(f"  {rule['reason']}")
        target = rule["target"]
        ports = ",".join(f"{p['from']}-{p['to']}" for p in target["ports"]) or "any"
        print(
            f"  target {target['kind']}: {len(target['prefixes'])} prefixes, "
            f"protocol {target['protocol']}, ports {ports}"
        )
        print(f"  evidence: {rule['evidence']['condition']}")
        for w in rule["evidence"]["windows"]:
            print(f"    {_when(w['window_start_ms'])} {w['city']} {w['app']} {w['metrics']}")
    print("versions:")
    _table(info["versions"], ["version", "action", "mode", "created", "expires"])
    print("events:")
    _table(info["events"], ["ts", "rule_version", "event", "state", "enforcement_point", "hits",
                            "detail"])  # fmt: skip
    if info["enforcement_points"]:
        print("enforcement points:")
        _table(info["enforcement_points"],
               ["enforcement_point", "last_feedback", "hits", "hit_bytes", "failures"])  # fmt: skip
    eff = info["effectiveness"]
    if eff is None:
        print("effectiveness: never applied")
    else:
        leak = "-" if eff["leakage"] is None else f"{eff['leakage']:.1%}"
        print(
            f"effectiveness: applied {_when(eff['applied_at'])} .. {_when(eff['applied_until'])}: "
            f"call seconds {eff['call_seconds_before']:.0f} before -> "
            f"{eff['call_seconds_after']:.0f} while applied (leakage {leak}); "
            f"subscribers {eff['subscribers_before']} -> {eff['subscribers_after']}"
        )
    return 0


def _simulate(ch: Any, args: argparse.Namespace, settings: Settings) -> int:
    from voipflow.enforcement.history import simulate
    from voipflow.enforcement.policy import load_policies, parse_duration
    from voipflow.enforcement.targets import PeerSet, TargetResolver, load_city_prefixes
    from voipflow.streams.providers import load_providers

    try:
        since_s = parse_duration(args.since)
    except ValueError as exc:
        print(f"voipflow rules simulate: --since: {exc}", file=sys.stderr)
        return 2
    policies = load_policies(args.policy)
    ev_cfg = settings.evaluator
    resolver = TargetResolver(
        load_providers(settings.worker.provider_dir),
        load_city_prefixes(ev_cfg.prefix_table or settings.worker.prefix_table),
        PeerSet(int(ev_cfg.peer_timeout_s * 1000), ev_cfg.max_peers),
    )
    until_ms = int(time.time() * 1000)
    sim = simulate(ch, policies, settings.guardrails, resolver, until_ms - since_s * 1000,
                   until_ms)  # fmt: skip
    if args.format == "json":
        _json(sim.as_json())
        return 0
    print(
        f"{sim.windows} usage windows since {_when(sim.since_ms)}: {sim.rules} rules "
        f"({len(sim.firings)} versions), {sim.subscribers_total} subscribers touched, "
        f"{len(sim.refusals)} refused"
    )
    if sim.firings:
        print("fired:")
        rows = [f | {"subscribers": sim.subscribers.get(f["rule_id"], 0)} for f in sim.firings]
        _table(rows, ["at_ms", "policy", "city", "app", "action", "mode", "version", "prefixes",
                      "subscribers", "rule_id"])  # fmt: skip
    if sim.refusals:
        print("refused by guardrails: " + ", ".join(
            f"{k} {v}" for k, v in sorted(sim.refusals_by_guardrail().items())))  # fmt: skip
        _table(sim.refusals, ["at_ms", "policy", "city", "app", "guardrail", "reason"])
    return 0
