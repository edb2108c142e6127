"""The Faust stream-processing application and the ClickHouse sinks.

Agents are thin loops; enrichment, classification and aggregation are pure
functions over flow batches in plain modules, tested without Kafka.
"""
