"""Dead letters: writing them (``deadletter``: the record, its reasons, the stream it goes to)
and operating on them (``ops``: list, show, replay, purge behind ``telemetry dlq``).

May import: ``consumer.admin``, ``consumer.dashboards``, ``consumer.aggregation``,
``consumer.sinks``, ``consumer.core``. Never the data path, the doctor or the CLI.
"""
