"""The producer side by side with what a bot author would use instead, on one machine, in one run.

What is measured, for one event of the seed's ``attachment_monitoring`` shape (3 tags, 5 fields):

* the caller's cost of recording it: each call timed alone with ``perf_counter_ns`` (median and
  p99, which include the timer's own overhead, shown as the first row) and the average of a
  tight loop;
* the process CPU per event including all background work (our flusher, the influxdb-client
  batch thread, OpenTelemetry's aggregation), ``time.process_time()`` over recording N events and
  the final flush, divided by N. The Redis / InfluxDB servers' CPU is not included;
* with Redis frozen (SIGSTOP): the worst single emit, and memory while events keep coming;
* sustained throughput into a real redis-server from one process, and what overflows when the
  caller outruns the flusher.

Each recording row is the best of three runs of the candidate: single calls and CPU figures both
swing by a quarter between runs on a shared machine, for every candidate alike.

Servers come from ``tests/services.py`` (private redis-server, influxd 1.x) and the influxdb-client
rows go through ``tests.influx_gateway.InfluxV2Gateway`` (the v2 write API in front of influxd).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.producer_frozen import FROZEN_CALLS, FROZEN_RUNS, frozen_redis
from bench.producer_throughput import throughput
from bench.producer_workload import FIELDS, MEASUREMENT, TAGS, fresh_tags, pct, per_call
from producers import Telemetry
from producers._encode import WIDTH, BatchEncoder
from tests.services import InfluxServer, RedisServer

FAST_CALLS = 100_000
REPEATS = 3
SLOW_CALLS = 300


def _cpu_costs(record: Callable[[], Any], finish: Callable[[], Any], calls: int) -> tuple[float, float]:
    """(caller-thread CPU ns per call, process CPU µs per event including ``finish``).

    ``thread_time`` counts only the calling thread, so the first figure is the caller's cost
    alone; ``process_time`` adds every background thread (flusher, batch writer, exporter).
    """
    process_started, thread_started = time.process_time(), time.thread_time()
    for _ in range(calls):
        record()
    caller = (time.thread_time() - thread_started) / calls * 1e9
    finish()
    return caller, (time.process_time() - process_started) / calls * 1e6


class _Candidate:
    """One way to record the event: a ``record()`` callable, a ``finish()`` and how many calls."""

    def __init__(self, name: str, record: Callable[[], Any], finish: Callable[[], Any] = lambda: None,
                 calls: int = FAST_CALLS, note: str = "") -> None:
        self.name, self.record, self.finish, self.calls, self.note = name, record, finish, calls, note


def python_speed_vs_reference(calls: int = 20_000, repeats: int = 3) -> float:
    """How many times slower this machine runs Python than the one the issues' targets come from.

    Measured as ``prometheus_client``'s caller CPU per event (the same candidate as in the table),
    best of ``repeats`` (the least disturbed run on a shared machine), against
    :data:`REFERENCE_PROMETHEUS_NS`; above 1 means slower. For benchmarks to state their figures
    beside the targets; verdicts stay on the unscaled figures.
    """
    candidate = _prometheus()
    best = min(_cpu_costs(candidate.record, candidate.finish, calls)[0] for _ in range(repeats))
    return best / REFERENCE_PROMETHEUS_NS


def _ours(redis: RedisServer, stack: contextlib.ExitStack) -> list[_Candidate]:
    tel = Telemetry(redis_url=redis.url, buffer_events=1_000_000)
    stack.callback(tel.close)
    bound = tel.bind(MEASUREMENT, bot_name="elena", risk_level="HIGH")
    user = {"user_id": "u42"}
    users = itertools.cycle([fresh_tags(i) for i in range(5_000)])   # built beforehand: not the caller's cost
    buffer: collections.deque[Any] = collections.deque(maxlen=1_000_000)
    append, now = buffer.append, time.time
    return [
        _Candidate("empty call (timer overhead)", lambda: None),
        _Candidate("deque append of the same tuple (floor)",
                   lambda: append((0, MEASUREMENT, now(), TAGS, FIELDS)), buffer.clear),
        _Candidate("**Telemetry.emit**", lambda: tel.emit(MEASUREMENT, FIELDS, TAGS), lambda: tel.flush(60)),
        _Candidate("**Telemetry.emit**, a different tag dict each call (5,000 users)",
                   lambda: tel.emit(MEASUREMENT, FIELDS, next(users)), lambda: tel.flush(60)),
        _Candidate("**bound handle .emit** (2 fixed tags + user_id)", lambda: bound.emit(FIELDS, user),
                   lambda: tel.flush(60)),
    ]


def _prometheus() -> _Candidate:
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    registry = CollectorRegistry()
    labels = list(TAGS)
    gauges = {name: Gauge(f"bench_{name}", name, labels, registry=registry)
              for name in FIELDS if name != "intervention_provided"}
    interventions = Counter("bench_intervention_provided", "interventions", labels, registry=registry)

    def record() -> None:
        for name, gauge in gauges.items():
            gauge.labels(**TAGS).set(FIELDS[name])
        if FIELDS["intervention_provided"]:
            interventions.labels(**TAGS).inc()

    return _Candidate(PROMETHEUS, record,
                      lambda: generate_latest(registry),
                      note="keeps only the last value; finish = one scrape")


def _opentelemetry(stack: contextlib.ExitStack) -> _Candidate:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    stack.callback(provider.shutdown)
    meter = provider.get_meter("bench")
    histograms = [meter.create_histogram(name) for name in FIELDS if name != "intervention_provided"]
    interventions = meter.create_counter("intervention_provided")
    values = [FIELDS[name] for name in FIELDS if name != "intervention_provided"]

    def record() -> None:
        for histogram, value in zip(histograms, values, strict=True):
            histogram.record(value, attributes=TAGS)
        interventions.add(1, attributes=TAGS)

    return _Candidate("OpenTelemetry SDK (4 histograms + 1 counter, attributes)", record,
                      reader.get_metrics_data, note="in-memory reader; finish = one collect")


def _statsd(stack: contextlib.ExitStack) -> _Candidate:
    import statsd

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    stack.callback(sink.close)
    client = statsd.StatsClient("127.0.0.1", sink.getsockname()[1], prefix="bench")
    prefix = ".".join(TAGS.values())

    def record() -> None:
        for name, value in FIELDS.items():
            client.gauge(f"{prefix}.{name}", float(value))

    return _Candidate("statsd UDP (5 gauges, tags in the name)", record,
                      note="5 sendto per event; the server may drop")


def _influx(stack: contextlib.ExitStack, workdir: Path) -> list[_Candidate]:
    from influxdb_client import InfluxDBClient, Point
    from influxdb_client.client.write_api import SYNCHRONOUS, WriteOptions

    from tests.influx_gateway import InfluxV2Gateway

    influx = InfluxServer(workdir / "influxd").start()
    stack.callback(influx.kill)
    influx.create_database("bench")
    gateway = InfluxV2Gateway(influx.url).start()
    stack.callback(gateway.stop)
    client = InfluxDBClient(url=gateway.url, token="bench", org="bench")
    stack.callback(client.close)
    sync_api = client.write_api(write_options=SYNCHRONOUS)
    batch_api = client.write_api(write_options=WriteOptions(batch_size=5_000, flush_interval=1_000))

    def point() -> Any:
        p = Point(MEASUREMENT)
        for key, value in TAGS.items():
            p = p.tag(key, value)
        for key, value in FIELDS.items():
            p = p.field(key, value)
        return p

    return [
        _Candidate("influxdb-client, synchronous write per event",
                   lambda: sync_api.write("bench", record=point()), calls=SLOW_CALLS,
                   note="an HTTP request per event (what the seed did)"),
        _Candidate("influxdb-client, batching write_api", lambda: batch_api.write("bench", record=point()),
                   batch_api.flush, calls=20_000, note="background thread; finish = flush"),
    ]


def _xadd(redis: RedisServer) -> _Candidate:
    client = redis.client()
    fields = {**{f"t_{k}": v for k, v in TAGS.items()}, **{k: str(v) for k, v in FIELDS.items()}}
    return _Candidate("one XADD per event (redis-py, synchronous)",
                      lambda: client.xadd("bench:raw", fields), calls=5_000, note="a round trip per event")


def _recording_rows(candidates: list[_Candidate]) -> tuple[list[str], dict[str, tuple[float, ...]]]:
    """Each candidate's row: the best of :data:`REPEATS` runs (the single-call figures of the run with
    the lowest median, the lowest CPU figures), the least disturbed on a shared machine."""
    rows, figures = [], {}
    for candidate in candidates:
        calls, costs = [], []
        for _ in range(REPEATS):
            gc.collect()
            timings = per_call(candidate.record, candidate.calls)
            calls.append((pct(timings, 0.5), pct(timings, 0.99)))
            candidate.finish()   # no backlog from this phase may be billed to the next
            costs.append(_cpu_costs(candidate.record, candidate.finish, candidate.calls))
        (median, p99), (caller, cpu) = min(calls), min(costs, key=lambda cost: cost[1])
        figures[candidate.name] = (median, p99, caller, cpu)
        rows.append(f"| {candidate.name} | {median:,} | {p99:,} | {caller:,.0f} | {cpu:,.2f} | "
                    f"{candidate.calls:,} | {candidate.note} |")
    return rows, figures


@contextlib.contextmanager
def _servers() -> Iterator[tuple[RedisServer, Path]]:
    with tempfile.TemporaryDirectory(prefix="bench-producer-") as tmp:
        redis = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        try:
            yield redis, Path(tmp)
        finally:
            redis.kill()


def _encoder_split() -> tuple[float, float, float]:
    """Flusher encoding alone, thread CPU ns per event: (1 shard, one tag dict), (1 shard, fresh
    dicts), (4 shards, fresh dicts). From the buffer's flat items as the flusher takes them: event
    tuples, wire forms and msgpack; the step from the second to the third is the shard lookup
    (cache key of a fresh dict)."""
    n, batch = 200_000, 2_000
    same = [item for i in range(n) for item in (0, MEASUREMENT, 1.7e9 + i, TAGS, None, FIELDS, None)]
    fresh = [item for i in range(n)
             for item in (0, MEASUREMENT, 1.7e9 + i, fresh_tags(i), None, FIELDS, None)]
    results = []
    for shards, items in ((1, same), (1, fresh), (4, fresh)):
        encoder = BatchEncoder(shards)
        encoder.encode_items(items)   # warm the shard cache, as a running flusher has it
        best = float("inf")
        for _ in range(3):
            started = time.thread_time_ns()
            for k in range(0, len(items), batch * WIDTH):
                encoder.encode_items(items[k:k + batch * WIDTH])
            best = min(best, (time.thread_time_ns() - started) / n)
        results.append(best)
    return results[0], results[1], results[2]


def _verdicts(figures: dict[str, tuple[float, ...]], rates: tuple[int, int], frozen: dict[str, float],
              slower: float) -> list[str]:
    sustainable, tuned = rates
    median, p99, _caller, _cpu = figures[OURS]
    cpu = max(figures[OURS][3], figures[OURS_FRESH][3])   # the worse of constant and varying tags
    floor = figures[FLOOR][0]
    checks = [
        (f"emit median ≤ 1 µs: {median:,.0f} ns", median <= 1_000),
        (f"emit median within 3× the deque floor: {median:,.0f} vs {floor:,.0f} ns ({median / floor:.1f}×)",
         median <= 3 * floor),
        (f"emit p99 ≤ 5 µs: {p99:,.0f} ns", p99 <= 5_000),
        (f"total CPU ≤ 2 µs per event (caller + flusher, worse of the two emit rows): {cpu:.2f} µs",
         cpu <= 2.0),
        (f"≥ 400,000 events/s sustained with nothing dropped: {sustainable:,}/s (with the host's garbage "
         "collector tuned as docs/scaling.md suggests: "
         f"{f'{tuned:,}/s' if tuned else 'none'} of the top three rates)",
         sustainable >= 400_000),
        (f"no emit over 1 ms while Redis is paused: worst {frozen['worst_ms']:,.2f} ms of "
         f"{FROZEN_RUNS * FROZEN_CALLS:,} calls in {FROZEN_RUNS} runs (full garbage collections of the "
         f"process during the calls: {frozen['full_gcs']:.0f}; "
         f"with the collector paused the worst was {frozen['worst_no_gc_ms']:,.2f} ms; the same number of "
         f"list extends with no other thread, the floor, {frozen['worst_floor_ms']:,.2f} ms; see below)",
         frozen["worst_ms"] <= 1.0),
        (f"memory flat while Redis is down: {frozen['rss_first']:,.1f} → {frozen['rss_last']:,.1f} MiB RSS "
         f"from {frozen['emitted_first']:,.0f} to {frozen['emitted_last']:,.0f} events emitted, the bound "
         "full (within 5 %)", frozen["rss_last"] <= 1.05 * frozen["rss_first"]),
    ]
    return [f"- {'met' if ok else '**not met**'} — {text}" for text, ok in checks] + [
        "",
        "These figures come from one run of this benchmark (best of 3 per row) on a shared 2-core "
        "machine: consecutive runs of the same code differ by 25 % or more in CPU per event (compare "
        "the deque floor between runs), so a target met or missed by less than that margin is not a "
        "measured change.",
        "",
        f"Machine speed: `prometheus_client` costs {slower * REFERENCE_PROMETHEUS_NS / 1000:,.1f} µs per "
        f"event in this run (best of 3) against ≈ {REFERENCE_PROMETHEUS_NS / 1000:.0f} µs on the machine "
        "the targets were set "
        f"on, so this one runs Python about {slower:.1f}× {'slower' if slower >= 1 else 'faster'}. Scaled "
        f"by that, our total CPU per event would be {cpu / slower:.2f} µs and the sustainable rate about "
        f"{sustainable * slower:,.0f} events/s there. The verdicts above are judged on this run's own "
        "figures, unscaled.",
    ]


OURS = "**Telemetry.emit**"
PROMETHEUS = "prometheus_client (4 Gauge + 1 Counter, labels)"
REFERENCE_PROMETHEUS_NS = 8_000
"""prometheus_client's caller CPU per event on the machine the issue's targets come from."""
OURS_FRESH = "**Telemetry.emit**, a different tag dict each call (5,000 users)"
FLOOR = "deque append of the same tuple (floor)"


def run() -> str:
    """Run every measurement; return the Markdown section for bench/RESULTS.md."""
    with _servers() as (redis, workdir):
        with contextlib.ExitStack() as others:   # their threads stop before the frozen-Redis calls
            candidates = [*_ours(redis, others), _prometheus(), _opentelemetry(others), _statsd(others),
                          *_influx(others, workdir), _xadd(redis)]
            recording, figures = _recording_rows(candidates)
        del candidates
        gc.collect()
        frozen, memory, frozen_figures = frozen_redis(redis)
        throughput_rows, sustainable, tuned = throughput(redis)
    wire_ns, fresh_one_ns, fresh_four_ns = _encoder_split()
    return "\n".join([
        "## Producer: the caller's cost, CPU per event, a frozen Redis, throughput",
        "",
        "One event = `attachment_monitoring` with 3 tags and 5 fields; the others record one metric per "
        "field, as their users would; each row is the best of 3 runs (the single-call figures of the "
        "run with the lowest median, the lowest CPU figures). *median / p99*: each call timed alone "
        "with `perf_counter_ns` "
        "(wall clock, includes the timer overhead of the first row); *caller CPU*: `thread_time` of a "
        "tight loop / calls (the calling thread only); *CPU/event*: `process_time` (every thread: "
        "flusher, batch writer, exporter) for the calls plus the final flush or collect, / calls. "
        "The servers' own CPU is not included. Loop figures also carry what single-call medians skip "
        "(allocator growth, garbage collection, waiting for the interpreter lock while the flusher runs).",
        "",
        "Targets (from the issue):",
        "",
        *_verdicts(figures, (sustainable, tuned), frozen_figures, python_speed_vs_reference()),
        "",
        f"**Sustainable rate** into one redis-server from one process, nothing dropped: {sustainable:,} "
        "events/s on this run (the highest paced rate that was met with zero drops). The CPU-bound "
        f"ceiling with one free core would be 1 / {figures[OURS_FRESH][3]:.2f} µs = "
        f"{1e6 / figures[OURS_FRESH][3]:,.0f} events/s: caller and flusher share one interpreter lock, and "
        "the flusher's share is the limit. Its encoding step measured alone (thread CPU, best of 3, "
        f"batches of 2,000 taken from the buffer's items): {wire_ns:,.0f} ns per event with one tag dict "
        f"on 1 shard (event tuples, wire forms and msgpack), {fresh_one_ns:,.0f} ns with a fresh tag dict "
        f"per event on 1 shard, {fresh_four_ns:,.0f} ns on 4 shards (the difference is the shard lookup "
        "of a fresh dict: building and hashing its cache key); XADD and the socket come on top. More "
        "throughput means more processes (each has its own flusher), not more shards.",
        "",
        "| recording one event with | median ns | p99 ns | caller CPU ns | CPU µs/event | calls | note |",
        "|---|---:|---:|---:|---:|---:|---|",
        *recording,
        "",
        "### Redis frozen with SIGSTOP",
        "",
        "The worst single call is set by the interpreter lock, Python's garbage collector and the OS "
        "scheduler, not by I/O. Each run of the first two rows starts a fresh producer and freezes "
        "Redis just before its calls, so the flusher is still encoding its last take while they run. "
        "A call that needs the interpreter lock meanwhile waits until the flusher blocks on its send, "
        "at most about one take: the flusher sizes takes to 0.3 ms of encoding while it "
        "keeps up (a thread waiting for the lock otherwise gets it only after the switch interval, "
        "5 ms). Buffered events are items the collector does not track, so they neither start full "
        "collections nor lengthen them; a full collection of the process's other objects still runs "
        "inside whichever call allocated last (the second row pauses the collector, which a library "
        "cannot do to its host). The other candidates' threads are stopped before these rows, and the "
        "timings wait in arrays, which the collector does not walk.",
        "",
        "| what | median ns | p99 ns | p99.99 ns | worst ns | calls > 100 µs |",
        "|---|---:|---:|---:|---:|---:|",
        *frozen,
        "",
        "Memory while Redis stays frozen and emits continue (bound 100,000 events, fresh tag dicts, "
        "5,000 users): flat once the bound is reached; the oldest events are dropped and counted.",
        "",
        "| events emitted | process RSS MiB | buffered | dropped |",
        "|---:|---:|---:|---:|",
        *memory,
        "",
        "### Throughput into a real redis-server from one process (buffer 100,000)",
        "",
        "Flat out, the caller outruns the flusher (they share one interpreter lock); the bound then "
        "drops the oldest events, counted exactly in `stats()['dropped']`.",
        "",
        "What sets the limit beside the two threads' CPU is the interpreter lock they share, and "
        "Python's garbage collector. Buffered events are flat items (the caller's values and dicts, "
        "which Python does not track while they hold plain values), so however long they wait they "
        "add nothing to collect, and the flusher builds event tuples (which the collector tracks) 250 at "
        "a time, so few are alive when a collection moves survivors to the oldest generation. The "
        "full collections that remain come from the process's other short-lived objects. The last rows "
        "repeat the top rates, first with the host's collector tuned "
        "as [docs/scaling.md](../docs/scaling.md) suggests to bots emitting that much (`gc.freeze()` "
        "after start-up, `gc.set_threshold(50_000, 10, 10)`), then with it paused (attribution only). "
        "The sustainable rate above is judged with the defaults: a library cannot set its host's "
        "collector.",
        "",
        "| load | achieved events/s (caller) | delivered | dropped |",
        "|---|---:|---:|---:|",
        *throughput_rows,
    ])
