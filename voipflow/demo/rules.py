"""The rules of a ``voipflow demo --policy`` run, from ClickHouse, printed beside the city table.

Every rule that had an event during the run (``rule_events``): its latest
version in ``rules`` (a refused rule has none: its event says where it would
have applied), its state (the latest event's), when the evaluator proposed
it, and when an enforcement point first reported it applied, with that
point. Read after the sink has stopped, like the city table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voipflow.demo.database import opened_for_reading
from voipflow.settings import Settings

#: Rules with events since ``{since}`` (a Unix time in ms). The events are
#: the truth of what happened (the ledger's); ``rules`` adds what was asked.
RULES_OF_RUN = """
SELECT
    e.rule_id AS rule_id,
    e.policy AS policy,
    e.city AS city,
    e.app AS app,
    if(r.rule_action != '', r.rule_action, e.event_action) AS action,
    e.mode AS mode,
    e.state AS state,
    r.latest AS version,
    e.proposed_ms AS proposed_ms,
    e.applied_ms AS applied_ms,
    e.point AS point,
    e.detail AS detail
FROM
(
    SELECT
        rule_id,
        argMax(policy, ts) AS policy,
        argMax(city, ts) AS city,
        argMax(app, ts) AS app,
        argMaxIf(action, ts, action != '') AS event_action,
        argMax(mode, ts) AS mode,
        argMax(state, ts) AS state,
        toUnixTimestamp64Milli(minIf(ts, event IN ('proposed', 'refused'))) AS proposed_ms,
        toUnixTimestamp64Milli(minIf(ts, feedback = 'applied')) AS applied_ms,
        anyIf(enforcement_point, feedback = 'applied') AS point,
        argMaxIf(detail, ts, event IN ('refused', 'escalated') OR feedback = 'failed') AS detail
    FROM rule_events
    WHERE ts >= fromUnixTimestamp64Milli(toInt64({since}))
    GROUP BY rule_id
) AS e
LEFT JOIN
(
    SELECT rule_id, max(version) AS latest, argMax(action, version) AS rule_action
    FROM rules
    GROUP BY rule_id
) AS r ON r.rule_id = e.rule_id
ORDER BY e.city, e.app, e.rule_id
"""


@dataclass(slots=True)
class RuleRow:
    rule_id: str
    policy: str
    city: str
    app: str
    action: str
    mode: str
    state: str
    version: int
    proposed_ms: int
    applied_ms: int
    point: str
    detail: str


def query_rules(settings: Settings, data_dir: Path, since_ms: int) -> list[RuleRow]:
    """The rules with events since ``since_ms``, from ``rules`` and ``rule_events``."""
    with opened_for_reading(settings, data_dir) as ch:
        rows = ch.query(RULES_OF_RUN.format(since=int(since_ms))).dicts()
    return [_row(r) for r in rows]


def _row(r: dict[str, Any]) -> RuleRow:
    return RuleRow(
        rule_id=str(r["rule_id"]),
        policy=str(r["policy"]),
        city=str(r["city"]),
        app=str(r["app"]),
        action=str(r["action"]),
        mode=str(r["mode"]),
        state=str(r["state"]),
        version=int(r["version"] or 0),
        proposed_ms=int(r["proposed_ms"] or 0),
        applied_ms=int(r["applied_ms"] or 0),
        point=str(r["point"]),
        detail=str(r["detail"]),
    )


def _hms(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) if ms > 0 else "-"


def render_rules(rows: list[RuleRow]) -> str:
    """The rules as a table like the city table (``applied after``: from proposal to feedback)."""
    head = ("rule", "city", "app", "action", "mode", "state", "proposed", "applied", "after")
    body = [
        (
            r.rule_id,
            r.city,
            r.app,
            r.action,
            r.mode,
            r.state + (f" ({r.detail})" if r.state in ("refused", "failed") and r.detail else ""),
            _hms(r.proposed_ms),
            _hms(r.applied_ms),
            f"{(r.applied_ms - r.proposed_ms) / 1000:.1f} s"
            if r.applied_ms > 0 and r.proposed_ms > 0
            else "-",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i == 8 else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [fmt(head), "  ".join("-" * w for w in widths)]
    lines += [fmt(b) for b in body]
    return "\n".join(lines)


def rules_block(
    rows: list[RuleRow], policy: Path, backend: str, actions: Path | None, nft_netns: str = ""
) -> list[str]:
    """The lines printed under the city table (``nft_netns``: where nftables installed them)."""
    applied = sum(r.state == "applied" for r in rows)
    head = (
        f"Rules of this run (ClickHouse rules, rule_events; policy {policy}, "
        f"enforcement point: {backend} backend): {len(rows)} rules, {applied} applied"
    )
    if not rows:
        return [head, "no rule fired: no policy's condition held long enough in this run"]
    out = [head, render_rules(rows)]
    if actions is not None and backend == "log":
        out.append(f"what the log backend would do: {actions}")
    if backend == "nftables":
        where = f"network namespace {nft_netns}" if nft_netns else "this host's own filters"
        out.append(f"nftables: table installed in {where}")
    return out
