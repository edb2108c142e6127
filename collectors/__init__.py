"""NetFlow v5/v9 and IPFIX collectors: receive, decode, batch, publish.

Layers, each with one small interface (see the README's architecture part):
receive (UDP sockets only) -> decode (bytes to columns, pure) -> batch
(columns to flow batches, ``schemas.flowbatch``) -> publish (Kafka).
"""
