"""Storage: the ClickHouse backends and the Kafka-to-ClickHouse sink.

* :mod:`storage.clickhouse` — one interface over chdb and a server, its
  error tree and the schema migrations (``schemas/clickhouse``);
* :mod:`storage.sink` — the sink that inserts the contracts' topics
  (voip-flows.v1, voip-usage.v1, traffic.v1, exporter-health.v1) into
  ClickHouse, exactly once;
* :mod:`storage.config` — their settings (``[clickhouse]``, ``[sink]``).

``storage`` depends on :mod:`schemas` only; neither :mod:`streams` nor
:mod:`collectors` imports it, and it imports neither of them (nor
:mod:`voipflow`, which wires everything together).
"""
