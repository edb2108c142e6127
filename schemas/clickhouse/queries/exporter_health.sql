-- Exporter health over the last hour: records, loss (sequence gaps) as a share
-- of what was sent, decode errors, templates, sampling and restarts.
SELECT
    toString(exporter) AS exporter,
    observation_domain_id,
    sum(records) AS received,
    sum(sequence_lost) AS lost,
    round(sum(sequence_lost) / greatest(sum(records) + sum(sequence_lost), 1), 4) AS loss_ratio,
    sum(decode_errors) AS decode_errors,
    max(templates) AS templates,
    max(sampling_rate) AS sampling_rate,
    sum(exporter_restarts) AS restarts,
    max(ts) AS last_report
FROM exporter_health
WHERE ts >= now() - INTERVAL 1 HOUR
GROUP BY exporter, observation_domain_id
ORDER BY loss_ratio DESC, exporter
