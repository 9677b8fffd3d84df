"""The producer benchmark's throughput section: paced and flat-out rates into a real redis-server."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

from bench.producer_workload import FIELDS, MEASUREMENT, collector_paused, fresh_tags
from producers import Telemetry
from tests.services import RedisServer

PACED_RATES = (100_000, 200_000, 250_000, 300_000, 350_000, 400_000, 500_000)


def throughput(redis: RedisServer) -> tuple[list[str], int, int]:
    """Flat-out rate (what overflows) and paced rates; rows and the best rate with no drop, with the
    collector's defaults and tuned."""
    rows = []
    flat = Telemetry(redis_url=redis.url, buffer_events=100_000)
    calls = 1_000_000
    started = time.perf_counter()
    for i in range(calls):
        flat.emit(MEASUREMENT, FIELDS, fresh_tags(i))
    elapsed = time.perf_counter() - started
    flat.flush(60)
    s = flat.stats()
    flat.close(10)
    rows.append(f"| flat out, {calls:,} events | {calls / elapsed:,.0f} | {s['sent']:,} | {s['dropped']:,} "
                f"({s['dropped'] / calls:.1%}) |")
    sustainable = tuned = 0
    for rate in PACED_RATES:
        s, achieved = _paced_run(redis, rate)
        if _sustained(s, achieved, rate):
            sustainable = max(sustainable, rate)
        rows.append(_paced_row(f"paced at {rate:,}/s for 2 s", s, achieved))
    variants: tuple[tuple[str, Callable[[], contextlib.AbstractContextManager[None]]], ...] = (
        ("the host's collector tuned as docs/scaling.md suggests", _host_collector_tuned),
        ("Python's garbage collector paused (attribution only)", collector_paused))
    for label, collector in variants:
        for rate in PACED_RATES[-3:]:
            with collector():
                s, achieved = _paced_run(redis, rate)
            if collector is _host_collector_tuned and _sustained(s, achieved, rate):
                tuned = max(tuned, rate)
            rows.append(_paced_row(f"paced at {rate:,}/s for 2 s, {label}", s, achieved))
    return rows, sustainable, tuned


@contextlib.contextmanager
def _host_collector_tuned() -> Iterator[None]:
    """What docs/scaling.md suggests to a bot emitting at very high rates: ``gc.freeze()`` after
    start-up and young collections every 50,000 allocations; the defaults come back afterwards."""
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _sustained(stats: dict[str, int], achieved: float, rate: int) -> bool:
    return stats["dropped"] == 0 and achieved >= 0.98 * rate


def _paced_row(load: str, stats: dict[str, int], achieved: float) -> str:
    return (f"| {load} | {achieved:,.0f} | {stats['sent']:,} | {stats['dropped']:,} "
            f"({stats['dropped'] / max(1, stats['emitted']):.1%}) |")


def _paced_run(redis: RedisServer, rate: int) -> tuple[dict[str, int], float]:
    """A fresh producer paced at ``rate`` for 2 s, flushed: its stats and the rate achieved."""
    tel = Telemetry(redis_url=redis.url, buffer_events=100_000)
    achieved = paced(tel, rate, seconds=2.0)
    tel.flush(60)
    stats = tel.stats()
    tel.close(10)
    return stats, achieved


def paced(tel: Telemetry, rate: int, *, seconds: float) -> float:
    """Emit at ``rate`` events/s in chunks of 1,000 (5,000 users); return the rate achieved."""
    chunk = 1_000
    started = time.perf_counter()
    sent = 0
    while sent < rate * seconds:
        for i in range(sent, sent + chunk):
            tel.emit(MEASUREMENT, FIELDS, fresh_tags(i))
        sent += chunk
        ahead = started + sent / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    return sent / (time.perf_counter() - started)
