"""Stream set-up shared by the checkpoint and lease tests: entries delivered to a consumer and pending."""

from __future__ import annotations

from typing import Any

from consumer.pipeline.source import StreamSource


def delivered_entries(client: Any, count: int = 1, *, prefix: str = "t", group: str = "g",
                      consumer: str = "w1") -> list[str]:
    """Create ``group`` on shard 0, add ``count`` entries and deliver them all to ``consumer``.

    The entries are then pending for ``consumer``: what a checkpoint acknowledges.
    """
    StreamSource(client, prefix=prefix, group=group, consumer=consumer).ensure_group(0)
    key = f"{prefix}:{{0}}"
    ids = [client.xadd(key, {"k": str(i)}).decode() for i in range(count)]
    client.xreadgroup(group, consumer, {key: ">"})
    return ids
