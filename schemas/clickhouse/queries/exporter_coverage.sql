-- Exporter coverage over the last hour: what each exporter sent (sampling
-- corrected; aliases differ from the column names, which ClickHouse would
-- resolve to the alias inside the other sums), which share of its flows was placed in a city, had a side at
-- home but no city, or no side at home, and how much of it was VoIP.
SELECT
    toString(exporter) AS exporter,
    sum(flows) AS flow_records,
    sum(bytes_est) AS bytes_sent,
    round(sum(placed_flows) / greatest(sum(flows), 1), 4) AS placed_share,
    round(sum(unlocated_flows) / greatest(sum(flows), 1), 4) AS unlocated_share,
    round(sum(unhomed_flows) / greatest(sum(flows), 1), 4) AS unhomed_share,
    sum(voip_flows) AS voip_flows,
    round(sum(voip_bytes_est) / greatest(sum(bytes_est), 1), 4) AS voip_byte_share,
    max(window_start) AS last_window
FROM exporter_traffic_1m
WHERE window_start >= now() - INTERVAL 1 HOUR
GROUP BY exporter
ORDER BY bytes_sent DESC, exporter
