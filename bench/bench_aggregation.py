"""Aggregation throughput on one core: the worker's CPU budget per event.

Workload shaped like the seed's: per user message one ``attachment_monitoring`` check (5 fields,
3 tags, ``user_id`` among 500 active users, each talking to one bot), one ``vector_classification``
(10 fields, 4 tags) and three learning-component counts (1 field, 2 tags), with event times spread
over one minute (six 10 s windows), flushed and committed every 10,000 events as the worker does.

Rates are events per CPU-second of this process (``time.process_time``), so they measure the
cost per event on one core even when the machine is shared; wall-clock rates would measure the
neighbours.

Rows: ``record`` alone on pre-validated events; ``validate`` + ``record`` one event at a time
from decoded wire arrays; the same per stream entry with ``record_batch`` (the worker's way), with
pseudonymisation, and with msgpack decoding of the entry. Beside them, for the percentile fields, our
sketch against the ``ddsketch`` package a user might pick instead.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import msgpack

from bench.bench_producer import python_speed_vs_reference
from consumer.aggregation.privacy import Pseudonymizer
from consumer.aggregation.sketch import QuantileSketch
from consumer.aggregation.validate import validate
from consumer.aggregation.window import ShardWindows
from consumer.core.model import Event, Position

EVENTS = 200_000
USERS = 500
BASE_S = 1_700_000_000.0
SPAN_S = 60.0
REPEATS = 5
TARGET = 300_000
"""validate + record events per CPU-second on one core (issue 4)."""
CONFIG: dict[str, Any] = {"window_s": 10.0, "grace_s": 2.0, "allowed_lateness_s": 300.0,
                          "max_future_s": 60.0, "max_series": 10_000, "overflow_tags": ("user_id",)}
_BOTS = ("elena", "marcus", "jake", "ryan", "gabriel")
_COMPONENTS = ("engagement_engine_telemetry", "character_graph_builder_telemetry",
               "learning_moment_detector_telemetry", "episodic_intelligence_telemetry")


def _attachment(rng: random.Random, ts: float) -> list[Any]:
    user = rng.randrange(USERS)  # a user talks to one bot; their risk level rarely changes
    risk = ("LOW", "LOW", "MEDIUM", "HIGH")[user % 4] if rng.random() < 0.9 else "MEDIUM"
    return [0, "attachment_monitoring", ts,
            {"user_id": f"u{user}", "bot_name": _BOTS[user % len(_BOTS)], "risk_level": risk},
            {"emotional_intensity": rng.random(), "interaction_frequency": rng.uniform(0, 50),
             "dependency_count": rng.randrange(15), "consecutive_days": rng.randrange(31),
             "intervention_provided": rng.random() < 0.1}]


def _vector(rng: random.Random, ts: float) -> list[Any]:
    return [0, "vector_classification", ts,
            {"bot_name": rng.choice(_BOTS), "query_type": rng.choice(("content_semantic", "hybrid_multi")),
             "primary_vector": rng.choice(("content", "emotion", "semantic")),
             "strategy": rng.choice(("a", "b", "c", "d", "e", "f"))},
            {"confidence": rng.random(), "content_weight": rng.random(), "emotion_weight": rng.random(),
             "semantic_weight": rng.random(), "results_quality": rng.random(),
             "emotional_indicators_count": rng.randrange(8), "semantic_indicators_count": rng.randrange(8),
             "content_indicators_count": rng.randrange(8), "query_length": rng.randrange(400),
             "classification_accurate": rng.random() < 0.8}]


def _count(rng: random.Random, ts: float) -> list[Any]:
    component = rng.choice(_COMPONENTS)
    field = {"engagement_engine_telemetry": "interventions_generated",
             "character_graph_builder_telemetry": "facts_extracted",
             "learning_moment_detector_telemetry": "moments_detected",
             "episodic_intelligence_telemetry": "episodes_stored"}[component]
    return [1, component, ts, {"bot_name": rng.choice(_BOTS), "component": component},
            {field: rng.randrange(1, 4)}]


def workload(count: int = EVENTS, seed: int = 7) -> list[list[Any]]:
    """Wire events in arrival order: per message 1 attachment, 1 vector, 3 counts."""
    rng = random.Random(seed)
    raws: list[list[Any]] = []
    while len(raws) < count:
        ts = BASE_S + SPAN_S * len(raws) / count + rng.uniform(-0.5, 0.0)
        raws.append(_attachment(rng, ts))
        raws.append(_vector(rng, ts))
        raws.extend(_count(rng, ts) for _ in range(3))
    return raws[:count]


def _run(step: Callable[[ShardWindows, int], None], count: int) -> float:
    """Best-of-REPEATS events/s of ``step`` over ``count`` events, flushing every 10,000."""
    best = 0.0
    for _ in range(REPEATS):
        windows = ShardWindows(**CONFIG)
        started = time.process_time()
        for start in range(0, count, 10_000):
            step(windows, start)
            flush = windows.collect_due(BASE_S + SPAN_S, idle=False)
            windows.commit(flush)
        windows.commit(windows.collect_all())
        best = max(best, count / (time.process_time() - started))
    return best


def _sketch_rates(values: list[float]) -> tuple[float, float | None]:
    started = time.process_time()
    ours = QuantileSketch()
    for value in values:
        ours.add(value)
    ours_rate = len(values) / (time.process_time() - started)
    try:
        from ddsketch import DDSketch
    except ImportError:
        return ours_rate, None
    theirs = DDSketch(relative_accuracy=0.01)
    started = time.process_time()
    for value in values:
        theirs.add(value)
    return ours_rate, len(values) / (time.process_time() - started)


def _stage_rates(raws: list[list[Any]], events: list[Event], now_s: float) -> list[tuple[str, float]]:
    payloads = [msgpack.packb(raws[i:i + 100]) for i in range(0, len(raws), 100)]
    pseudonymizer = Pseudonymizer(("user_id",), b"bench-key")

    def record_only(windows: ShardWindows, start: int) -> None:
        record = windows.record
        for event in events[start:start + 10_000]:
            record(event, now_s)

    def one_by_one(windows: ShardWindows, start: int) -> None:
        record = windows.record
        for i in range(start, min(start + 10_000, len(raws))):
            event = validate(raws[i], Position(i // 100, 0, i % 100))
            record(event, now_s)  # type: ignore[arg-type]

    def per_entry(windows: ShardWindows, start: int, privacy: Any = None) -> None:
        record_batch = windows.record_batch
        for b in range(start, min(start + 10_000, len(raws)), 100):
            record_batch(raws[b:b + 100], b // 100, 0, now_s, privacy)

    def per_entry_pseudonymised(windows: ShardWindows, start: int) -> None:
        per_entry(windows, start, pseudonymizer.wire_event)  # as the worker does

    def decode_per_entry(windows: ShardWindows, start: int) -> None:
        record_batch = windows.record_batch
        for b in range(start // 100, (start + 10_000) // 100):
            record_batch(msgpack.unpackb(payloads[b], raw=False), b, 0, now_s)

    return [("record (pre-validated events, one by one)", _run(record_only, len(events))),
            ("validate + record, one event at a time (an `Event` and a `Position` each)",
             _run(one_by_one, len(raws))),
            ("**validate + record per stream entry** (`record_batch`, as the worker does)",
             _run(per_entry, len(raws))),
            ("the same + pseudonymise user_id", _run(per_entry_pseudonymised, len(raws))),
            ("msgpack decode + validate + record per stream entry", _run(decode_per_entry, len(raws)))]


def _checkpoint_costs(events: list[Event], now_s: float) -> tuple[ShardWindows, int, float, int, float]:
    """State after the workload; a full checkpoint's bytes and CPU ms, then those of the
    incremental one after another 5,000 events (what the worker sends each second)."""
    probe = ShardWindows(**CONFIG)
    for event in events:
        probe.record(event, now_s)
    started = time.process_time()
    full = probe.checkpoint(full=True)
    full_ms = (time.process_time() - started) * 1000
    probe.checkpoint_saved(full)
    for event in events[-5_000:]:  # one more second of traffic, into the newest window
        probe.record(event, now_s)
    started = time.process_time()
    step = probe.checkpoint(full=False)
    return probe, full.size, full_ms, step.size, (time.process_time() - started) * 1000


def run() -> str:
    """Markdown section with events/s per core for each stage combination."""
    raws = workload()
    now_s = BASE_S + SPAN_S
    events: list[Event] = []
    for i, raw in enumerate(raws):
        result = validate(raw, Position(i // 100, 0, i % 100))
        assert not isinstance(result, tuple), result
        events.append(result)
    rows = _stage_rates(raws, events, now_s)
    met = rows[2][1] >= TARGET
    probe, full_size, full_ms, step_size, step_ms = _checkpoint_costs(events, now_s)
    slower = python_speed_vs_reference()
    latencies = [random.Random(3).lognormvariate(3, 1) for _ in range(200_000)]
    ours, theirs = _sketch_rates(latencies)
    lines = [
        "## Aggregation (one core)",
        "",
        f"{len(raws):,} events shaped like the seed's workload (per message: 1 attachment_monitoring "
        "with 5 fields and 3 tags, 1 vector_classification with 10 fields and 4 tags, 3 component "
        f"counts), 10 s windows over {SPAN_S:.0f} s of event time, flushed and committed every "
        f"10,000 events; best of {REPEATS}, events per CPU-second. "
        f"Target: {TARGET:,} events/s per core for validate + record (pre-decoded events).",
        "",
        "| stage | events/s per core |",
        "|---|---:|",
        *[f"| {name} | {rate:,.0f} |" for name, rate in rows],
        "",
        f"{'met' if met else '**not met**'}: validate + record at {rows[2][1]:,.0f} events/s "
        f"({1e6 / rows[2][1]:.2f} µs per event; the target is {1e6 / TARGET:.2f} µs), "
        f"{rows[2][1] / rows[1][1]:.1f}× the one-at-a-time path on the same machine. The worker hands "
        "`record_batch` one stream entry (here 100 events) at a time: an event of a series its window "
        "already holds, with field names and value types seen before, is checked and folded in place; "
        "anything else (a new series, a new field, a string value, a bad event) takes the one-by-one "
        "path, and a property test (`tests/test_window_batch.py`) holds both paths to identical results "
        "and snapshots.",
        "",
        f"Machine speed: this machine runs Python about {slower:.1f}× "
        f"{'slower' if slower >= 1 else 'faster'} than the one the targets were set on "
        "(`prometheus_client`'s cost per event, measured in this run, against the issue's reference "
        "figure; see the producer "
        f"section). Scaled by that, validate + record per stream entry would run at about "
        f"{rows[2][1] * slower:,.0f} events/s there. The verdict above is judged on this run's own figure, "
        "unscaled.",
        "",
        f"State after the run: {probe.series_count:,} series-windows in {probe.open_windows} windows; "
        f"a full checkpoint (a new owner's first) {full_size / 1024:,.0f} KiB, encoded in {full_ms:.0f} ms; "
        f"the incremental one after another 5,000 events {step_size / 1024:,.0f} KiB in {step_ms:.0f} ms "
        "(only the series changed since are encoded; the worker checkpoints every second).",
        "",
        "| percentile sketch, 200,000 adds | adds/s |",
        "|---|---:|",
        f"| consumer.aggregation.sketch.QuantileSketch (0.8% relative accuracy) | {ours:,.0f} |",
        f"| ddsketch.DDSketch (1% relative accuracy) | {theirs:,.0f} |" if theirs else
        "| ddsketch.DDSketch | not installed |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
