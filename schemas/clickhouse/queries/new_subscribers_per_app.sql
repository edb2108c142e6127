-- Subscribers who used an app in the last 24 hours but not in the 7 days before.
SELECT
    app,
    uniqExact(subscriber_addr) AS new_subscribers
FROM flows_voip
WHERE time_received >= now() - INTERVAL 1 DAY
  AND (app, subscriber_addr) NOT IN (
        SELECT app, subscriber_addr
        FROM flows_voip
        WHERE time_received >= now() - INTERVAL 8 DAY
          AND time_received < now() - INTERVAL 1 DAY
      )
GROUP BY app
ORDER BY new_subscribers DESC, app
