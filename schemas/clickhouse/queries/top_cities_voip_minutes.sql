-- Top cities by VoIP minutes (estimated call time) over the last 7 days.
SELECT
    city,
    round(sum(call_seconds) / 60, 1) AS voip_minutes,
    uniqMerge(subscribers_state) AS subscribers
FROM voip_usage_1h
WHERE window_start >= now() - INTERVAL 7 DAY
GROUP BY city
ORDER BY voip_minutes DESC, city
LIMIT 10
