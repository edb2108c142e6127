-- Share of each app in a city's VoIP minutes over the last 24 hours.
SELECT
    city,
    app,
    round(sum(call_seconds) / 60, 1) AS voip_minutes,
    round(sum(call_seconds) / sum(sum(call_seconds)) OVER (PARTITION BY city), 4) AS share
FROM voip_usage_1h
WHERE window_start >= now() - INTERVAL 24 HOUR
GROUP BY city, app
ORDER BY city, share DESC, app
