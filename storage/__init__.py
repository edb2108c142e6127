"""Storage: the ClickHouse backends and the Kafka-to-ClickHouse sink.

* :mod:`voipflow.storage.clickhouse` — one interface over chdb and a server, its
  error tree and the schema migrations (``schemas/clickhouse``);
* :mod:`voipflow.storage.sink` — the sink that inserts the contracts' topics
  (voip-flows.v2, voip-usage.v1, traffic.v1, exporter-health.v1) into
  ClickHouse, exactly once;
* :mod:`voipflow.storage.config` — their settings (``[clickhouse]``, ``[sink]``).

``storage`` depends on :mod:`voipflow.schemas` only; neither :mod:`voipflow.streams` nor
:mod:`voipflow.collectors` imports it, and it imports neither of them (nor
:mod:`voipflow`, which wires everything together).
"""
