"""The Faust stream-processing application (the worker).

Agents are thin loops; enrichment, classification (port tables in
:mod:`voipflow.streams.ports`) and aggregation are pure functions over flow batches in
plain modules, tested without Kafka. The sink that stores the worker's output
in ClickHouse is :mod:`voipflow.storage.sink`; ``streams`` never imports ``storage``.
"""
