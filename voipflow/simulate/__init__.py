"""The exporter simulator behind ``voipflow simulate`` (and ``voipflow demo``).

It plays the routers/BNGs of an operator: cities with subscriber prefixes,
one or more exporters per city, VoIP calls and background traffic, exported
as NetFlow v5/v9 or IPFIX over UDP with :mod:`collectors.encoder`.
"""
