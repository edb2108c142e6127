-- Hourly VoIP trend over the last 48 hours, all cities: flows, bytes (sampling
-- corrected), distinct subscribers (merged from the per-minute uniq states).
SELECT
    window_start AS hour,
    sum(flows) AS flows,
    sum(bytes) AS bytes,
    round(sum(call_seconds) / 60, 1) AS voip_minutes,
    uniqMerge(subscribers_state) AS subscribers
FROM voip_usage_1h
WHERE window_start >= now() - INTERVAL 48 HOUR
GROUP BY hour
ORDER BY hour
