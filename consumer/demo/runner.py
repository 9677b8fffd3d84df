"""``telemetry demo``: the whole pipeline on a simulated bot workload, with no set-up.

Order of events:

1. find or start Redis and InfluxDB (:mod:`consumer.demo.services`);
2. start the real worker in a thread, and the real producer;
3. run the workload (:mod:`consumer.demo.workload`) for the duration at the requested message
   rate, with a live progress view;
4. close the producer (everything buffered reaches Redis), stop the worker, and run a draining
   worker (``telemetry consume --drain``) so every open window is written;
5. count what landed per measurement (InfluxQL, Flux or the line-protocol file), the dead
   letters, and print the queries to look at the data;
6. stop everything it started and remove its temporary directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from rich.console import Console

from consumer.admin.stream_admin import StreamAdmin
from consumer.core.config import WorkerConfig
from consumer.demo.progress import Progress
from consumer.demo.results import count_points, queries_for
from consumer.demo.services import DEMO_DATABASE, Service, Services
from consumer.demo.workload import Workload
from consumer.dlq.ops import parse_record
from consumer.pipeline.worker import Worker
from producers import Telemetry

TICK_S: Final = 0.02
MAX_BURST: Final = 2000
"""Most messages generated in one tick when the loop falls behind (keeps the view responsive)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the user asked for."""

    duration_s: float = 20.0
    rate: float = 50.0
    """User messages per second (each produces about 15 events)."""
    users: int = 200
    bots: int = 3
    seed: int | None = None
    bad_rate: float = 0.002
    """Share of attachment checks sent with a NaN value (they become dead letters)."""
    live: bool = True
    use_configured_redis: bool = False
    """Use the configured Redis when it answers; off unless the user named one explicitly."""
    use_configured_influx: bool = False
    """Use the configured InfluxDB when it answers; off unless the user named one explicitly."""


@dataclass
class DemoSummary:
    """What the demo did; ``--json`` prints it."""

    duration_s: float
    messages: int
    events_sent: dict[str, int]
    events_total: int
    producer: dict[str, int]
    worker: dict[str, int]
    points: dict[str, dict[str, int]]
    """Per measurement: ``points`` written and ``events`` (the sum of their event_count)."""
    dead_letters: dict[str, int]
    dead_letters_by_measurement: dict[str, int]
    risk_levels: dict[str, int]
    services: dict[str, dict[str, Any]]
    settings: dict[str, str]
    queries: dict[str, str] = field(default_factory=dict)

    def unaccounted(self) -> dict[str, int]:
        """Per measurement, events sent that are neither in a point nor a dead letter (should be {})."""
        missing = {}
        for name, sent in self.events_sent.items():
            landed = self.points.get(name, {}).get("events", 0) + self.dead_letters_by_measurement.get(
                name, 0
            )
            if landed != sent:
                missing[name] = sent - landed
        return missing


def _worker_config(config: WorkerConfig, redis_service: Service, influx: Service) -> WorkerConfig:
    overrides: dict[str, Any] = {
        "redis_url": redis_service.url,
        "consumer": f"demo-{os.getpid()}",
        "influx_url": influx.url,
    }
    if influx.kind == "influxd":
        overrides.update(influx_api="v1", influx_db=DEMO_DATABASE, influx_user=None, influx_password=None)
    return dataclasses.replace(config, **overrides)


def _run_worker(config: WorkerConfig) -> tuple[Worker, threading.Thread]:
    worker = Worker(config)
    thread = threading.Thread(target=worker.run, name="demo-worker", daemon=True)
    thread.start()
    return worker, thread


def _dead_by_measurement(admin: StreamAdmin, after_id: str) -> dict[str, int]:
    """Dead letters appended since ``after_id``, by the measurement of their event."""
    counts: Counter[str] = Counter()
    ms, _, seq = after_id.partition("-")
    for entry in admin.iter_range(admin.dlq, start=f"{ms}-{int(seq or 0) + 1}"):
        record = parse_record(entry)
        counts[str(record.event[1]) if record.event else "(not an event)"] += 1
    return dict(sorted(counts.items()))


def _drive(workload: Workload, options: DemoOptions, progress: Progress) -> float:
    """Generate messages at the requested rate for the duration; returns the seconds it ran."""
    started = time.monotonic()
    deadline = started + options.duration_s
    while (now := time.monotonic()) < deadline:
        due = int((now - started) * options.rate) - workload.messages
        for _ in range(min(due, MAX_BURST)):
            workload.message()
        progress.update(now - started)
        time.sleep(TICK_S)
    return time.monotonic() - started


def _drain(worker_config: WorkerConfig, workers: list[Worker], progress: Progress, elapsed: float) -> None:
    """A draining worker writes every open window; it joins ``workers`` first, which the progress
    display reads, and the display follows it until it ends."""
    drainer = Worker(dataclasses.replace(worker_config, drain=True, consumer=f"demo-drain-{os.getpid()}"))
    workers.append(drainer)
    drain_thread = threading.Thread(target=drainer.run, name="demo-drain", daemon=True)
    drain_thread.start()
    while drain_thread.is_alive():
        progress.update(elapsed)
        drain_thread.join(timeout=0.25)


def _new_dead_letters(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Dead letters per reason written during this run (the stream may hold older ones)."""
    return {reason: n - before.get(reason, 0) for reason, n in after.items() if n - before.get(reason, 0)}


def run_demo(
    config: WorkerConfig,
    options: DemoOptions,
    console: Console,
    before_stop: Callable[[DemoSummary], None] | None = None,
) -> DemoSummary:
    """Run the whole demo (see the module docstring); everything started is stopped on return.

    ``before_stop`` is called with the summary while the services still run (``--keep``).
    """
    with Services() as services:
        redis_service = services.redis(config.redis_url, use_configured=options.use_configured_redis)
        influx = services.influx(
            config.influx_url, config.influx_api, use_configured=options.use_configured_influx
        )
        worker_config = _worker_config(config, redis_service, influx)
        client = redis.Redis.from_url(worker_config.redis_url)
        admin = StreamAdmin(client, prefix=config.stream_prefix, shards=config.shards, group=config.group)
        dead_before = admin.dead_letter_counts().by_reason
        dlq_mark = admin.latest_ids([admin.dlq])[admin.dlq]
        console.print(
            f"[bold]telemetry demo[/bold]: Redis {redis_service.kind} {redis_service.url}, "
            f"InfluxDB {influx.kind} {influx.url}; {options.bots} bots, {options.users} users, "
            f"{options.rate:g} messages/s for {options.duration_s:g}s"
        )
        # Points carry their window's start: this run's windows start at or after this instant.
        since_ns = int(math.floor(time.time() / worker_config.window_s) * worker_config.window_s) * 10**9
        worker, thread = _run_worker(worker_config)
        tel = Telemetry(redis_url=worker_config.redis_url, prefix=config.stream_prefix, shards=config.shards)
        workers: list[Worker] = [worker]
        try:
            workload = Workload(
                tel, bots=options.bots, users=options.users, seed=options.seed, bad_rate=options.bad_rate
            )
            with Progress(console, workload, tel, workers, admin, options, live=options.live) as progress:
                elapsed = _drive(workload, options, progress)
                progress.phase("flushing the producer")
                tel.close(timeout=30.0)
                progress.phase("draining the worker: writing every open window")
                worker.stop()
                thread.join(timeout=60)
                _drain(worker_config, workers, progress, elapsed)
            totals: Counter[str] = Counter()
            for each in workers:
                totals.update(each.stats.totals)
            dead = _new_dead_letters(dead_before, admin.dead_letter_counts().by_reason)
            points = count_points(worker_config, influx, sorted(workload.sent), since_ns)
        finally:
            tel.close(timeout=5.0)
            worker.stop()
            thread.join(timeout=30)
            client.close()
        summary = DemoSummary(
            duration_s=round(elapsed, 3),
            messages=workload.messages,
            events_sent=dict(sorted(workload.sent.items())),
            events_total=sum(workload.sent.values()),
            producer=tel.stats(),
            worker=dict(sorted(totals.items())),
            points=points,
            dead_letters=dead,
            dead_letters_by_measurement=_dead_by_measurement(admin, dlq_mark),
            risk_levels=dict(sorted(workload.risk_levels.items())),
            services={"redis": redis_service.describe(), "influx": influx.describe()},
            settings={
                "stream_prefix": config.stream_prefix,
                "shards": str(config.shards),
                "influx_api": worker_config.influx_api,
                "database": worker_config.database,
                "bucket": worker_config.influx_bucket,
                "window_s": f"{worker_config.window_s:g}",
            },
            queries=queries_for(worker_config, influx),
        )
        if before_stop is not None:
            before_stop(summary)
        return summary
