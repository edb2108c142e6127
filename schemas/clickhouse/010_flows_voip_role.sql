-- voip-flows.v2's second verdict: the flow's part in the call (signalling,
-- control, media, relay, ice; schemas/voipflows.py ROLES). `app` keeps its
-- meaning: the calling app the flow belongs to, whatever its role. Rows
-- written before this column existed (voip-flows.v1) read '' (unknown): no
-- role is guessed for them.
ALTER TABLE {{db}}.flows_voip{{local}} {{on_cluster}}
    ADD COLUMN IF NOT EXISTS role LowCardinality(String) DEFAULT '' AFTER app;

-- On a cluster the Distributed table carries the column too (without a
-- cluster this repeats the statement above, which changes nothing).
ALTER TABLE {{db}}.flows_voip {{on_cluster}}
    ADD COLUMN IF NOT EXISTS role LowCardinality(String) DEFAULT '' AFTER app;
