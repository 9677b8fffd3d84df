"""Sinks: where aggregated points go (InfluxDB v2, InfluxDB v1, in-memory, a file).

``make_sink(config)`` picks one from the configuration; every sink follows the :class:`Sink`
protocol and raises the errors drawn in :mod:`consumer.sinks.base`. The InfluxDB sinks are
imported lazily, so the in-memory and file sinks work without influxdb-client loaded.
"""

from consumer.sinks.base import (
    Sink,
    SinkAuthError,
    SinkError,
    SinkNotFound,
    SinkRejected,
    SinkUnavailable,
    WriteResult,
)
from consumer.sinks.factory import SinkConfig, make_sink
from consumer.sinks.file import FileSink
from consumer.sinks.memory import MemorySink
from consumer.sinks.retry import Backoff

__all__ = [
    "Backoff",
    "FileSink",
    "MemorySink",
    "Sink",
    "SinkAuthError",
    "SinkConfig",
    "SinkError",
    "SinkNotFound",
    "SinkRejected",
    "SinkUnavailable",
    "WriteResult",
    "make_sink",
]
