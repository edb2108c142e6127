-- Distinct subscribers per app over all cities, and per city over all apps,
-- per hour and per day, so the subscriber figures of every city (the
-- dashboards' "All") merge one state per app and period instead of one per
-- city, app and period (a week at 200 cities and 15 apps: 2,520 hourly states
-- against 504,000 in voip_usage_1h), and those of a city over every app one
-- state per city and period. A selection of cities (apps) still reads the
-- per-city-and-app tables.
--
-- The states are uniq states of voip_usage_1m merged per hour (day) and app
-- (city), by materialized views. Merging uniq states is a union of sets: a row
-- seen twice changes nothing, so the backfills below may overlap the views
-- (the sinks may keep running) and a rerun is harmless.
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

CREATE TABLE IF NOT EXISTS {{db}}.city_subscribers_1h{{local}} {{on_cluster}}
(
    window_start DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    city LowCardinality(String),
    subscribers_state AggregateFunction(uniq, UInt64)
)
ENGINE = {{replicated}}AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (city, window_start)
{{ttl:window_start:usage_1h_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed city_subscribers_1h cityHash64(city)

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.city_subscribers_1h_mv{{local}} {{on_cluster}}
TO {{db}}.city_subscribers_1h{{local}}
AS SELECT
    toStartOfHour(window_start) AS window_start,
    city,
    uniqMergeState(subscribers_state) AS subscribers_state
FROM {{db}}.voip_usage_1m{{local}}
GROUP BY window_start, city;

CREATE TABLE IF NOT EXISTS {{db}}.city_subscribers_1d{{local}} {{on_cluster}}
(
    day Date CODEC(DoubleDelta, ZSTD(1)),
    city LowCardinality(String),
    subscribers_state AggregateFunction(uniq, UInt64)
)
ENGINE = {{replicated}}AggregatingMergeTree
PARTITION BY toYear(day)
ORDER BY (city, day)
{{ttl:day:usage_1d_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed city_subscribers_1d cityHash64(city)

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.city_subscribers_1d_mv{{local}} {{on_cluster}}
TO {{db}}.city_subscribers_1d{{local}}
AS SELECT
    toDate(window_start) AS day,
    city,
    uniqMergeState(subscribers_state) AS subscribers_state
FROM {{db}}.voip_usage_1m{{local}}
GROUP BY day, city;

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

INSERT INTO {{db}}.city_subscribers_1h
SELECT window_start, city, uniqMergeState(subscribers_state) AS subscribers_state
FROM {{db}}.voip_usage_1h
GROUP BY window_start, city;

INSERT INTO {{db}}.city_subscribers_1d
SELECT day, city, uniqMergeState(subscribers_state) AS subscribers_state
FROM {{db}}.voip_usage_1d
GROUP BY day, city;
