-- All traffic per exporter and observation domain per window, from the
-- traffic.v1 topic: coverage for operators (how much each exporter sent, how
-- much of it was placed in a city, how much was VoIP). Windows are of
-- reception time (the collector's clock), like exporter_health, so the two
-- tables line up by minute; the usage tables use flow end time instead.
--
-- flows = placed_flows + unlocated_flows + unhomed_flows. packets and bytes
-- are as exported (both directions of biflow records), the *_est columns are
-- scaled by each record's sampling rate. A window re-published after a worker
-- crash is dropped by the sink, which keeps the first copy per
-- (window_start, exporter, observation_domain_id); ReplacingMergeTree on that
-- key is the last guard.
CREATE TABLE IF NOT EXISTS {{db}}.exporter_traffic_1m{{local}} {{on_cluster}}
(
    window_start DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    window_s UInt32 CODEC(T64, ZSTD(1)),
    exporter IPv6,
    observation_domain_id UInt32,
    flows UInt64 CODEC(T64, ZSTD(1)),
    packets UInt64 CODEC(T64, ZSTD(1)),
    bytes UInt64 CODEC(T64, ZSTD(1)),
    packets_est UInt64 CODEC(T64, ZSTD(1)),
    bytes_est UInt64 CODEC(T64, ZSTD(1)),
    placed_flows UInt64 CODEC(T64, ZSTD(1)),
    unlocated_flows UInt64 CODEC(T64, ZSTD(1)),
    unhomed_flows UInt64 CODEC(T64, ZSTD(1)),
    voip_flows UInt64 CODEC(T64, ZSTD(1)),
    voip_bytes_est UInt64 CODEC(T64, ZSTD(1)),
    produced DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    inserted_at DateTime('UTC') DEFAULT now() CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = {{replicated}}ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (exporter, observation_domain_id, window_start)
{{ttl:window_start:traffic_1m_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed exporter_traffic_1m cityHash64(exporter)
