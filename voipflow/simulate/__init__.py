"""The exporter simulator behind ``voipflow simulate`` (and ``voipflow demo``).

It plays the routers/BNGs of an operator: cities with subscriber prefixes,
one or more exporters per city, VoIP calls and background traffic, exported
as NetFlow v5/v9 or IPFIX over UDP with :mod:`voipflow.collectors.codec.encoder`, and it
writes down what it sent (the ground truth). ``docs/simulator.md`` describes
the model and the truth file.

Modules: ``config`` (the run's settings), ``addresses`` (provider ranges,
public peers, the city table), ``population`` (subscribers, exporters,
peers), ``apps`` (what each VoIP app and the background traffic look like),
``legs`` (long flows exported in slices), ``traffic`` (the per-step model),
``truth`` (ground truth per city x app), ``exporters`` (encoders and sockets),
``runner`` (one run, start/run/stop).

Errors::

    SimulatorDataError (ValueError)   a city table or provider file that cannot
                                      be used, or subscribers that do not fit
    collectors.codec.encoder.EncodeError    records a format cannot carry (a bug here)
    OSError                           sockets or files (from start())
"""
