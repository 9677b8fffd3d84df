"""Helpers shared by the producer tests: read back what producers wrote, deduplicated as the worker does."""

from __future__ import annotations

from collections import Counter
from typing import Any

from producers.keys import stream_key
from producers.wire import decode_entry


def read_batches(client: Any, *, prefix: str = "telemetry", shards: int = 4) -> list[tuple[int, Any]]:
    """Every stream entry of every shard, decoded, in stream order: ``[(shard, Batch), ...]``."""
    batches = []
    for shard in range(shards):
        for _entry_id, fields in client.xrange(stream_key(prefix, shard)):
            batches.append((shard, decode_entry(fields)))
    return batches


def read_events(client: Any, *, prefix: str = "telemetry", shards: int = 4) -> list[list[Any]]:
    """Events of all entries, applying each (producer, shard, sequence) once like the worker."""
    seen: set[tuple[str, int, int]] = set()
    events: list[list[Any]] = []
    for shard, batch in read_batches(client, prefix=prefix, shards=shards):
        key = (batch.producer_id, shard, batch.sequence)
        if key in seen:
            continue
        seen.add(key)
        events.extend(batch.events)
    return events


def duplicates(values: list[Any]) -> dict[Any, int]:
    """Values that occur more than once, with their counts (``{}`` when all are unique)."""
    return {value: n for value, n in Counter(values).items() if n > 1}
