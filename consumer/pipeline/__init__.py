"""The data path the worker runs: the stream source, dedupe, shard ownership and leases, upkeep,
the worker loop, the write-behind writer thread, and the HTTP listener that puts points on the
same streams.

Public name: :class:`consumer.pipeline.worker.Worker` (also importable as
``consumer.pipeline.Worker``).

May import: ``consumer.dlq``, ``consumer.admin``, ``consumer.dashboards``, ``consumer.aggregation``,
``consumer.sinks``, ``consumer.core``. Never the doctor, the CLI or the demo.
"""

from consumer.pipeline.worker import Worker

__all__ = ["Worker"]
