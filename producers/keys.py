"""The whole Redis schema in one place.

Every key the pipeline touches is named here, so the layout is visible at a glance and
producer and worker can never disagree about it.

Shard keys carry a Redis Cluster hash tag (the literal braces in ``telemetry:{3}``): a shard's
stream, its checkpoint, its lease and its fencing counter all hash to the same slot, so one
``MULTI``/``EXEC`` or Lua script can update them atomically on a cluster too.

    PREFIX:{i}              stream of batches for shard i (producer XADD, worker XREADGROUP)
    PREFIX:{i}:state        worker checkpoint for shard i (window state, watermark, dedupe)
    PREFIX:{i}:lease        current owner of shard i (value "worker_id:token", PX expiry)
    PREFIX:{i}:fence        monotonically increasing fencing token for shard i
    PREFIX:dlq              dead-letter stream (one entry per rejected event or point)
    PREFIX:workers          hash of live workers -> heartbeat (for shard assignment)
    PREFIX:stats            hash of loss counters reported by producers (cap trims)
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

DEFAULT_PREFIX = "telemetry"
DEFAULT_SHARDS = 4


def stream_key(prefix: str, shard: int) -> str:
    """Stream key for ``shard``: ``telemetry:{3}``."""
    return f"{prefix}:{{{shard}}}"


def state_key(prefix: str, shard: int) -> str:
    """Checkpoint key of ``shard`` (same hash slot as its stream)."""
    return f"{prefix}:{{{shard}}}:state"


def lease_key(prefix: str, shard: int) -> str:
    """Ownership lease of ``shard`` (same hash slot as its stream)."""
    return f"{prefix}:{{{shard}}}:lease"


def fence_key(prefix: str, shard: int) -> str:
    """Fencing-token counter of ``shard`` (same hash slot as its stream)."""
    return f"{prefix}:{{{shard}}}:fence"


def dlq_key(prefix: str) -> str:
    """The dead-letter stream."""
    return f"{prefix}:dlq"


def workers_key(prefix: str) -> str:
    """Hash of live workers and their heartbeats."""
    return f"{prefix}:workers"


def stats_key(prefix: str) -> str:
    """Hash of pipeline-wide loss counters (for example entries lost to the hard length cap)."""
    return f"{prefix}:stats"


def shard_of_series(measurement: str, tags: Mapping[str, str] | None, shards: int) -> int:
    """Stable shard of a series (measurement + full tag set).

    Uses CRC-32 of a canonical encoding, never Python's randomised ``hash()``, so every process
    on every host sends a series to the same shard; that keeps one series' events in one stream,
    in order, aggregated by one owner.
    """
    if shards <= 1:
        return 0
    if not tags:
        return zlib.crc32(measurement.encode("utf-8", "surrogatepass")) % shards
    # One string, one encode, one CRC: the same bytes as hashing each part in turn (UTF-8 encodes
    # code point by code point, and CRC-32 chains), at a third of the cost for 3 tags.
    parts = [measurement]
    for key in sorted(tags):
        parts.append(f"\x00{key!s}\x01{tags[key]!s}")
    return zlib.crc32("".join(parts).encode("utf-8", "surrogatepass")) % shards
