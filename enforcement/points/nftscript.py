"""nftables scripts for the rules, and the installed state read back from ``nft -j``.

Pure functions, no I/O: :mod:`.nftables` runs what they write.

The table (family ``inet``) belongs to voipflow::

    chain hook_<hook>   base chain: jump rules_count; never-block guards
                        (return); jump rules_enforce
    chain rules_count   one ``jump <handle>`` per rule that only counts
                        (shadow mode, monitor, alert), first, so they see
                        traffic a block drops later
    chain rules_enforce one ``jump <handle>`` per block or throttle
    set never_4/never_6 the never-block prefixes

and each rule, named by its handle ``r<15 hex>``, is::

    set <h>_4, <h>_6    its prefixes (flags interval, timeout, and the set's
                        timeout is the time left to the rule's expiry: each
                        element times out then, so the kernel lifts the rule
                        even when the point is dead)
    set <h>_p           its port ranges (when it has any)
    chain <h>           source or destination in the sets -> goto <h>_p/<h>_a
    chain <h>_q         source or destination port in <h>_p -> goto <h>_a
    chain <h>_a         one rule: counter, then drop / limit rate over N
                        bytes/second drop / nothing (count only), with the
                        comment ``id=<rule_id>;v=<version>;d=<digest>``

``goto`` into ``<h>_a`` returns to the chain after the ``jump <h>``, so a
packet is counted once per rule whatever it matched on.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voipflow.enforcement.points.backend import Installed, State
from voipflow.enforcement.points.desired import Network, Rule

_HANDLE = re.compile(r"^(r[0-9a-f]{15})(_4|_6|_p|_q|_a)?$")
_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9._:/@+-]")
COUNT_CHAIN = "rules_count"
ENFORCE_CHAIN = "rules_enforce"
#: Element timeouts shorter than this are raised to it (nft needs some time).
MIN_TIMEOUT_MS = 1000


def base_chain(hook: str) -> str:
    return f"hook_{hook}"


def _elements(nets: Iterable[Network]) -> str:
    """Host prefixes as bare addresses: nft parses them faster than ``/32`` (about 1.4x)."""
    return ", ".join(
        str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in nets
    )


def render_base(table: str, hook: str, never_block: Iterable[Network]) -> str:
    """Recreate the table empty: its base chain, guard sets and rule lists."""
    never = list(never_block)
    v4 = list(ipaddress.collapse_addresses(n for n in never if n.version == 4))
    v6 = list(ipaddress.collapse_addresses(n for n in never if n.version == 6))
    t = f"inet {table}"
    base = base_chain(hook)
    lines = [
        f"add table {t}",
        f"delete table {t}",
        f'add table {t} {{ comment "owned by voipflow enforce; changes are reverted"; }}',
        f"add chain {t} {base} {{ type filter hook {hook} priority filter; policy accept; }}",
        f"add chain {t} {COUNT_CHAIN}",
        f"add chain {t} {ENFORCE_CHAIN}",
        f"add set {t} never_4 {{ type ipv4_addr; flags interval; }}",
        f"add set {t} never_6 {{ type ipv6_addr; flags interval; }}",
    ]
    if v4:
        lines.append(f"add element {t} never_4 {{ {_elements(v4)} }}")
    if v6:
        lines.append(f"add element {t} never_6 {{ {_elements(v6)} }}")
    lines += [
        f"add rule {t} {base} jump {COUNT_CHAIN}",
        f"add rule {t} {base} ip saddr @never_4 return",
        f"add rule {t} {base} ip daddr @never_4 return",
        f"add rule {t} {base} ip6 saddr @never_6 return",
        f"add rule {t} {base} ip6 daddr @never_6 return",
        f"add rule {t} {base} jump {ENFORCE_CHAIN}",
    ]
    return "\n".join(lines) + "\n"


#: Rules in the base chain, in order (checked to find a damaged base).
BASE_RULES = 6


def comment_of(rule: Rule) -> str:
    rid = _COMMENT_SAFE.sub("_", rule.rule_id)[:80]
    return f"id={rid};v={rule.version};d={rule.digest}"


def render_add(table: str, rule: Rule, now_ms: int) -> str:
    """The commands that install one rule (appended to a batch)."""
    t = f"inet {table}"
    h = rule.handle
    timeout = max(MIN_TIMEOUT_MS, rule.expires_ms - now_ms)
    lines = []
    for fam, nets, typ in (("4", rule.v4, "ipv4_addr"), ("6", rule.v6, "ipv6_addr")):
        if nets:
            # The set's timeout applies to every element added: all expire with the rule.
            lines.append(
                f"add set {t} {h}_{fam} {{ type {typ}; flags interval, timeout; "
                f"timeout {timeout}ms; }}"
            )
            lines.append(f"add element {t} {h}_{fam} {{ {_elements(nets)} }}")
    if rule.ports:
        ports = ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in rule.ports)
        lines.append(f"add set {t} {h}_p {{ type inet_service; flags interval; }}")
        lines.append(f"add element {t} {h}_p {{ {ports} }}")
    lines.append(f"add chain {t} {h}_a")
    verdict = ""
    if rule.drops:
        verdict = " drop"
        if rule.action == "throttle":
            verdict = f" limit rate over {rule.rate_bytes_per_s} bytes/second drop"
    lines.append(f'add rule {t} {h}_a counter{verdict} comment "{comment_of(rule)}"')
    after = f"{h}_a"
    if rule.ports:
        lines.append(f"add chain {t} {h}_q")
        lines.append(f"add rule {t} {h}_q th sport @{h}_p goto {h}_a")
        lines.append(f"add rule {t} {h}_q th dport @{h}_p goto {h}_a")
        after = f"{h}_q"
    proto = "" if rule.protocol == "any" else f"meta l4proto {rule.protocol} "
    lines.append(f"add chain {t} {h}")
    if not rule.v4 and not rule.v6:
        lines.append(f"add rule {t} {h} {proto}goto {after}")
    if rule.v4:
        for side in ("saddr", "daddr"):
            lines.append(f"add rule {t} {h} {proto}ip {side} @{h}_4 goto {after}")
    if rule.v6:
        for side in ("saddr", "daddr"):
            lines.append(f"add rule {t} {h} {proto}ip6 {side} @{h}_6 goto {after}")
    where = ENFORCE_CHAIN if rule.drops else COUNT_CHAIN
    lines.append(f'add rule {t} {where} jump {h} comment "{h}"')
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class Parts:
    """What of one rule is in the table: enough to remove it and to check it."""

    chains: set[str] = field(default_factory=set)
    sets: dict[str, list[Any]] = field(default_factory=dict)
    #: (chain, rule handle) of its jump rules in rules_count / rules_enforce.
    jumps: list[tuple[str, int]] = field(default_factory=list)
    comment: str = ""
    counter: tuple[int, int] | None = None


def render_remove(table: str, handle: str, parts: Parts) -> str:
    """The commands that take one rule out (references first, then chains, then sets)."""
    t = f"inet {table}"
    lines = [f"delete rule {t} {chain} handle {n}" for chain, n in parts.jumps]
    order = [handle, f"{handle}_q", f"{handle}_a"]
    chains = [c for c in order if c in parts.chains]
    lines += [f"flush chain {t} {c}" for c in chains]
    lines += [f"delete chain {t} {c}" for c in chains]
    lines += [f"delete set {t} {s}" for s in sorted(parts.sets)]
    return "\n".join(lines) + "\n"


def _net(val: Any) -> Network | None:
    if isinstance(val, dict) and "elem" in val:
        val = val["elem"].get("val")
    if isinstance(val, str):
        return ipaddress.ip_network(val)
    if isinstance(val, dict) and "prefix" in val:
        p = val["prefix"]
        return ipaddress.ip_network(f"{p['addr']}/{p['len']}")
    return None  # ranges that are no prefix: never written by us


def _port(val: Any) -> tuple[int, int] | None:
    if isinstance(val, dict) and "elem" in val:
        val = val["elem"].get("val")
    if isinstance(val, int):
        return (val, val)
    if isinstance(val, dict) and "range" in val:
        lo, hi = val["range"]
        return (int(lo), int(hi))
    return None


def _parse_comment(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(";"):
        k, _, v = item.partition("=")
        out[k] = v
    return out


def parse_state(
    doc: Mapping[str, Any] | None,
    hook: str,
    never_block: Iterable[Network],
    desired: Mapping[str, Rule],
    now_ms: int,
    grace_ms: int,
) -> State:
    """The installed state from ``nft -j list table`` (``None``: no table at all)."""
    if doc is None:
        return State(base_ok=False, base_detail="table missing")
    objs = doc.get("nftables", [])
    chains: dict[str, dict[str, Any]] = {}
    sets: dict[str, list[Any]] = {}
    rules: dict[str, list[dict[str, Any]]] = {}
    for obj in objs:
        if "chain" in obj:
            chains[obj["chain"]["name"]] = obj["chain"]
        elif "set" in obj:
            sets[obj["set"]["name"]] = obj["set"].get("elem", [])
        elif "rule" in obj:
            rules.setdefault(obj["rule"]["chain"], []).append(obj["rule"])
    base = base_chain(hook)
    problems = []
    if base not in chains or chains[base].get("hook") != hook:
        problems.append(f"base chain {base} missing")
    for name in (COUNT_CHAIN, ENFORCE_CHAIN):
        if name not in chains:
            problems.append(f"chain {name} missing")
    if len(rules.get(base, [])) != BASE_RULES:
        problems.append(f"base chain has {len(rules.get(base, []))} rules, not {BASE_RULES}")
    never = list(never_block)
    for fam, version in (("4", 4), ("6", 6)):
        want = set(ipaddress.collapse_addresses(n for n in never if n.version == version))  # type: ignore[type-var]
        if f"never_{fam}" not in sets:
            problems.append(f"set never_{fam} missing")
        elif {_net(e) for e in sets[f"never_{fam}"]} != want:
            problems.append(f"set never_{fam} differs from the guardrails' never-block prefixes")
    if problems:
        # A damaged frame is rebuilt from scratch, with every rule in it.
        return State(base_ok=False, base_detail="; ".join(problems))

    parts: dict[str, Parts] = {}
    for name in chains:
        m = _HANDLE.match(name)
        if m:
            parts.setdefault(m.group(1), Parts()).chains.add(name)
    for name, elems in sets.items():
        m = _HANDLE.match(name)
        if m:
            parts.setdefault(m.group(1), Parts()).sets[name] = elems
    for chain in (COUNT_CHAIN, ENFORCE_CHAIN):
        for r in rules.get(chain, []):
            target = next((e["jump"]["target"] for e in r["expr"] if "jump" in e), "")
            m = _HANDLE.match(target)
            if m:
                parts.setdefault(m.group(1), Parts()).jumps.append((chain, int(r["handle"])))
    for handle, p in parts.items():
        for r in rules.get(f"{handle}_a", []):
            p.comment = r.get("comment", "")
            for e in r["expr"]:
                if "counter" in e:
                    p.counter = (int(e["counter"]["packets"]), int(e["counter"]["bytes"]))
    state = State()
    for handle, p in parts.items():
        info = _parse_comment(p.comment)
        version = int(info["v"]) if info.get("v", "").isdigit() else 0
        inst = Installed(
            handle=handle,
            rule_id=info.get("id") or None,
            version=version,
            digest=info.get("d", ""),
            packets=p.counter[0] if p.counter else None,
            bytes=p.counter[1] if p.counter else None,
            elements=sum(len(v) for k, v in p.sets.items() if not k.endswith("_p")),
            parts=p,
        )
        rule = desired.get(handle)
        if rule is not None and inst.digest == rule.digest:
            inst.detail = _damage(rule, p, now_ms, grace_ms)
            inst.intact = not inst.detail
        state.rules[handle] = inst
    return state


def _damage(rule: Rule, p: Parts, now_ms: int, grace_ms: int) -> str:
    """What is missing or wrong in an installed rule, '' when nothing."""
    h = rule.handle
    want_chains = {h, f"{h}_a"} | ({f"{h}_q"} if rule.ports else set())
    if missing := sorted(want_chains - p.chains):
        return f"chain {', '.join(missing)} missing"
    if p.counter is None:
        return "counter missing"
    where = ENFORCE_CHAIN if rule.drops else COUNT_CHAIN
    if [c for c, _ in p.jumps] != [where]:
        return f"jump from {where} missing or doubled"
    near_expiry = rule.expires_ms - now_ms <= grace_ms
    for fam, nets in (("4", rule.v4), ("6", rule.v6)):
        name = f"{h}_{fam}"
        if not nets:
            continue
        if name not in p.sets:
            return f"set {name} missing"
        have = {_net(e) for e in p.sets[name]}
        if have != set(nets) and not near_expiry:
            lost = len(set(nets) - have)
            return f"set {name} differs ({lost} of {len(nets)} elements missing)"
    if rule.ports:
        name = f"{h}_p"
        if name not in p.sets or {_port(e) for e in p.sets[name]} != set(rule.ports):
            return f"set {name} missing or differs"
    return ""
