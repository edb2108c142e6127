"""The collectors' codec: export packets (NetFlow v5/v9, IPFIX) to flow columns and back.

Pure code, no sockets, no clock, no logging: bytes in, columns out
(:mod:`~collectors.codec.decoder`), and columns in, bytes out
(:mod:`~collectors.codec.encoder`). The runtime in :mod:`voipflow.collectors` owns the
sockets, Kafka and metrics and calls this API. Modules, lowest first::

    errors     the DecodeError tree (one reason per class)
    ies        the information-element table
    templates  templates and the per-exporter template cache, DomainKey
    frame      datagrams of one call in one buffer, record gathers
    sequence   sequence-number tracking (loss, reordering, restarts)
    packets    headers, sets, template records (per packet)
    plan       a template compiled into a vectorised record plan
    assemble   decoded records of one call into one FlowBatch
    call       the state of one decode call (DecodeCall, ExporterStats)
    bulk       the decoder's whole-call numpy path
    decoder    Decoder: the API the runtime calls
    encoder    flow columns into export packets (simulator, tests)
"""
