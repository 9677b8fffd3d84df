"""The base every other package stands on: the event and point model, errors, the worker's
configuration, the once-per-reason log, the pipeline's own telemetry counters (and their
Prometheus mirror) and the checkpoint store (the shard's state hash in Redis).

May import: nothing in ``consumer`` outside ``consumer.core``.
"""
