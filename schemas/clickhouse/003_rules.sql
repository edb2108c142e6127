-- Rules published on rules.v1 and the events of their state machine (created,
-- published, applied, failed, removed, expired) with the hit counters that
-- enforcement points report on rules-feedback.v1. Prepared for the
-- enforcement work; the policy and ledger components write them.
CREATE TABLE IF NOT EXISTS {{db}}.rules{{local}} {{on_cluster}}
(
    rule_id String,
    version UInt32,
    created DateTime64(3, 'UTC'),
    action LowCardinality(String),
    city LowCardinality(String),
    app LowCardinality(String),
    match String,
    rate_limit_kbps UInt32,
    expires DateTime64(3, 'UTC'),
    reason String,
    author LowCardinality(String),
    body String
)
ENGINE = {{replicated}}ReplacingMergeTree(version)
ORDER BY rule_id
SETTINGS {{dedup_window}};

-- @distributed rules cityHash64(rule_id)

CREATE TABLE IF NOT EXISTS {{db}}.rule_events{{local}} {{on_cluster}}
(
    ts DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    rule_id String,
    rule_version UInt32,
    event LowCardinality(String),
    state LowCardinality(String),
    action LowCardinality(String),
    feedback LowCardinality(String),
    enforcement_point LowCardinality(String),
    hits UInt64 CODEC(T64, ZSTD(1)),
    hit_packets UInt64 CODEC(T64, ZSTD(1)),
    hit_bytes UInt64 CODEC(T64, ZSTD(1)),
    detail String CODEC(ZSTD(1))
)
ENGINE = {{replicated}}MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (rule_id, ts)
{{ttl:toDateTime(ts):rule_events_ttl_days}}
SETTINGS {{dedup_window}};

-- @distributed rule_events cityHash64(rule_id)
