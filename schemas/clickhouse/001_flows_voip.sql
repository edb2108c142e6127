-- VoIP flow records from the voip-flows.v1 topic, one row per classified flow.
-- Addresses are IPv6 (IPv4 stored IPv4-mapped, ::ffff:a.b.c.d, as the contract
-- carries them); counters are as exported, multiply by sampling_rate (or use the
-- *_est aliases) for estimates. Partitioned by day so TTL drops whole days;
-- ordered by city and app because nearly every question filters on them.
CREATE TABLE IF NOT EXISTS {{db}}.flows_voip{{local}} {{on_cluster}}
(
    time_received DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    flow_start DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    flow_end DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    exporter_addr IPv6 CODEC(ZSTD(1)),
    observation_domain_id UInt32 CODEC(T64, ZSTD(1)),
    ip_version UInt8 CODEC(T64, ZSTD(1)),
    subscriber_addr IPv6 CODEC(ZSTD(1)),
    peer_addr IPv6 CODEC(ZSTD(1)),
    subscriber_port UInt16 CODEC(T64, ZSTD(1)),
    peer_port UInt16 CODEC(T64, ZSTD(1)),
    protocol UInt8 CODEC(T64, ZSTD(1)),
    direction UInt8 CODEC(T64, ZSTD(1)),
    packets UInt64 CODEC(T64, ZSTD(1)),
    bytes UInt64 CODEC(T64, ZSTD(1)),
    reverse_packets UInt64 CODEC(T64, ZSTD(1)),
    reverse_bytes UInt64 CODEC(T64, ZSTD(1)),
    sampling_rate UInt32 CODEC(T64, ZSTD(1)),
    city LowCardinality(String),
    region LowCardinality(String),
    country LowCardinality(String),
    peer_asn UInt32 CODEC(T64, ZSTD(1)),
    app LowCardinality(String),
    is_voip UInt8 CODEC(T64, ZSTD(1)),
    confidence Float32 CODEC(ZSTD(1)),
    evidence UInt32 CODEC(T64, ZSTD(1)),
    classifier_version LowCardinality(String),
    packets_est UInt64 ALIAS (packets + reverse_packets) * sampling_rate,
    bytes_est UInt64 ALIAS (bytes + reverse_bytes) * sampling_rate,
    duration_s Float64 ALIAS (toUnixTimestamp64Milli(flow_end) - toUnixTimestamp64Milli(flow_start)) / 1000
)
ENGINE = {{replicated}}MergeTree
PARTITION BY toDate(time_received)
ORDER BY (city, app, time_received, subscriber_addr)
{{ttl:toDateTime(time_received):flows_ttl_days}}
SETTINGS index_granularity = 8192, {{dedup_window}};

-- @distributed flows_voip cityHash64(subscriber_addr)
