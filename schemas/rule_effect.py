"""The effect of rules on the traffic they matched: one SQL for every reader.

``voipflow rules show`` (one rule, up to now), the "Rule effect" panel of the
Rules dashboard and the report's rules section (every selected rule, up to
the end of the time range) all read :func:`rule_effect_sql`, so the three
cannot disagree. It lives with the table definitions because both the
dashboards and the enforcement package read it and neither may import the
other.

For each rule that an enforcement point reported ``applied``:

* applied span: from its first ``applied`` feedback until its expiry (latest
  version) or ``until``, whichever is first;
* before: the span of the same length just before;
* the VoIP of the rule's city and app (``voip_usage_1m``: call seconds,
  bytes, distinct subscribers) in both spans;
* ``leakage``: call seconds while applied / call seconds before (NULL when
  there were none before). For a block it is what still got through; for a
  throttle, what remained at the reduced rate.

Rules never applied have no row. Spans older than the per-minute table's
retention find no usage rows (zeros). A rule with an empty city or app
matches no usage row here.
"""

from __future__ import annotations

#: Columns of :func:`rule_effect_sql`, in order.
COLUMNS = (
    "rule_id",
    "action",
    "city",
    "app",
    "applied_at",
    "applied_until",
    "call_seconds_before",
    "call_seconds_after",
    "bytes_before",
    "bytes_after",
    "subscribers_before",
    "subscribers_after",
    "leakage",
)

_TEMPLATE = """
WITH spans AS (
    SELECT r.rule_id AS rule_id, r.action AS action, r.city AS city, r.app AS app,
           toDateTime(a.first_applied) AS t_on,
           toDateTime(least(r.expires, {until})) AS t_off,
           t_on - (t_off - t_on) AS t_before
    FROM (
        SELECT rule_id, argMax(action, version) AS action, argMax(city, version) AS city,
               argMax(app, version) AS app, argMax(expires, version) AS expires
        FROM rules
        WHERE {rules}
        GROUP BY rule_id
    ) AS r
    INNER JOIN (
        SELECT rule_id, min(ts) AS first_applied
        FROM rule_events
        WHERE feedback = 'applied' AND {rules}
        GROUP BY rule_id
    ) AS a ON a.rule_id = r.rule_id
    WHERE {spans}
)
SELECT
    s.rule_id AS rule_id, any(s.action) AS action, any(s.city) AS city, any(s.app) AS app,
    any(s.t_on) AS applied_at,
    any(s.t_off) AS applied_until,
    sumIf(u.call_seconds, u.window_start >= s.t_before AND u.window_start < s.t_on)
        AS call_seconds_before,
    sumIf(u.call_seconds, u.window_start >= s.t_on AND u.window_start < s.t_off)
        AS call_seconds_after,
    sumIf(u.bytes, u.window_start >= s.t_before AND u.window_start < s.t_on) AS bytes_before,
    sumIf(u.bytes, u.window_start >= s.t_on AND u.window_start < s.t_off) AS bytes_after,
    uniqMergeIf(u.subscribers_state, u.window_start >= s.t_before AND u.window_start < s.t_on)
        AS subscribers_before,
    uniqMergeIf(u.subscribers_state, u.window_start >= s.t_on AND u.window_start < s.t_off)
        AS subscribers_after,
    if(call_seconds_before > 0, call_seconds_after / call_seconds_before, NULL) AS leakage
FROM (
    SELECT city, app, window_start, call_seconds, bytes, subscribers_state
    FROM voip_usage_1m
    WHERE (city, app) IN (SELECT city, app FROM spans)
      AND window_start >= (SELECT min(t_before) FROM spans)
      AND window_start < (SELECT max(t_off) FROM spans)
) AS u
RIGHT JOIN spans AS s ON u.city = s.city AND u.app = s.app
GROUP BY s.rule_id
ORDER BY applied_at, rule_id
"""


def rule_effect_sql(rules: str, until: str = "now64(3)", spans: str = "1") -> str:
    """The effect of the rules ``rules`` selects (a condition on ``rule_id``).

    ``until`` ends the applied spans of rules not expired yet (a DateTime
    expression: ``now64(3)``, or the end of a dashboard's time range);
    ``spans`` keeps only some spans (a condition on ``t_on``, ``t_off``), as a
    dashboard keeps those that overlap its range.
    """
    return _TEMPLATE.format(rules=rules, until=until, spans=spans).strip()
