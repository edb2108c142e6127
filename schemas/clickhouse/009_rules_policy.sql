-- What the policy evaluator and the rule ledger write besides the columns of
-- 003: a rule's policy, mode (enforce or shadow) and target kind; an event's
-- policy, mode, city and app (so a refused rule, which has no row in
-- `rules`, still says where it would have applied) and its event_id, the
-- deterministic id of one decision (a replayed event has the same one).
ALTER TABLE {{db}}.rules{{local}} {{on_cluster}}
    ADD COLUMN IF NOT EXISTS policy LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS mode LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS target_kind LowCardinality(String) DEFAULT '';

ALTER TABLE {{db}}.rule_events{{local}} {{on_cluster}}
    ADD COLUMN IF NOT EXISTS event_id String DEFAULT '',
    ADD COLUMN IF NOT EXISTS policy LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS mode LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS city LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS app LowCardinality(String) DEFAULT '';

-- On a cluster the Distributed tables carry the columns too (without a
-- cluster these repeat the statements above, which changes nothing).
ALTER TABLE {{db}}.rules {{on_cluster}}
    ADD COLUMN IF NOT EXISTS policy LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS mode LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS target_kind LowCardinality(String) DEFAULT '';

ALTER TABLE {{db}}.rule_events {{on_cluster}}
    ADD COLUMN IF NOT EXISTS event_id String DEFAULT '',
    ADD COLUMN IF NOT EXISTS policy LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS mode LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS city LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS app LowCardinality(String) DEFAULT '';
