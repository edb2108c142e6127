-- All traffic of each city per hour (VoIP or not), for the VoIP share of
-- traffic over long ranges without reading per-minute rows.
--
-- A voip_usage_1m row carries its app's share of the city's bytes in its
-- window, so bytes / voip_share is the city's total in that window (the same
-- from every app's row, up to Float32 rounding). That total must count once
-- per window, however many apps saw VoIP in it and however the sink cut its
-- inserts, so a plain sum per hour cannot hold it. Each hourly row keeps it
-- per window instead: `windows` maps the window's second within the hour to
-- the city's bytes in it, merged with maxMap. Merging is idempotent, so rows
-- seen twice (a batch re-sent, the backfill below racing the sink) change
-- nothing; read an hour's total with arraySum(windows.2) FROM city_traffic_1h
-- FINAL (or arraySum((maxMap(windows)).2) grouped by window_start and city,
-- slower), and sum hours. Windows with voip_share 0 (a city with
-- no bytes at all) are left out. Only windows with VoIP are known, so this is
-- the city's traffic in the windows where VoIP was seen, the denominator the
-- per-minute VoIP share used already.
--
-- Kept as long as voip_usage_1h (VOIPFLOW_CLICKHOUSE_USAGE_1H_TTL_DAYS); a
-- range of days reads these hours grouped by day (there is no daily table:
-- windows of a day would make maps 24 times longer for no fewer entries).
CREATE TABLE IF NOT EXISTS {{db}}.city_traffic_1h{{local}} {{on_cluster}}
(
    window_start DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    city LowCardinality(String),
    windows SimpleAggregateFunction(maxMap, Tuple(Array(UInt16), Array(Float64)))
)
ENGINE = {{replicated}}AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (city, window_start)
{{ttl:window_start:usage_1h_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed city_traffic_1h cityHash64(city)

-- The inner query renames window_start: the outer alias must not shadow the
-- window's own start inside maxMap.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.city_traffic_1h_mv{{local}} {{on_cluster}}
TO {{db}}.city_traffic_1h{{local}}
AS SELECT
    toStartOfHour(ws) AS window_start,
    city,
    maxMap(([toUInt16(toUnixTimestamp(ws) % 3600)], [bytes / voip_share])) AS windows
FROM (
    SELECT window_start AS ws, city, bytes, voip_share
    FROM {{db}}.voip_usage_1m{{local}}
    WHERE voip_share > 0
)
GROUP BY window_start, city;

-- Backfill: the hours of the per-minute rows already stored (the view sees
-- only inserts from here on). Rows the view and this copy both see merge to
-- the same maxima, so the sinks may keep running, and a rerun is harmless.
-- Through the Distributed tables on a cluster: every shard's minutes, each
-- city to its shard.
INSERT INTO {{db}}.city_traffic_1h
SELECT
    toStartOfHour(ws) AS window_start,
    city,
    maxMap(([toUInt16(toUnixTimestamp(ws) % 3600)], [bytes / voip_share])) AS windows
FROM (
    SELECT window_start AS ws, city, bytes, voip_share
    FROM {{db}}.voip_usage_1m
    WHERE voip_share > 0
)
GROUP BY window_start, city;
