-- Exporter health from exporter-health.v1 (every 10 s per exporter and
-- observation domain, counters are deltas since the previous report) and the
-- pipeline's own statistics (rows inserted, bad messages, lag) per component.
CREATE TABLE IF NOT EXISTS {{db}}.exporter_health{{local}} {{on_cluster}}
(
    ts DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector LowCardinality(String),
    exporter IPv6,
    observation_domain_id UInt32,
    netflow_version UInt8,
    packets UInt64 CODEC(T64, ZSTD(1)),
    records UInt64 CODEC(T64, ZSTD(1)),
    bytes UInt64 CODEC(T64, ZSTD(1)),
    decode_errors UInt64 CODEC(T64, ZSTD(1)),
    templates UInt32 CODEC(T64, ZSTD(1)),
    records_held UInt64 CODEC(T64, ZSTD(1)),
    sequence_lost UInt64 CODEC(T64, ZSTD(1)),
    exporter_restarts UInt32 CODEC(T64, ZSTD(1)),
    sampling_rate UInt32 CODEC(T64, ZSTD(1)),
    kernel_drops UInt64 CODEC(T64, ZSTD(1))
)
ENGINE = {{replicated}}MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (exporter, observation_domain_id, ts)
{{ttl:toDateTime(ts):health_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed exporter_health cityHash64(exporter)

CREATE TABLE IF NOT EXISTS {{db}}.pipeline_stats{{local}} {{on_cluster}}
(
    ts DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    component LowCardinality(String),
    instance LowCardinality(String),
    metric LowCardinality(String),
    labels String,
    value Float64 CODEC(ZSTD(1))
)
ENGINE = {{replicated}}MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (component, metric, ts)
{{ttl:ts:health_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed pipeline_stats rand()
