"""Operator tools over the stores: Redis streams and groups (``stream_admin``) and the InfluxDB
bucket (``influx_admin``).

May import: ``consumer.aggregation``, ``consumer.sinks``, ``consumer.core``. Never dead letters,
the data path, the doctor or the CLI.
"""
