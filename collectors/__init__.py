"""NetFlow v5/v9 and IPFIX collectors: receive, decode, batch, publish.

Two layers. The codec, :mod:`voipflow.collectors.codec`, is pure (bytes to columns
and back: ``codec.decoder``, ``codec.encoder`` and what they build on) and
never imports the runtime. The runtime, the modules here, owns sockets,
clock, Kafka and metrics: receive (UDP sockets only, ``receiver``,
``admission``) -> decode (``codec.decoder``) -> batch (columns to flow
batches, ``batching``, ``schemas.flowbatch``) -> publish (``outputs``,
``publisher``: Kafka). ``service.Collector`` runs them in one process;
``docs/collector.md`` is the operator's view.

Errors raised at the boundaries (bad input is counted, never raised)::

    ReceiverError (OSError)        a listen address cannot be bound
    CollectorStartError            the collector cannot start (from the above)
    PublisherError                 no Kafka broker answers at start
    TemplateCacheError (OSError)   a template cache file is unreadable
    DecodeError (ValueError)       bad export data, caught and counted inside
                                   the decoder (tree in ``collectors.codec.errors``)
"""
