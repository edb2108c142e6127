-- Per-minute VoIP usage per city and app from the voip-usage.v1 topic, with
-- hourly and daily rollups kept by materialized views.
--
-- The sink inserts into voip_usage_in (engine Null: nothing is stored there);
-- voip_usage_in_mv turns the subscriber hash list into a mergeable uniq state
-- and writes voip_usage_1m, whose own views feed voip_usage_1h and voip_usage_1d.
-- A window re-published after a crash must not count twice in the rollups:
-- the sink keeps the first copy per (window_start, city, app) by checking
-- voip_usage_1m before it inserts, and a replayed batch carries the same
-- deduplication token, which the views inherit. voip_usage_1m is a
-- ReplacingMergeTree on that key as a last guard.
CREATE TABLE IF NOT EXISTS {{db}}.voip_usage_in{{local}} {{on_cluster}}
(
    window_start DateTime('UTC'),
    window_s UInt32,
    city String,
    region String,
    country String,
    app String,
    flows UInt64,
    packets UInt64,
    bytes UInt64,
    subscribers UInt64,
    subscriber_hashes Array(UInt64),
    call_seconds Float64,
    voip_share Float64,
    produced DateTime64(3, 'UTC')
)
ENGINE = Null;

-- @distributed voip_usage_in cityHash64(city)

CREATE TABLE IF NOT EXISTS {{db}}.voip_usage_1m{{local}} {{on_cluster}}
(
    window_start DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    window_s UInt32 CODEC(T64, ZSTD(1)),
    city LowCardinality(String),
    region LowCardinality(String),
    country LowCardinality(String),
    app LowCardinality(String),
    flows UInt64 CODEC(T64, ZSTD(1)),
    packets UInt64 CODEC(T64, ZSTD(1)),
    bytes UInt64 CODEC(T64, ZSTD(1)),
    subscribers UInt32 CODEC(T64, ZSTD(1)),
    subscribers_state AggregateFunction(uniq, UInt64),
    call_seconds Float64 CODEC(ZSTD(1)),
    voip_share Float32 CODEC(ZSTD(1)),
    produced DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    inserted_at DateTime('UTC') DEFAULT now() CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = {{replicated}}ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (city, app, window_start)
{{ttl:window_start:usage_1m_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed voip_usage_1m cityHash64(city)

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.voip_usage_in_mv{{local}} {{on_cluster}}
TO {{db}}.voip_usage_1m{{local}}
AS SELECT
    window_start,
    window_s,
    city,
    region,
    country,
    app,
    flows,
    packets,
    bytes,
    toUInt32(subscribers) AS subscribers,
    arrayReduce('uniqState', subscriber_hashes) AS subscribers_state,
    call_seconds,
    toFloat32(voip_share) AS voip_share,
    produced
FROM {{db}}.voip_usage_in{{local}};

CREATE TABLE IF NOT EXISTS {{db}}.voip_usage_1h{{local}} {{on_cluster}}
(
    window_start DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    city LowCardinality(String),
    app LowCardinality(String),
    region SimpleAggregateFunction(any, LowCardinality(String)),
    country SimpleAggregateFunction(any, LowCardinality(String)),
    minutes SimpleAggregateFunction(sum, UInt64),
    flows SimpleAggregateFunction(sum, UInt64),
    packets SimpleAggregateFunction(sum, UInt64),
    bytes SimpleAggregateFunction(sum, UInt64),
    call_seconds SimpleAggregateFunction(sum, Float64),
    subscribers_state AggregateFunction(uniq, UInt64),
    voip_share_state AggregateFunction(avg, Float32)
)
ENGINE = {{replicated}}AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (city, app, window_start)
{{ttl:window_start:usage_1h_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed voip_usage_1h cityHash64(city)

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.voip_usage_1h_mv{{local}} {{on_cluster}}
TO {{db}}.voip_usage_1h{{local}}
AS SELECT
    toStartOfHour(window_start) AS window_start,
    city,
    app,
    any(region) AS region,
    any(country) AS country,
    toUInt64(count()) AS minutes,
    sum(flows) AS flows,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    sum(call_seconds) AS call_seconds,
    uniqMergeState(subscribers_state) AS subscribers_state,
    avgState(voip_share) AS voip_share_state
FROM {{db}}.voip_usage_1m{{local}}
GROUP BY window_start, city, app;

CREATE TABLE IF NOT EXISTS {{db}}.voip_usage_1d{{local}} {{on_cluster}}
(
    day Date CODEC(DoubleDelta, ZSTD(1)),
    city LowCardinality(String),
    app LowCardinality(String),
    region SimpleAggregateFunction(any, LowCardinality(String)),
    country SimpleAggregateFunction(any, LowCardinality(String)),
    minutes SimpleAggregateFunction(sum, UInt64),
    flows SimpleAggregateFunction(sum, UInt64),
    packets SimpleAggregateFunction(sum, UInt64),
    bytes SimpleAggregateFunction(sum, UInt64),
    call_seconds SimpleAggregateFunction(sum, Float64),
    subscribers_state AggregateFunction(uniq, UInt64),
    voip_share_state AggregateFunction(avg, Float32)
)
ENGINE = {{replicated}}AggregatingMergeTree
PARTITION BY toYear(day)
ORDER BY (city, app, day)
{{ttl:day:usage_1d_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed voip_usage_1d cityHash64(city)

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.voip_usage_1d_mv{{local}} {{on_cluster}}
TO {{db}}.voip_usage_1d{{local}}
AS SELECT
    toDate(window_start) AS day,
    city,
    app,
    any(region) AS region,
    any(country) AS country,
    toUInt64(count()) AS minutes,
    sum(flows) AS flows,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    sum(call_seconds) AS call_seconds,
    uniqMergeState(subscribers_state) AS subscribers_state,
    avgState(voip_share) AS voip_share_state
FROM {{db}}.voip_usage_1m{{local}}
GROUP BY day, city, app;
