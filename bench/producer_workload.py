"""The producer benchmarks' event and timing helpers (shared by ``bench_producer`` and its sections)."""

from __future__ import annotations

import array
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MEASUREMENT = "attachment_monitoring"
TAGS = {"user_id": "u42", "bot_name": "elena", "risk_level": "HIGH"}
FIELDS = {"emotional_intensity": 0.82, "interaction_frequency": 14.0, "dependency_count": 3,
          "consecutive_days": 6, "intervention_provided": True}
_pc = time.perf_counter_ns


def per_call(record: Callable[[], Any], calls: int) -> list[int]:
    """Sorted ns of single calls, each timed alone.

    The timings wait in an array, not a list: the collector walks a list's items in each
    collection of its generation, and a list of 200,000 would add a millisecond to the young
    collections that run inside the timed calls.
    """
    timings = array.array("q", bytes(8 * calls))
    for i in range(calls):
        started = _pc()
        record()
        timings[i] = _pc() - started
    return sorted(timings)


def pct(sorted_ns: list[int], fraction: float) -> int:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * fraction))]


def fresh_tags(i: int) -> dict[str, str]:
    """A fresh tag dict per event, as bot code builds it (5,000 users)."""
    return {"user_id": f"u{i % 5000}", "bot_name": "elena", "risk_level": "HIGH"}


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's garbage collector off for the block (attribution only: a library cannot do that
    to its host)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
