"""Worker throughput and state cost at real cardinality: 100 to 100,000 series per window.

``attachment_monitoring`` has ``user_id`` as a tag, so many series per window is the normal
case. Each step (:mod:`bench.cardinality_workload`) is a backlog of the main measurement with
exactly S series in every window. Per step, on private servers (``tests/services.py``):

* **worker**: one ``python -m consumer`` (v1 sink) owns the shards; the backlog is XADDed and
  timed: the clock stops when the worker's ``/metrics`` count InfluxDB's acknowledgement of the
  step's last point (a sum asked of influxd over tens of thousands of series costs it as much
  CPU as the writes: polling one would slow what is measured), then the sums are checked;
  peak RSS is the child's ``VmHWM``; the checkpoint's Redis memory is ``MEMORY USAGE`` of every
  ``PREFIX:{i}:state`` once the worker has checkpointed its last commit;
* **direct**: the same points (computed in-process by ``ShardWindows``, the same line protocol
  and the sink's batch size) POSTed to the same influxd by one writer, encoded beforehand: the
  rate at which influxd itself accepts them, the ceiling for the worker;
* **state**: one ``ShardWindows`` holding one window of S open series: memory per series-window
  (``tracemalloc``), ``snapshot()`` ms and bytes, and the fenced checkpoint call into Redis
  (``CheckpointStore.save``) ms and ``MEMORY USAGE``.

``BENCH_CARDINALITY_STEPS=100,10000`` picks steps; ``BENCH_PROFILE=1`` also drains the 10k and
40k steps under py-spy and writes ``bench/profile-cardinality-S.txt`` (collapsed stacks) and the
shares per phase into the section.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import urllib3

from bench import cardinality_profile as prof
from bench.cardinality_workload import MEASUREMENT, WINDOW_S, Step, make_step
from consumer.aggregation.window import ShardWindows
from consumer.cli.top import scrape
from consumer.core.checkpoint import CheckpointStore, StateWrite
from consumer.core.config import DEFAULT_MAX_SERIES, WorkerConfig
from consumer.core.model import Point
from consumer.sinks.base import MAX_BATCH_POINTS
from consumer.sinks.line_protocol import encode_points
from producers.keys import lease_key, state_key, stream_key
from tests import chaos_harness as ch
from tests.cluster import caught_up
from tests.services import InfluxServer, RedisServer, free_port

SHARDS: Final = 4
EVENTS: Final = 200_000
DEFAULT_STEPS: Final = ("100", "1000", "10000", "40000", "100000", "40000x25")
"""Series per window; ``SxE`` is S series with E events in each series-window, one window:
40,000 series at 25 is what 100,000 events/s into 10 s windows over 40,000 series makes
(the issue's live target: 1,000,000 events a window)."""
PROFILE_STEPS: Final = ("10000", "40000", "40000x25")
PIPELINE_ENTRIES: Final = 200
TIMEOUT_S: Final = 180.0
POLL_S: Final = 0.1
QUERY_POLL_S: Final = 0.5
"""Between two sums asked of influxd, once the worker says it wrote everything."""
REPEATS: Final = 3
RESULTS_DIR: Final = Path(__file__).parent


def _windows_for(series: int) -> int:
    """Fewer windows as series grow, so every step stays within a few times ``EVENTS``."""
    return 4 if series <= 10_000 else 2 if series <= 50_000 else 1


def _steps() -> list[tuple[int, int | None]]:
    """(series per window, events per series-window or ``None`` for the backlog of ``EVENTS``)."""
    chosen = [s.strip() for s in os.environ.get("BENCH_CARDINALITY_STEPS", "").split(",") if s.strip()]
    steps = []
    for text in chosen or DEFAULT_STEPS:
        series, _, per = text.partition("x")
        steps.append((int(series), int(per) if per else None))
    return steps


@dataclass(slots=True)
class StateCost:
    """One window of S open series: memory per series-window, and what its checkpoints cost."""

    bytes_per_series: float
    """Steady state: a second window of the same series (tag pools and validation memos warm)."""
    first_window_bytes: float
    """The first window of new series, with what those pools and memos take on."""
    full_ms: float
    full_bytes: int
    step_ms: float
    step_bytes: int
    save_ms: float
    redis_bytes: int


@dataclass(slots=True)
class WorkerRun:
    seconds: float
    events: int
    points: int
    peak_rss: int
    idle_rss: int
    checkpoint_redis_bytes: int


def _window_config(series: int) -> dict[str, Any]:
    config = WorkerConfig()
    return {"window_s": WINDOW_S, "grace_s": config.grace_s, "allowed_lateness_s": config.allowed_lateness_s,
            "max_future_s": config.max_future_s, "max_series": max(series, DEFAULT_MAX_SERIES)}


def _record(windows: ShardWindows, events: Sequence[Any], now: float) -> None:
    for number, begin in enumerate(range(0, len(events), 500), start=1):
        rejected = windows.record_batch(events[begin:begin + 500], 1, number, now)
        assert not rejected, rejected[:3]


def _bytes_per_series_window(step: Step, now: float) -> tuple[float, float]:
    """``tracemalloc`` bytes per open series-window: (steady state, first window).

    The first window of S new series also fills the tag pools and validation memos, which are
    bounded and shared by every window; a second window of the same series, one window earlier
    (as the worker decodes them: lists), is what each further open series-window costs.
    """
    events = [list(event) for event in step.by_window[0]]
    earlier = [[kind, name, ts - WINDOW_S, tags, fields] for kind, name, ts, tags, fields in events]
    tracemalloc.start()
    try:
        windows = ShardWindows(**_window_config(step.series))
        start = tracemalloc.get_traced_memory()[0]
        _record(windows, events, now)
        middle = tracemalloc.get_traced_memory()[0]
        _record(windows, earlier, now)
        end = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (end - middle) / step.series, (middle - start) / step.series


def _state_cost(step: Step, client: Any) -> tuple[StateCost, list[Point]]:
    """Memory and checkpoint cost of one window of S series; then every point of the step."""
    now = time.time()
    steady_bytes, first_bytes = _bytes_per_series_window(step, now)
    windows = ShardWindows(**_window_config(step.series))
    first, held_back = step.by_window[0][:-REPEATS], step.by_window[0][-REPEATS:]
    _record(windows, first, now)
    store = CheckpointStore(client, prefix="statecost", group="g")
    client.xgroup_create(stream_key("statecost", 0), "g", id="0", mkstream=True)
    client.set(lease_key("statecost", 0), "bench:1")

    def save(full: bool) -> tuple[float, int, float]:
        """(encode ms, bytes sent, Redis call ms) of one checkpoint, as the worker makes it."""
        started = time.perf_counter()
        write = windows.checkpoint(full=full)
        encoded = time.perf_counter()
        store.save(0, lease_value="bench:1", last_id="1-0",
                   write=StateWrite(write.fields, write.deleted, write.full), ack_ids=[])
        windows.checkpoint_saved(write)
        return (encoded - started) * 1000, write.size, (time.perf_counter() - encoded) * 1000

    full_ms, full_bytes, _full_save = save(True)
    steps = []
    for repeat, event in enumerate(held_back):  # a checkpoint follows a read: one more event
        assert not windows.record_batch([event], 2, repeat, now)
        steps.append(save(False))
    step_ms = statistics.median(step[0] for step in steps)
    step_bytes = round(statistics.median(step[1] for step in steps))
    save_ms = statistics.median(step[2] for step in steps)
    redis_bytes = int(client.memory_usage(state_key("statecost", 0), samples=0) or 0)
    client.delete(state_key("statecost", 0))
    for events in step.by_window[1:]:
        _record(windows, events, now)
    points = windows.collect_all().points
    cost = StateCost(steady_bytes, first_bytes, full_ms, full_bytes, step_ms, step_bytes, save_ms,
                     redis_bytes)
    return cost, points


def _post_all(influx: InfluxServer, db: str, bodies: Sequence[bytes]) -> float:
    """Seconds to POST ``bodies`` one after the other on one connection, as the sink does."""
    pool = urllib3.PoolManager(retries=False)
    url = f"{influx.url}/write?db={db}&precision=ns"
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    started = time.perf_counter()
    for body in bodies:
        response = pool.request("POST", url, body=body, headers=headers, timeout=60.0)
        assert response.status == 204, response.data[:200]
    seconds = time.perf_counter() - started
    pool.clear()
    return seconds


def _bodies(points: Sequence[Point]) -> list[bytes]:
    return [encode_points(points[i:i + MAX_BATCH_POINTS]) for i in range(0, len(points), MAX_BATCH_POINTS)]


def _direct(influx: InfluxServer, db: str, points: Sequence[Point],
            shift_ns: int) -> tuple[float, float, float]:
    """Points/s of (``encode_points``, influxd taking them as new series, the same series again).

    The second write moves every point ``shift_ns`` later: the series exist by then, as they do
    in production once a user has spoken before; the first is what the worker run faced.
    """
    influx.create_database(db)
    started = time.perf_counter()
    bodies = _bodies(points)
    encode_s = time.perf_counter() - started
    new_s = _post_all(influx, db, bodies)
    later = _bodies([Point(p.measurement, p.tags, p.fields, p.time_ns + shift_ns) for p in points])
    known_s = _post_all(influx, db, later)
    return len(points) / encode_s, len(points) / new_s, len(points) / known_s


def _sums(influx: InfluxServer, db: str) -> tuple[int, int]:
    rows = influx.query(f'SELECT sum("event_count"), count("event_count") FROM "{MEASUREMENT}"', db=db)
    return (int(rows[0]["sum"] or 0), int(rows[0]["count"] or 0)) if rows else (0, 0)


def _wait(predicate: Any, what: str, proc: ch.WorkerProcess, poll_s: float = POLL_S) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        if not proc.alive():
            raise AssertionError(f"worker exited while waiting for {what}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll_s)


def _rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _state_bytes(client: Any, shard: int) -> int:
    """``MEMORY USAGE`` of a shard's checkpoint, every field counted (a checkpoint must exist)."""
    used = client.memory_usage(state_key(ch.PREFIX, shard), samples=0)
    assert used is not None, f"shard {shard} has no checkpoint in Redis"
    return int(used)


def _points_out(port: int) -> int:
    """Points the worker has had acknowledged by InfluxDB, summed over shards (0 before it serves)."""
    metrics = scrape(f"http://127.0.0.1:{port}/metrics", timeout_s=5.0)
    return round(metrics.points_out) if metrics is not None else 0


def _fill(client: Any, entries: Sequence[tuple[str, dict[bytes, bytes]]]) -> None:
    for begin in range(0, len(entries), PIPELINE_ENTRIES):
        pipe = client.pipeline(transaction=False)
        for stream, fields in entries[begin:begin + PIPELINE_ENTRIES]:
            pipe.xadd(stream, fields)
        pipe.execute()


def _env(step: Step, redis_url: str, influx: InfluxServer, db: str, **extra: str) -> dict[str, str]:
    influx.create_database(db)
    return ch.worker_env(redis_url, influx.url, db, TELEMETRY_SHARDS=str(SHARDS),
                         TELEMETRY_MAX_SERIES=str(max(step.series, DEFAULT_MAX_SERIES)),
                         TELEMETRY_CONSUMER="bench-0", **extra)


def _worker_run(step: Step, client: Any, redis_url: str, influx: InfluxServer, db: str,
                log: Path) -> WorkerRun:
    port = free_port()
    proc = ch.WorkerProcess(_env(step, redis_url, influx, db, TELEMETRY_METRICS_PORT=str(port)), log).start()
    try:
        _wait(lambda: ch.lease_owners(client, SHARDS) == ["bench-0"] * SHARDS, "the leases", proc)
        idle_rss = _rss(proc.pid, "VmRSS")
        started = time.perf_counter()
        _fill(client, step.entries)
        _wait(lambda: _points_out(port) >= step.points, "every point acknowledged by InfluxDB", proc)
        seconds = time.perf_counter() - started
        if _sums(influx, db)[0] < step.events:  # not all there after all: time until they are
            _wait(lambda: _sums(influx, db)[0] >= step.events, "every event in InfluxDB", proc, QUERY_POLL_S)
            seconds = time.perf_counter() - started
        _wait(lambda: caught_up(client, SHARDS), "every entry acknowledged", proc)
        peak_rss = _rss(proc.pid, "VmHWM")
        time.sleep(1.5)  # the checkpoint after the last commit (interval 1 s)
        redis_bytes = sum(_state_bytes(client, shard) for shard in range(SHARDS))
    finally:
        proc.terminate()
    events, points = _sums(influx, db)
    return WorkerRun(seconds, events, points, peak_rss, idle_rss, redis_bytes)


def _profile(step: Step, label: str, tmp: Path, influx: InfluxServer) -> str:
    server = RedisServer(tmp / f"redis-profile-{label}", appendonly=False).start()
    client = server.client()
    try:
        _fill(client, step.entries)
        out = RESULTS_DIR / f"profile-cardinality-{label}.txt"
        env = _env(step, server.url, influx, f"profile_{label}")
        if prof.profile_drain(env, out, tmp / f"profile-{label}.log") is None:
            return "py-spy is not installed (`pip install py-spy`): no profile.\n"
        summary = prof.summarise(out.read_text())
    finally:
        client.close()
        server.kill()
    return (f"**{step.series:,} series per window** ({step.events:,} events, {step.points:,} points; "
            f"`python -m consumer --drain` under `py-spy record --idle -r {prof.RATE_HZ}`, "
            f"{summary.samples:,} samples, stacks in `bench/{out.name}`):\n\n{summary.markdown()}")


def _row(step: Step, cost: StateCost, run: WorkerRun | str, rates: tuple[float, float, float]) -> str:
    encode_rate, direct_rate, known_rate = rates
    state = (f"{cost.full_ms:,.0f}, {cost.full_bytes / 2**20:,.2f} MiB | {cost.step_ms:,.1f}, "
             f"{cost.step_bytes / 1024:,.1f} KiB | {cost.save_ms:,.1f} | "
             f"{cost.redis_bytes / 2**20:,.2f} MiB | {cost.bytes_per_series:,.0f} "
             f"({cost.first_window_bytes:,.0f})")
    head = f"| {step.series:,} | {step.windows} | {step.events:,} | {step.points:,}"
    if isinstance(run, str):
        return (f"{head} | – | – | {direct_rate:,.0f} | {known_rate:,.0f} | – | – | – | {state} | "
                f"{encode_rate:,.0f} | {run} |")
    exact = run.events == step.events and run.points == step.points
    note = "exact" if exact else f"**{run.events:,} events / {run.points:,} points written**"
    worker_points = step.points / run.seconds
    return (f"{head} | {step.events / run.seconds:,.0f} | {worker_points:,.0f} | {direct_rate:,.0f} | "
            f"{known_rate:,.0f} | "
            f"{worker_points / direct_rate:.0%} | {run.peak_rss / 2**20:,.0f} MiB "
            f"(+{(run.peak_rss - run.idle_rss) / 2**20:,.0f}) | "
            f"{run.checkpoint_redis_bytes / 2**20:,.2f} MiB | "
            f"{state} | {encode_rate:,.0f} | {note} |")


def _step(series: int, per: int | None, tmp: Path, influx: InfluxServer, profiles: list[str]) -> str:
    windows = _windows_for(series) if per is None else 1
    events = max(EVENTS, series * windows) if per is None else series * per
    step = make_step(series, events=events, windows=windows, shards=SHARDS, seed=series)
    label = str(series) if per is None else f"{series}x{per}"  # names its databases and files
    server = RedisServer(tmp / f"redis-{label}", appendonly=False).start()
    client = server.client()
    try:
        cost, points = _state_cost(step, client)
        assert len(points) == step.points, (len(points), step.points)
        run: WorkerRun | str
        try:
            run = _worker_run(step, client, server.url, influx, f"worker_{label}",
                              tmp / f"worker-{label}.log")
        except AssertionError as exc:
            run = "did not finish: " + str(exc).splitlines()[-1][:120].replace("|", "/")
        rates = _direct(influx, f"direct_{label}", points, round(step.windows * WINDOW_S * 1e9))
    finally:
        client.close()
        server.kill()
    if os.environ.get("BENCH_PROFILE") == "1" and label in PROFILE_STEPS:
        profiles.append(_profile(step, label, tmp, influx))
    return _row(step, cost, run, rates)


def run() -> str:
    rows: list[str] = []
    profiles: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-cardinality-") as tmp_name:
        tmp = Path(tmp_name)
        influx = InfluxServer(tmp / "influxd").start()
        try:
            for series, per in _steps():
                each = "" if per is None else f", {per} events each"
                print(f"bench cardinality: {series:,} series per window{each} ...", flush=True)
                rows.append(_step(series, per, tmp, influx, profiles))
        finally:
            influx.kill()
    header = (
        "## Cardinality: one worker at 100 to 100,000 series per window\n\n"
        f"Each step: a backlog of `{MEASUREMENT}` events (the seed's main measurement: `user_id`, "
        f"`bot_name`, `risk_level` tags, its five fields) with exactly S series in each of the "
        f"step's {WINDOW_S:.0f} s windows (recent past), {SHARDS} shards, 500 events per entry; "
        "`TELEMETRY_MAX_SERIES` = max(S, 10,000) so no series collapses to `__overflow__`. "
        f"The steps hold {EVENTS:,} events (at least one per series-window) but the last: 40,000 "
        "series with 25 events in each series-window of one window (1,000,000 events), which is what "
        "100,000 events/s into 10 s windows over 40,000 series makes: the live rate of the target. "
        "*worker*: one `python -m consumer` (v1 sink, defaults otherwise), timed from the first "
        "XADD until the worker's `/metrics` count InfluxDB's answer to the last point (then the sums "
        "in InfluxDB are checked: *result*; polling a sum over S series instead would load influxd "
        "as much as the writes do). *direct*: the same points, same line protocol and "
        f"batch of {MAX_BATCH_POINTS:,}, encoded beforehand and POSTed by one writer to the same "
        "influxd in the same run, into a fresh database (new series, as the worker met them); "
        "*known series*: the same points again, moved past the step's windows, so every series "
        "exists already (the steady state of users who spoke before); *ratio*: worker points/s "
        "over direct points/s. *RSS*: the worker's peak (VmHWM), in brackets its growth over the "
        "idle worker; *checkpoint in Redis*: `MEMORY USAGE` of all `PREFIX:{i}:state` after the "
        "last checkpoint (every window is retained clean for lateness). *State* columns: one "
        "`ShardWindows` holding one window of S open series: a full checkpoint (a new owner's "
        "first: encode ms, bytes sent), an incremental one after one more event (median of 3, "
        "as a checkpoint follows a read: encode ms, bytes sent), the fenced Redis call that "
        "stores it (`CheckpointStore.save`: Lua XACK + HSET/HDEL) ms, the state's `MEMORY USAGE`, "
        "and `tracemalloc` bytes per open series-window: a second window of the same S series "
        "(what each further one costs), in brackets the first (which also fills the tag pools and "
        "validation memos that every window shares, bounded). *encode*: `encode_points` points/s.\n\n"
        "| series / window | windows | events | points | worker events/s | worker points/s | "
        "direct points/s | direct, known series | ratio | worker RSS | checkpoint in Redis | "
        "full checkpoint | incremental checkpoint | Redis call ms | state in Redis | "
        "bytes / series-window | "
        "encode points/s | result |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    body = header + "\n" + "\n".join(rows) + "\n"
    if profiles:
        body += "\n### Where the time goes (py-spy)\n\n" + "\n".join(profiles)
    return body


if __name__ == "__main__":
    print(run())
