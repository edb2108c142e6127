"""Rules as ClickHouse holds them, and policies replayed over the usage history.

What ``voipflow rules list|show|simulate`` prints, as functions of a
ClickHouse connection (the tests run them on chdb):

* :func:`list_rules` -- every rule at its latest version with its current
  state (the state of its latest event);
* :func:`show_rule` -- one rule: its versions, events, hits per enforcement
  point and its effectiveness (:data:`EFFECTIVENESS_SQL`, also in docs/sql.md,
  from :mod:`voipflow.schemas.rule_effect`);
* :func:`simulate` -- a policy file run by the real evaluator over
  ``voip_usage_1m`` windows in time order (event time drives expiry): when
  and where it fires, how many rules, the distinct subscribers of the matched
  city and app while each rule was in force, and every guardrail refusal.
  ``observed_peers`` targets get the peers of ``flows_voip`` as they were
  seen up to each window (and kept for the peer timeout).
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from voipflow.enforcement.config import GuardrailConfig
from voipflow.enforcement.evaluator import Evaluator, Event, Publish
from voipflow.enforcement.guardrails import Guardrails
from voipflow.enforcement.policy import Policy
from voipflow.enforcement.targets import TargetResolver
from voipflow.schemas.rule_effect import rule_effect_sql


def _lit(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


#: Latest version of each rule with the state of its latest event.
LIST_SQL = """
SELECT r.rule_id AS rule_id, r.latest AS version, r.policy AS policy, r.mode AS mode,
       r.action AS action, r.city AS city, r.app AS app, r.target_kind AS target,
       r.created AS created, r.expires AS expires, s.state AS state, s.last_change AS last_change
FROM (
    SELECT rule_id, max(version) AS latest, argMax(policy, version) AS policy,
           argMax(mode, version) AS mode, argMax(action, version) AS action,
           argMax(city, version) AS city, argMax(app, version) AS app,
           argMax(target_kind, version) AS target_kind, argMax(created, version) AS created,
           argMax(expires, version) AS expires
    FROM rules GROUP BY rule_id
) AS r
LEFT JOIN (
    SELECT rule_id, argMax(state, ts) AS state, max(ts) AS last_change
    FROM rule_events GROUP BY rule_id
) AS s ON s.rule_id = r.rule_id
{where}
ORDER BY r.created DESC, r.rule_id
LIMIT {limit}
"""

#: Effectiveness of one rule (``{rule_id}`` a quoted literal), up to now: the SQL
#: the Rules dashboard and the report use too (:mod:`voipflow.schemas.rule_effect`).
EFFECTIVENESS_SQL = rule_effect_sql("rule_id = {rule_id}")


def list_rules(ch: Any, *, all_rules: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    """Rules at their latest version; by default only those not expired or withdrawn."""
    where = "" if all_rules else (
        "WHERE s.state NOT IN ('expired', 'withdrawn', 'removed') AND r.expires > now64(3)"
    )  # fmt: skip
    rows: list[dict[str, Any]] = ch.query(LIST_SQL.format(where=where, limit=int(limit))).dicts()
    return rows


def show_rule(ch: Any, rule_id: str) -> dict[str, Any] | None:
    """Versions, events, hits per enforcement point and effectiveness of one rule."""
    rid = _lit(rule_id)
    versions = ch.query(
        f"SELECT version, created, expires, action, mode, reason, body FROM rules "
        f"WHERE rule_id = {rid} ORDER BY version"
    ).dicts()
    events = ch.query(
        f"SELECT ts, rule_version, event, state, feedback, enforcement_point, hits, detail "
        f"FROM rule_events WHERE rule_id = {rid} ORDER BY ts, event"
    ).dicts()
    if not versions and not events:
        return None
    points = ch.query(
        f"SELECT enforcement_point, argMax(feedback, ts) AS last_feedback, sum(hits) AS hits, "
        f"sum(hit_bytes) AS hit_bytes, countIf(feedback = 'failed') AS failures "
        f"FROM rule_events WHERE rule_id = {rid} AND enforcement_point != '' "
        f"GROUP BY enforcement_point ORDER BY enforcement_point"
    ).dicts()
    eff = ch.query(EFFECTIVENESS_SQL.format(rule_id=rid)).dicts()
    latest = json.loads(versions[-1]["body"]) if versions and versions[-1]["body"] else None
    return {
        "rule_id": rule_id,
        "rule": latest,
        "versions": versions,
        "events": events,
        "enforcement_points": points,
        "effectiveness": eff[0] if eff and eff[0]["applied_at"] is not None else None,
    }


# -- simulation ----------------------------------------------------------------

USAGE_SQL = """
SELECT toUnixTimestamp(window_start) * 1000 AS window_start_ms, window_s, city, region,
       country, app, flows, packets, bytes, subscribers, call_seconds, voip_share
FROM voip_usage_1m FINAL
WHERE window_start >= toDateTime({since_s}) AND window_start < toDateTime({until_s})
ORDER BY window_start, city, app
"""


#: Peers of the VoIP flows per minute, for observed_peers targets.
PEERS_SQL = """
SELECT max(toUnixTimestamp64Milli(flow_end)) AS seen_ms, city, app,
       IPv6NumToString(peer_addr) AS peer
FROM flows_voip
WHERE flow_end >= fromUnixTimestamp64Milli(toInt64({since_ms}))
  AND flow_end < fromUnixTimestamp64Milli(toInt64({until_ms})) AND app IN ({apps})
GROUP BY toStartOfMinute(flow_end) AS minute, city, app, peer
ORDER BY seen_ms, city, app, peer
"""


def _peer_prefix(text: str) -> str:
    ip = ipaddress.IPv6Address(text)
    v4 = ip.ipv4_mapped
    return f"{v4}/32" if v4 is not None else f"{ip}/128"


def _peer_feed(
    ch: Any, policies: list[Policy], resolver: TargetResolver, since_ms: int, until_ms: int
) -> list[tuple[int, str, str, str]]:
    """(seen ms, city, app, prefix) of the flows_voip peers the policies may target."""
    apps = {a for p in policies if p.target == "observed_peers" for a in p.match.apps}
    if not any(p.target == "observed_peers" for p in policies):
        return []
    app_list = (
        ", ".join(_lit(a) for a in sorted(apps)) if apps else "SELECT DISTINCT app FROM flows_voip"
    )
    sql = PEERS_SQL.format(
        since_ms=since_ms - resolver.peers.timeout_ms, until_ms=until_ms, apps=app_list
    )
    return [(int(r[0]), str(r[1]), str(r[2]), _peer_prefix(str(r[3]))) for r in ch.query(sql).rows]


@dataclass
class Simulation:
    """What a policy file would have done over a stretch of history."""

    since_ms: int
    until_ms: int
    windows: int = 0
    #: One per published rule version: when, where, what.
    firings: list[dict[str, Any]] = field(default_factory=list)
    #: One per guardrail refusal (once per run of windows).
    refusals: list[dict[str, Any]] = field(default_factory=list)
    #: rule id -> distinct subscribers of its city and app while it was in force.
    subscribers: dict[str, int] = field(default_factory=dict)
    subscribers_total: int = 0

    @property
    def rules(self) -> int:
        return len({f["rule_id"] for f in self.firings})

    def refusals_by_guardrail(self) -> dict[str, int]:
        return dict(Counter(r["guardrail"] for r in self.refusals))

    def as_json(self) -> dict[str, Any]:
        return {
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "windows": self.windows,
            "rules": self.rules,
            "rule_versions": len(self.firings),
            "subscribers_touched": self.subscribers_total,
            "refusals_by_guardrail": self.refusals_by_guardrail(),
            "firings": self.firings,
            "refusals": self.refusals,
            "subscribers_per_rule": self.subscribers,
        }


def simulate(
    ch: Any,
    policies: list[Policy],
    guardrails: GuardrailConfig,
    resolver: TargetResolver,
    since_ms: int,
    until_ms: int,
) -> Simulation:
    """Run ``policies`` over the usage windows in ``[since_ms, until_ms)``."""
    ev = Evaluator(list(policies), resolver, Guardrails(guardrails))
    sim = Simulation(since_ms, until_ms)
    res = ch.query(USAGE_SQL.format(since_s=since_ms // 1000, until_s=until_ms // 1000))
    peers = _peer_feed(ch, policies, resolver, since_ms, until_ms)
    next_peer = 0
    spans: dict[str, list[tuple[str, str, int, int]]] = {}
    for row in res.dicts():
        row["window_start_ms"] = int(row["window_start_ms"])
        end_ms = row["window_start_ms"] + int(row["window_s"]) * 1000
        while next_peer < len(peers) and peers[next_peer][0] < end_ms:
            seen, city, app, prefix = peers[next_peer]
            resolver.peers.add(city, app, (prefix,), seen)  # the flows seen so far
            next_peer += 1
        ev.expire(end_ms)  # event time: a rule lives its ttl in the replayed history
        sim.windows += 1
        for out in ev.on_usage(row, end_ms):
            if isinstance(out, Publish):
                rule = out.rule
                sim.firings.append(
                    {
                        "at_ms": end_ms,
                        "rule_id": rule["rule_id"],
                        "version": rule["version"],
                        "policy": rule["policy"],
                        "city": row["city"],
                        "app": row["app"],
                        "action": rule["action"],
                        "mode": rule["mode"],
                        "prefixes": len(rule["target"]["prefixes"]),
                        "expires_ms": rule["expires_ms"],
                    }
                )
                spans.setdefault(rule["rule_id"], []).append(
                    (row["city"], row["app"], rule["created_ms"], rule["expires_ms"])
                )
            elif isinstance(out, Event) and out.event["event"] == "refused":
                code, _, reason = out.event["detail"].partition(": ")
                sim.refusals.append(
                    {
                        "at_ms": end_ms,
                        "rule_id": out.event["rule_id"],
                        "policy": out.event["policy"],
                        "city": row["city"],
                        "app": row["app"],
                        "guardrail": code,
                        "reason": reason,
                    }
                )
    _subscribers(ch, sim, spans)
    return sim


def _span_filter(spans: list[tuple[str, str, int, int]]) -> str:
    parts = [
        f"(city = {_lit(c)} AND app = {_lit(a)} AND window_start >= toDateTime({lo // 1000}) "
        f"AND window_start < toDateTime({hi // 1000}))"
        for c, a, lo, hi in spans
    ]
    return " OR ".join(parts)


def _subscribers(
    ch: Any, sim: Simulation, spans: dict[str, list[tuple[str, str, int, int]]]
) -> None:
    """Distinct subscribers of each rule's city and app while it was in force."""
    if not spans:
        return
    for rid, rule_spans in spans.items():
        sql = (
            f"SELECT uniqMerge(subscribers_state) FROM voip_usage_1m "
            f"WHERE {_span_filter(rule_spans)}"
        )
        sim.subscribers[rid] = int(ch.query(sql).scalar())
    everything = [s for rule_spans in spans.values() for s in rule_spans]
    sql = f"SELECT uniqMerge(subscribers_state) FROM voip_usage_1m WHERE {_span_filter(everything)}"
    sim.subscribers_total = int(ch.query(sql).scalar())
