"""The aggregation rules: the catalogue of measurements, validation, pseudonymisation (privacy),
the tumbling windows and their state (sketches, the per-series records and the windows' part of an
incremental checkpoint, ``window_log``), and the point events and raw points that bypass windows.

May import: ``consumer.sinks`` (only ``consumer.sinks.line_protocol``, for the wire rules of a
point) and ``consumer.core``. Never the data path, dead letters, operator tools or the CLI.
"""
