-- Hourly and daily traffic per exporter and observation domain, rolled up
-- from exporter_traffic_1m by materialized views, so coverage over months
-- (which exporters sent how much, how much of it was placed in a city, how
-- much was VoIP) reads hours or days instead of minutes, and outlives the
-- per-minute rows (VOIPFLOW_CLICKHOUSE_TRAFFIC_1H_TTL_DAYS, ..._1D_...).
--
-- `seconds` is the window time covered, sum(window_s): any window width that
-- divides an hour (the worker refuses others) lies inside one hour and one
-- day. Every other column is the sum of the per-minute column; read them with
-- sum() and GROUP BY, as rows of one period merge only eventually.
--
-- The views see what is inserted into exporter_traffic_1m from the migration
-- on; the sink inserts the first copy of each window only, so the sums count
-- each window once. Rows already in exporter_traffic_1m are not rolled up
-- here (a copy in the migration could race with the sink's inserts);
-- docs/sql.md shows the INSERT ... SELECT that fills in older hours.
CREATE TABLE IF NOT EXISTS {{db}}.exporter_traffic_1h{{local}} {{on_cluster}}
(
    window_start DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    exporter IPv6,
    observation_domain_id UInt32,
    seconds SimpleAggregateFunction(sum, UInt64),
    flows SimpleAggregateFunction(sum, UInt64),
    packets SimpleAggregateFunction(sum, UInt64),
    bytes SimpleAggregateFunction(sum, UInt64),
    packets_est SimpleAggregateFunction(sum, UInt64),
    bytes_est SimpleAggregateFunction(sum, UInt64),
    placed_flows SimpleAggregateFunction(sum, UInt64),
    unlocated_flows SimpleAggregateFunction(sum, UInt64),
    unhomed_flows SimpleAggregateFunction(sum, UInt64),
    voip_flows SimpleAggregateFunction(sum, UInt64),
    voip_bytes_est SimpleAggregateFunction(sum, UInt64)
)
ENGINE = {{replicated}}AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (exporter, observation_domain_id, window_start)
{{ttl:window_start:traffic_1h_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed exporter_traffic_1h cityHash64(exporter)

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.exporter_traffic_1h_mv{{local}} {{on_cluster}}
TO {{db}}.exporter_traffic_1h{{local}}
AS SELECT
    toStartOfHour(window_start) AS window_start,
    exporter,
    observation_domain_id,
    toUInt64(sum(window_s)) AS seconds,
    sum(flows) AS flows,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    sum(packets_est) AS packets_est,
    sum(bytes_est) AS bytes_est,
    sum(placed_flows) AS placed_flows,
    sum(unlocated_flows) AS unlocated_flows,
    sum(unhomed_flows) AS unhomed_flows,
    sum(voip_flows) AS voip_flows,
    sum(voip_bytes_est) AS voip_bytes_est
FROM {{db}}.exporter_traffic_1m{{local}}
GROUP BY window_start, exporter, observation_domain_id;

CREATE TABLE IF NOT EXISTS {{db}}.exporter_traffic_1d{{local}} {{on_cluster}}
(
    day Date CODEC(DoubleDelta, ZSTD(1)),
    exporter IPv6,
    observation_domain_id UInt32,
    seconds SimpleAggregateFunction(sum, UInt64),
    flows SimpleAggregateFunction(sum, UInt64),
    packets SimpleAggregateFunction(sum, UInt64),
    bytes SimpleAggregateFunction(sum, UInt64),
    packets_est SimpleAggregateFunction(sum, UInt64),
    bytes_est SimpleAggregateFunction(sum, UInt64),
    placed_flows SimpleAggregateFunction(sum, UInt64),
    unlocated_flows SimpleAggregateFunction(sum, UInt64),
    unhomed_flows SimpleAggregateFunction(sum, UInt64),
    voip_flows SimpleAggregateFunction(sum, UInt64),
    voip_bytes_est SimpleAggregateFunction(sum, UInt64)
)
ENGINE = {{replicated}}AggregatingMergeTree
PARTITION BY toYear(day)
ORDER BY (exporter, observation_domain_id, day)
{{ttl:day:traffic_1d_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed exporter_traffic_1d cityHash64(exporter)

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.exporter_traffic_1d_mv{{local}} {{on_cluster}}
TO {{db}}.exporter_traffic_1d{{local}}
AS SELECT
    toDate(window_start) AS day,
    exporter,
    observation_domain_id,
    toUInt64(sum(window_s)) AS seconds,
    sum(flows) AS flows,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    sum(packets_est) AS packets_est,
    sum(bytes_est) AS bytes_est,
    sum(placed_flows) AS placed_flows,
    sum(unlocated_flows) AS unlocated_flows,
    sum(unhomed_flows) AS unhomed_flows,
    sum(voip_flows) AS voip_flows,
    sum(voip_bytes_est) AS voip_bytes_est
FROM {{db}}.exporter_traffic_1m{{local}}
GROUP BY day, exporter, observation_domain_id;
