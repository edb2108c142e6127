"""Enforcement: operator policy becomes rules on Kafka, and enforcement points apply them."""
