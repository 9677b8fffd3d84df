"""Checkpoint cost per number of open series, full vs incremental (:mod:`bench.checkpoint_cost`)."""

from __future__ import annotations

from bench.checkpoint_cost import markdown, measure_checkpoint_cost


def run() -> str:
    rows = measure_checkpoint_cost([1_000, 10_000, 100_000])
    return ("## Checkpoint cost as series grow\n\n"
            "One shard, `attachment_monitoring` series (one per user) in the current window; *full*: a "
            "checkpoint writing everything (a new owner's first), *incremental*: the next one after 1% of "
            "the series got an event, *one blob*: what every checkpoint sent before they were incremental. "
            "Bytes of state sent to Redis; CPU ms to encode them.\n\n" + markdown(rows) + "\n")
