-- Rollups that hold for any window width (VOIPFLOW_WORKER_WINDOW_S), not
-- only 60 s.
--
-- voip_usage_1m holds one row per closed window of window_s seconds. The
-- hourly and daily views counted those rows as minutes (count()), so with
-- 5 s windows an hour of usage showed 720 "minutes". `minutes` becomes the
-- minutes of windows with usage, sum(window_s) / 60, a Float64 (a 5 s window
-- is 1/12 minute); rows written before this migration came from 60 s windows,
-- for which the old count was already right and converts as it is. Sums of
-- flows, packets, bytes and call seconds and the uniq states never depended on
-- the width; the worker refuses widths that do not divide an hour, so every
-- window lies inside one hour and one day. voip_share stays the average over
-- windows, which is a time average as long as all windows have one width.
--
-- The views are dropped and created again with the new expression: inserts
-- into voip_usage_1m between the two statements would not reach the
-- rollups, so run this migration (`voipflow db migrate`, or `voipflow sink
-- --migrate`) before the sinks start, as every migration.
ALTER TABLE {{db}}.voip_usage_1h{{local}} {{on_cluster}}
    MODIFY COLUMN minutes SimpleAggregateFunction(sum, Float64);

ALTER TABLE {{db}}.voip_usage_1d{{local}} {{on_cluster}}
    MODIFY COLUMN minutes SimpleAggregateFunction(sum, Float64);

-- On a cluster the Distributed tables carry the column too (without a
-- cluster these repeat the statements above, which changes nothing).
ALTER TABLE {{db}}.voip_usage_1h {{on_cluster}}
    MODIFY COLUMN minutes SimpleAggregateFunction(sum, Float64);

ALTER TABLE {{db}}.voip_usage_1d {{on_cluster}}
    MODIFY COLUMN minutes SimpleAggregateFunction(sum, Float64);

DROP VIEW IF EXISTS {{db}}.voip_usage_1h_mv{{local}} {{on_cluster}} SYNC;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.voip_usage_1h_mv{{local}} {{on_cluster}}
TO {{db}}.voip_usage_1h{{local}}
AS SELECT
    toStartOfHour(window_start) AS window_start,
    city,
    app,
    any(region) AS region,
    any(country) AS country,
    sum(window_s) / 60 AS minutes,
    sum(flows) AS flows,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    sum(call_seconds) AS call_seconds,
    uniqMergeState(subscribers_state) AS subscribers_state,
    avgState(voip_share) AS voip_share_state
FROM {{db}}.voip_usage_1m{{local}}
GROUP BY window_start, city, app;

DROP VIEW IF EXISTS {{db}}.voip_usage_1d_mv{{local}} {{on_cluster}} SYNC;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.voip_usage_1d_mv{{local}} {{on_cluster}}
TO {{db}}.voip_usage_1d{{local}}
AS SELECT
    toDate(window_start) AS day,
    city,
    app,
    any(region) AS region,
    any(country) AS country,
    sum(window_s) / 60 AS minutes,
    sum(flows) AS flows,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    sum(call_seconds) AS call_seconds,
    uniqMergeState(subscribers_state) AS subscribers_state,
    avgState(voip_share) AS voip_share_state
FROM {{db}}.voip_usage_1m{{local}}
GROUP BY day, city, app;
