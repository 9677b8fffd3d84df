"""The worker reports on itself: measurement ``telemetry_pipeline``, one point per shard per window.

Every failure mode and every unit of work is a named counter here (events in, points out, dead
letters by reason, late rewrites, overflow, duplicates, write errors, lost entries), plus gauges
(lag, open windows) and the write latency. The worker writes the interval's values through the
same sink as the data, tagged ``worker`` and ``shard``, at the start of each window; the totals
feed the exit summary line and, when enabled, Prometheus ``/metrics`` (:mod:`consumer.core.metrics`).

Fields of ``telemetry_pipeline`` (ints unless noted; all present in every point so types and the
field set never change): ``events_in``, ``points_out``, ``dead_letters``,
``dead_letters_<reason>`` for every reason of :data:`consumer.core.model.DEAD_LETTER_REASONS`,
``late_rewrites``, ``overflow``, ``duplicates``, ``write_errors``, ``lost_entries``,
``lag_entries``, ``open_windows``, ``write_latency_ms`` (float, mean of the interval's writes).

Usage::

    stats = SelfTelemetry(worker="w1", window_s=10)
    stats.count(0, "events_in", 120)
    stats.dead_letter(0, "too_late")
    points = stats.collect(time.time())      # Points to write; interval counters restart
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Final

from consumer.core.model import DEAD_LETTER_REASONS, FieldValue, Point

MEASUREMENT: Final = "telemetry_pipeline"
COUNTERS: Final = ("events_in", "points_out", "dead_letters", "late_rewrites", "overflow", "duplicates",
                   "write_errors", "lost_entries", "redis_resets")
GAUGES: Final = ("lag_entries", "open_windows")

Listener = Callable[[str, int, str, float], None]
"""``(kind, shard, name, value)`` with kind ``count``, ``gauge`` or ``latency``."""


class SelfTelemetry:
    """Interval counters per shard, running totals, and the ``telemetry_pipeline`` points."""

    def __init__(self, *, worker: str, window_s: float, listener: Listener | None = None) -> None:
        self.worker = worker
        self.window_s = window_s
        self.listener = listener
        self.totals: Counter[str] = Counter()
        self._interval: dict[int, Counter[str]] = {}
        self._gauges: dict[int, dict[str, float]] = {}
        self._latency: dict[int, list[float]] = {}
        self._next_emit_s: float | None = None

    def count(self, shard: int, name: str, value: int = 1) -> None:
        """Add to a counter of ``shard`` (and the totals)."""
        if not value:
            return
        self._interval.setdefault(shard, Counter())[name] += value
        self.totals[name] += value
        if self.listener:
            self.listener("count", shard, name, value)

    def dead_letter(self, shard: int, reason: str, value: int = 1) -> None:
        """One more dead letter with ``reason``."""
        self.count(shard, "dead_letters", value)
        self.count(shard, f"dead_letters_{reason}", value)

    def gauge(self, shard: int, name: str, value: float) -> None:
        """Set a gauge of ``shard``."""
        self._gauges.setdefault(shard, {})[name] = value
        if self.listener:
            self.listener("gauge", shard, name, value)

    def latency(self, shard: int, write_ms: float) -> None:
        """Record one sink write's duration."""
        self._latency.setdefault(shard, []).append(write_ms)
        if self.listener:
            self.listener("latency", shard, "write_latency_ms", write_ms)

    def due(self, now_s: float) -> bool:
        """Whether a new window started since the last :meth:`collect`."""
        if self._next_emit_s is None:
            self._next_emit_s = self._window_end(now_s)
            return False
        return now_s >= self._next_emit_s

    def _window_end(self, now_s: float) -> float:
        return (math.floor(now_s / self.window_s) + 1) * self.window_s

    def collect(self, now_s: float, shards: list[int] | None = None) -> list[Point]:
        """The interval's points (one per shard seen or listed); interval counters restart.

        When due, the interval that just ended is stamped with the previous window's start. Before
        that (a forced report: the end of a ``--drain`` run) it is stamped with the running window,
        so it does not overwrite the point already written for the previous one.
        """
        window_start_s = math.floor(now_s / self.window_s) * self.window_s
        due = self._next_emit_s is not None and now_s >= self._next_emit_s
        start_s = window_start_s - self.window_s if due else window_start_s
        time_ns = round(start_s * 1e9)
        points = []
        for shard in sorted(set(self._interval) | set(self._gauges) | set(shards or ())):
            counters = self._interval.get(shard, Counter())
            fields: dict[str, FieldValue] = {name: int(counters[name]) for name in COUNTERS}
            for reason in DEAD_LETTER_REASONS:
                fields[f"dead_letters_{reason}"] = int(counters[f"dead_letters_{reason}"])
            gauges = self._gauges.get(shard, {})
            for name in GAUGES:
                fields[name] = int(gauges.get(name, 0))
            samples = self._latency.get(shard) or []
            fields["write_latency_ms"] = float(sum(samples) / len(samples)) if samples else 0.0
            tags = (("shard", str(shard)), ("worker", self.worker))
            points.append(Point(MEASUREMENT, tags, fields, time_ns))
        self._interval.clear()
        self._latency.clear()
        self._next_emit_s = self._window_end(now_s)
        return points

    def summary(self) -> str:
        """The totals as one log line."""
        parts = [f"{name}={self.totals[name]}" for name in COUNTERS]
        reasons = [f"{name[len('dead_letters_'):]}:{value}" for name, value in sorted(self.totals.items())
                   if name.startswith("dead_letters_") and value]
        if reasons:
            parts.append("dead_letter_reasons=" + ",".join(reasons))
        return " ".join(parts)
