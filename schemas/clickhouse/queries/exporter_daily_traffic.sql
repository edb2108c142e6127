-- Daily traffic per exporter over the last 30 days, from the daily rollup
-- (kept longer than the per-minute rows): bytes sent (sampling corrected),
-- flow records, the share of them placed in a city, the VoIP byte share, and
-- the hours of windows the exporter's traffic covered (a day with fewer than
-- 24 hours had gaps: an exporter or worker that was down).
SELECT
    day,
    toString(exporter) AS exporter,
    sum(bytes_est) AS bytes_sent,
    sum(flows) AS flow_records,
    round(sum(placed_flows) / greatest(sum(flows), 1), 4) AS placed_share,
    round(sum(voip_bytes_est) / greatest(sum(bytes_est), 1), 4) AS voip_byte_share,
    round(sum(seconds) / 3600, 2) AS hours_covered
FROM exporter_traffic_1d
WHERE day >= today() - 30
GROUP BY day, exporter
ORDER BY day DESC, bytes_sent DESC, exporter
