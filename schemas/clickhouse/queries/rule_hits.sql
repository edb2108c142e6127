-- Rules over the last 7 days: hits reported by enforcement points, where the
-- rule is applied, and its latest state.
SELECT
    rule_id,
    argMax(action, ts) AS action,
    argMax(state, ts) AS state,
    sum(hits) AS hits,
    sum(hit_bytes) AS hit_bytes,
    uniqExactIf(enforcement_point, feedback = 'applied') AS applied_at_points,
    countIf(feedback = 'failed') AS failures,
    max(ts) AS last_event
FROM rule_events
WHERE ts >= now() - INTERVAL 7 DAY
GROUP BY rule_id
ORDER BY hits DESC, rule_id
