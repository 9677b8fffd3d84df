"""The producer benchmark's frozen-Redis section: the worst single emit and memory under SIGSTOP."""

from __future__ import annotations

import array
import collections
import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

from bench.producer_workload import (
    FIELDS,
    MEASUREMENT,
    TAGS,
    collector_paused,
    fresh_tags,
    pct,
    per_call,
    rss_mib,
)
from producers import Telemetry
from producers._buffer import SPILL_EVENTS
from producers._encode import WIDTH
from tests.services import RedisServer

_pc = time.perf_counter_ns
FROZEN_RUNS = 5
FROZEN_CALLS = 200_000
BOUND_EVENTS = 100_000


def frozen_redis(redis: RedisServer) -> tuple[list[str], list[str], dict[str, float]]:
    """Worst single emit, and memory, while Redis is stopped with SIGSTOP; rows and figures.

    Each run starts a fresh producer and freezes Redis just before its calls, so that every run
    includes the flusher's last takes before it finds Redis silent.
    """
    ours, full_collections = _repeated(lambda: _frozen_calls(redis, contextlib.nullcontext))
    no_gc, _ = _repeated(lambda: _frozen_calls(redis, collector_paused))
    floor: collections.deque[Any] = collections.deque(maxlen=BOUND_EVENTS)
    append, now = floor.append, time.time
    base = per_call(lambda: append((0, MEASUREMENT, now(), TAGS, FIELDS)), 200_000)
    items_floor, _ = _repeated(lambda: (_bounded_list_run(), 0))
    memory, rss, emitted = [], [], []
    tel = _started(redis)
    redis.pause()
    try:
        for _ in range(5):
            for i in range(200_000):
                tel.emit(MEASUREMENT, FIELDS, fresh_tags(i))
            gc.collect()
            stats = tel.stats()
            rss.append(rss_mib())
            emitted.append(stats["emitted"])
            memory.append(f"| {stats['emitted']:,} | {rss[-1]:,.1f} | {stats['buffered']:,} | "
                          f"{stats['dropped']:,} |")
    finally:
        redis.resume()
    tel.close(30)
    collections_ran = f"{full_collections} full garbage collection{'' if full_collections == 1 else 's'}"
    rows = [_frozen_row(f"Telemetry.emit, {FROZEN_RUNS} runs of {FROZEN_CALLS:,} calls into the frozen "
                        f"Redis, a fresh producer each ({collections_ran} during them)", ours),
            _frozen_row("Telemetry.emit, the same with Python's garbage collector paused (attribution only)",
                        no_gc),
            _frozen_row(f"list extend of the same items, cut like the bound, {FROZEN_RUNS} runs (floor: the "
                        "buffer's own work, no flusher thread)", items_floor),
            _frozen_row("deque append (floor)", base),
            _blocked_xadd(redis)]
    figures = {"worst_ms": ours[-1] / 1e6, "worst_no_gc_ms": no_gc[-1] / 1e6, "full_gcs": full_collections,
               "worst_floor_ms": items_floor[-1] / 1e6,
               "rss_first": rss[1], "rss_last": rss[-1],   # [0]: the bound may still be filling
               "emitted_first": emitted[1], "emitted_last": emitted[-1]}
    return rows, memory, figures


def _bounded_list_run() -> list[int]:
    """Single extends of an event's items into a list, timed alone, kept as the buffer keeps it
    (moved to a chunk every SPILL_EVENTS, the oldest chunk dropped beyond the bound): what the
    machine and the allocator cost with no other thread."""
    items: list[Any] = []
    chunks: collections.deque[tuple[Any, ...]] = collections.deque()
    extend, now = items.extend, time.time

    def record() -> None:
        extend((0, MEASUREMENT, now(), TAGS, None, FIELDS, None))
        if len(items) >= SPILL_EVENTS * WIDTH:
            chunks.append(tuple(items))
            items.clear()
            if len(chunks) * SPILL_EVENTS > BOUND_EVENTS:
                chunks.popleft()

    return per_call(record, FROZEN_CALLS)


def _started(redis: RedisServer) -> Telemetry:
    """A producer with a BOUND_EVENTS bound that has delivered its first event."""
    tel = Telemetry(redis_url=redis.url, buffer_events=BOUND_EVENTS)
    tel.emit(MEASUREMENT, FIELDS, TAGS)
    tel.flush(10)
    return tel


def _repeated(one_run: Callable[[], tuple[list[int], int]]) -> tuple[list[int], int]:
    """``one_run`` ``FROZEN_RUNS`` times: all timings (sorted) and the summed count beside them.

    The timings wait in an array while runs go on (see :func:`per_call`)."""
    timings = array.array("q")
    total = 0
    for _ in range(FROZEN_RUNS):
        run, count = one_run()
        timings.extend(run)
        total += count
    return sorted(timings), total


def _frozen_calls(redis: RedisServer, context: Callable[[], contextlib.AbstractContextManager[Any]]
                  ) -> tuple[list[int], int]:
    """Single emits of a fresh producer timed alone while Redis is frozen, and the full collections
    meanwhile (a fresh producer: the worst call comes while its flusher is still busy)."""
    tel = _started(redis)
    redis.pause()
    try:
        with context():
            timings, full_collections = _per_call_counting_gc(lambda: tel.emit(MEASUREMENT, FIELDS, TAGS),
                                                              FROZEN_CALLS)
    finally:
        redis.resume()
    tel.close(30)
    return timings, full_collections


def _per_call_counting_gc(record: Callable[[], object], calls: int) -> tuple[list[int], int]:
    """:func:`per_call`, and how many full (generation 2) garbage collections ran meanwhile."""
    full: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(count)
    try:
        return per_call(record, calls), len(full)
    finally:
        gc.callbacks.remove(count)


def _frozen_row(name: str, timings: list[int]) -> str:
    slow = sum(1 for t in timings if t > 100_000)
    return (f"| {name} | {pct(timings, 0.5):,} | {pct(timings, 0.99):,} | {pct(timings, 0.9999):,} | "
            f"{timings[-1]:,} | {slow} |")


def _blocked_xadd(redis: RedisServer) -> str:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.client(socket_timeout=1.0, retry=Retry(NoBackoff(), 0))
    client.ping()
    redis.pause()
    try:
        started = _pc()
        try:
            client.xadd("bench:raw", {"x": "1"})
            outcome = "answered"
        except Exception as exc:  # expected: the frozen server never answers
            outcome = f"then {type(exc).__name__}"
        blocked = _pc() - started
    finally:
        redis.resume()
    return (f"| one XADD per event (socket timeout 1 s; redis-py's default is none: it waits for Redis) | "
            f"{blocked:,} | – | – | {blocked:,} ({outcome}) | 1 |")
