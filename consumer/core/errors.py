"""The worker's errors, one small tree.

::

    ValueError
     └── ConfigError            a setting is invalid (producers.durations; re-exported here)
    WorkerError                 base of everything below
     ├── SourceUnavailable      Redis cannot be reached (connection refused, timeout, loading)
     ├── GroupMissing           the consumer group or stream vanished (Redis came back empty)
     ├── LeaseLost              this worker no longer owns a shard (another took it over)
     └── Fenced                 a checkpoint was refused: the caller's fencing token is stale

Sink errors live in ``consumer.sinks`` (``SinkUnavailable`` and its base).
"""

from __future__ import annotations

from producers.durations import ConfigError

__all__ = ["ConfigError", "Fenced", "GroupMissing", "LeaseLost", "SourceUnavailable", "WorkerError"]


class WorkerError(Exception):
    """Base of the worker's own errors."""


class SourceUnavailable(WorkerError):
    """Redis could not be reached; the worker reconnects by itself."""


class GroupMissing(WorkerError):
    """The consumer group (or the whole stream) is gone, e.g. Redis restarted without its data."""

    def __init__(self, shard: int, message: str) -> None:
        super().__init__(message)
        self.shard = shard


class LeaseLost(WorkerError):
    """The shard's lease is held by someone else now: stop touching the shard."""

    def __init__(self, shard: int, message: str = "") -> None:
        super().__init__(message or f"lease on shard {shard} lost")
        self.shard = shard


class Fenced(LeaseLost):
    """A checkpoint was refused because the caller's fencing token no longer holds the lease."""
