-- Distinct subscribers per app per hour and per day over all cities, so the
-- subscriber figures for every city (the dashboard's "All") merge one state
-- per app and period instead of one per city, app and period: a week at 200
-- cities and 15 apps is 2,520 hourly states here against 504,000 in
-- voip_usage_1h. A selection of cities still reads the per-city tables.
--
-- The states are uniq states of voip_usage_1m merged per hour (day) and app,
-- by materialized views. Merging uniq states is a union of sets: a row seen
-- twice changes nothing, so the backfill below may overlap the views (the
-- sinks may keep running) and a rerun is harmless.
--
-- Kept like the per-city rollups (VOIPFLOW_CLICKHOUSE_USAGE_1H_TTL_DAYS,
-- ..._USAGE_1D_TTL_DAYS).
CREATE TABLE IF NOT EXISTS {{db}}.app_subscribers_1h{{local}} {{on_cluster}}
(
    window_start DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    app LowCardinality(String),
    subscribers_state AggregateFunction(uniq, UInt64)
)
ENGINE = {{replicated}}AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (app, window_start)
{{ttl:window_start:usage_1h_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed app_subscribers_1h cityHash64(app)

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.app_subscribers_1h_mv{{local}} {{on_cluster}}
TO {{db}}.app_subscribers_1h{{local}}
AS SELECT
    toStartOfHour(window_start) AS window_start,
    app,
    uniqMergeState(subscribers_state) AS subscribers_state
FROM {{db}}.voip_usage_1m{{local}}
GROUP BY window_start, app;

CREATE TABLE IF NOT EXISTS {{db}}.app_subscribers_1d{{local}} {{on_cluster}}
(
    day Date CODEC(DoubleDelta, ZSTD(1)),
    app LowCardinality(String),
    subscribers_state AggregateFunction(uniq, UInt64)
)
ENGINE = {{replicated}}AggregatingMergeTree
PARTITION BY toYear(day)
ORDER BY (app, day)
{{ttl:day:usage_1d_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed app_subscribers_1d cityHash64(app)

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.app_subscribers_1d_mv{{local}} {{on_cluster}}
TO {{db}}.app_subscribers_1d{{local}}
AS SELECT
    toDate(window_start) AS day,
    app,
    uniqMergeState(subscribers_state) AS subscribers_state
FROM {{db}}.voip_usage_1m{{local}}
GROUP BY day, app;

-- Backfill from the per-city rollups, which reach further back than the
-- per-minute rows (through the Distributed tables on a cluster).
INSERT INTO {{db}}.app_subscribers_1h
SELECT window_start, app, uniqMergeState(subscribers_state) AS subscribers_state
FROM {{db}}.voip_usage_1h
GROUP BY window_start, app;

INSERT INTO {{db}}.app_subscribers_1d
SELECT day, app, uniqMergeState(subscribers_state) AS subscribers_state
FROM {{db}}.voip_usage_1d
GROUP BY day, app;
