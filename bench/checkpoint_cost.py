"""What one checkpoint of a shard costs as its open series grow: bytes sent and CPU ms.

In process, no Redis: the bytes are those of the :class:`~consumer.core.checkpoint.StateWrite` the
worker would send (field names and values), the ms the CPU time to build it (encoding). For each
size: ``full`` is a checkpoint that writes everything (a new owner's first), ``incremental``
the next one after 1% of the series got an event (what the worker sends about every second),
``snapshot`` the single blob every checkpoint sent before checkpoints were incremental.

The workload is the seed's main measurement, ``attachment_monitoring`` (tags ``user_id``,
``bot_name``, ``risk_level``; three mean fields, a "last" gauge, a bool count), one series per
user, all in the current window.

Usage::

    from bench.checkpoint_cost import measure_checkpoint_cost
    for row in measure_checkpoint_cost([1_000, 10_000, 100_000]):
        print(row)     # {"series": 1000, "full_bytes": ..., "incremental_ms": ..., ...}
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

from consumer.aggregation.window import ShardWindows
from producers.wire import KIND_EMIT

BASE_S: Final = 1_700_000_000.0
CONFIG: Final[dict[str, Any]] = {"window_s": 10.0, "grace_s": 2.0, "allowed_lateness_s": 300.0,
                                 "max_future_s": 60.0, "max_series": 1_000_000}
CHANGED_SHARE: Final = 0.01
T = TypeVar("T")


def main_event(user: int, ts: float, rng: random.Random) -> list[Any]:
    """One wire event of ``attachment_monitoring`` for user number ``user``."""
    return [KIND_EMIT, "attachment_monitoring", ts,
            {"user_id": f"user-{user:08d}", "bot_name": rng.choice(("elena", "marcus", "jake")),
             "risk_level": rng.choice(("LOW", "MEDIUM", "HIGH"))},
            {"emotional_intensity": rng.random(), "interaction_frequency": rng.random() * 40,
             "dependency_count": rng.randint(0, 14), "consecutive_days": rng.randint(0, 30),
             "intervention_provided": rng.random() < 0.2}]


def record_users(windows: ShardWindows, users: Iterable[int], *, ts: float, entry_ms: int,
                 rng: random.Random) -> None:
    """One event per user, at ``ts`` (one stream entry of up to 500 events at a time)."""
    batch: list[list[Any]] = []
    for user in users:
        batch.append(main_event(user, ts, rng))
        if len(batch) == 500:
            windows.record_batch(batch, entry_ms, 0, ts + 1)
            entry_ms, batch = entry_ms + 1, []
    if batch:
        windows.record_batch(batch, entry_ms, 0, ts + 1)


def populated(series: int, *, seed: int = 1) -> ShardWindows:
    """A shard holding ``series`` open series-windows of the main measurement, one window."""
    windows = ShardWindows(**CONFIG)
    record_users(windows, range(series), ts=BASE_S + 1.0, entry_ms=int(BASE_S * 1000),
                 rng=random.Random(seed))
    return windows


def _timed(build: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    started = time.process_time()
    result = build(*args, **kwargs)
    return result, (time.process_time() - started) * 1000


def measure_checkpoint_cost(series_counts: Sequence[int]) -> list[dict[str, Any]]:
    """Bytes and CPU ms of a full and an incremental checkpoint per number of open series."""
    rows = []
    for count in series_counts:
        rng = random.Random(count)
        windows = populated(count)
        full, full_ms = _timed(windows.checkpoint, full=True)
        windows.checkpoint_saved(full)
        changed = max(1, int(count * CHANGED_SHARE))
        record_users(windows, rng.sample(range(count), changed), ts=BASE_S + 2.0,
                     entry_ms=int(BASE_S * 1000) + 10_000, rng=rng)
        step, step_ms = _timed(windows.checkpoint, full=False)
        blob, snapshot_ms = _timed(windows.snapshot)
        rows.append({"series": count, "changed": changed,
                     "full_bytes": full.size, "full_ms": full_ms, "incremental_bytes": step.size,
                     "incremental_ms": step_ms, "snapshot_bytes": len(blob), "snapshot_ms": snapshot_ms})
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| open series | changed | full: KiB, ms | incremental: KiB, ms | one blob (before): KiB, ms |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['series']:,} | {r['changed']:,} "
                     f"| {r['full_bytes'] / 1024:,.1f}, {r['full_ms']:.0f} "
                     f"| {r['incremental_bytes'] / 1024:,.1f}, {r['incremental_ms']:.1f} "
                     f"| {r['snapshot_bytes'] / 1024:,.1f}, {r['snapshot_ms']:.0f} |")
    return "\n".join(lines)
