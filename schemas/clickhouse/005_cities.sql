-- City coordinates for maps: one row per city of the operator's prefix table
-- (CSV prefix,city,region,country,lat,lon), loaded by `voipflow dashboards
-- cities --file PATH`. The usage tables carry only the city's name, so the
-- Grafana geomap joins this small table by name; a reload inserts newer rows
-- and ReplacingMergeTree keeps the latest per city (queries read it FINAL).
CREATE TABLE IF NOT EXISTS {{db}}.cities{{local}} {{on_cluster}}
(
    city String,
    region LowCardinality(String),
    country LowCardinality(String),
    lat Float64,
    lon Float64,
    updated DateTime64(3, 'UTC')
)
ENGINE = {{replicated}}ReplacingMergeTree(updated)
ORDER BY city
SETTINGS {{dedup_window}};

-- @distributed cities cityHash64(city)
