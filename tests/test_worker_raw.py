"""Raw mode through the worker loop, on fakeredis and the in-memory sink.

Dedupe, dead letters, the memory budget, a sink outage and a crash between the write and the
checkpoint: each raw input point ends up in the sink exactly once, as itself.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import fakeredis
import msgpack
import pytest

from consumer.core.config import WorkerConfig
from consumer.core.model import Point
from consumer.pipeline.worker import Worker
from consumer.sinks import MemorySink
from producers.keys import stream_key
from producers.wire import KIND_EMIT, KIND_POINT, encode_entry, encode_events
from tests.test_worker import PREFIX, Producer

RAW = "audit_events"


def _t0_ns() -> int:
    """Ten minutes ago, at the start of a 10 s window (so t0 + 1 s and t0 + 2 s share one)."""
    return int(time.time() - 600) // 10 * 10 * 1_000_000_000


def _config(**overrides: Any) -> WorkerConfig:
    values: dict[str, Any] = {
        "redis_url": "redis://fakeredis", "stream_prefix": PREFIX, "shards": 2, "window_s": 10.0,
        "grace_s": 0.0, "allowed_lateness_s": 3600.0, "max_future_s": 60.0, "influx_url": "memory://",
        "consumer": "w1", "lease_s": 5.0, "block_ms": 50, "drain": True, "raw_measurements": ("audit_*",),
    }
    values.update(overrides)
    return WorkerConfig(**values)


def _points(t0: int, first: int, count: int) -> list[Any]:
    return [(KIND_POINT, RAW, t0 + i, {"user": f"u{i % 3}"}, {"seq": i, "score": i / 4, "ok": i % 2 == 0,
                                                                "note": f"n{i}"})
            for i in range(first, first + count)]


def _expected(t0: int, count: int) -> list[Point]:
    """What the points of :func:`_points` are in InfluxDB: themselves."""
    return sorted((Point(RAW, tuple(tags.items()), fields, time_ns)
                   for _kind, _name, time_ns, tags, fields in _points(t0, 0, count)), key=repr)


def _raw(sink: MemorySink) -> list[Point]:
    return sorted(sink.points(RAW), key=repr)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_raw_points_arrive_one_for_one_beside_aggregated_ones(client: fakeredis.FakeRedis) -> None:
    t0 = _t0_ns()
    producer = Producer(client)
    producer.send(_points(t0, 0, 30))
    producer.send([(KIND_EMIT, "cpu", t0 / 1e9 + 1, {}, {"x": 1.0}),
                   (KIND_EMIT, "cpu", t0 / 1e9 + 2, {}, {"x": 3.0})])
    sink = MemorySink()
    worker = Worker(_config(), client=client, sink=sink)
    assert worker.run() == 0
    assert _raw(sink) == _expected(t0, 30)
    (cpu,) = sink.points("cpu")
    assert cpu.fields["event_count"] == 2 and cpu.fields["x"] == 2.0
    assert worker.stats.totals["events_in"] == 32
    assert all(state.windows.raw_pending == 0 for state in worker.shards.values())


def test_a_repeated_batch_of_raw_points_is_written_once(client: fakeredis.FakeRedis) -> None:
    t0 = _t0_ns()
    fields = encode_entry("feedfeedfeedfeed", 7, encode_events(_points(t0, 0, 5)), 5)
    for _ in range(3):                                   # a producer retrying an XADD
        client.xadd(stream_key(PREFIX, 0), fields)  # type: ignore[arg-type]
    sink = MemorySink()
    worker = Worker(_config(shards=1), client=client, sink=sink)
    worker.run()
    assert worker.stats.totals["duplicates"] == 2
    assert sum(len(batch) for batch in sink.batches if batch[0].measurement == RAW) == 5  # written once
    assert _raw(sink) == _expected(t0, 5)


def test_a_bad_raw_point_is_a_dead_letter_with_its_payload(client: fakeredis.FakeRedis) -> None:
    t0 = _t0_ns()
    good = _points(t0, 0, 2)
    conflict = (KIND_POINT, RAW, t0 + 5, {"user": "u0"}, {"seq": 1.5})      # seq was an int
    nan = (KIND_POINT, RAW, t0 + 6, {"user": "u0"}, {"score": float("nan")})
    Producer(client, shards=1).send([good[0], conflict, nan, good[1]])
    sink = MemorySink()
    Worker(_config(shards=1), client=client, sink=sink).run()
    assert _raw(sink) == _expected(t0, 2)
    letters = [fields for _id, fields in client.xrange(f"{PREFIX}:dlq")]
    assert [(f[b"reason"], f[b"index"]) for f in letters] == [(b"type_conflict", b"1"),
                                                              (b"invalid_value", b"2")]
    assert msgpack.unpackb(letters[0][b"payload"]) == list(conflict)   # the point as sent (int ns)


def test_pending_raw_points_pause_reading_at_the_memory_budget(client: fakeredis.FakeRedis) -> None:
    t0 = _t0_ns()
    producer = Producer(client, shards=1)
    producer.send(_points(t0, 0, 5))
    sink = MemorySink()
    sink.down = True
    worker = Worker(_config(shards=1, drain=False, max_open_series=3), client=client, sink=sink)
    write = worker._write
    # while the sink is down, a poll's write gives up at once (as at a stop) instead of retrying
    worker._write = lambda state, points, tally: None if sink.down else write(state, points, tally)  # type: ignore[method-assign]

    def poll() -> None:
        worker.poll_once()
        worker.wait_for_writes()

    poll()
    assert worker.shards[0].windows.raw_pending == 5        # not written: the sink is down
    producer.send(_points(t0, 5, 1))
    poll()
    assert worker.shards[0].paused                          # over the budget: the new entry waits
    assert worker.stats.totals["events_in"] == 5
    assert client.xinfo_groups(stream_key(PREFIX, 0))[0]["lag"] == 1
    sink.down = False
    poll()                                                  # written: below the budget again
    assert worker.shards[0].windows.raw_pending == 0
    poll()
    assert not worker.shards[0].paused
    assert worker.stats.totals["events_in"] == 6
    poll()
    assert _raw(sink) == _expected(t0, 6)


def test_a_crash_after_the_write_before_the_checkpoint_rewrites_and_doubles_nothing(
        client: fakeredis.FakeRedis) -> None:
    t0 = _t0_ns()
    producer = Producer(client)
    for part in range(6):
        producer.send(_points(t0, part * 10, 10))
    first_sink = MemorySink()
    crashed = Worker(_config(drain=False, checkpoint_interval_s=0.001, read_count=2, consumer="crashed"),
                     client=client, sink=first_sink)
    for _ in range(2):                                      # some entries checkpointed...
        crashed.poll_once()
    crashed.config = dataclasses.replace(crashed.config, checkpoint_interval_s=3600.0)
    for _ in range(2):                                      # ...some written, never checkpointed
        crashed.poll_once()
    unacked = sum(client.xpending(stream_key(PREFIX, s), "aggregator")["pending"] for s in range(2))
    assert unacked > 0
    written_first = {(p.tags, p.time_ns) for batch in first_sink.batches for p in batch
                     if p.measurement == RAW}
    for shard in range(2):                                  # the crashed worker's leases expire
        client.delete(f"{PREFIX}:{{{shard}}}:lease")
    client.hdel(f"{PREFIX}:workers", "crashed")
    second_sink = MemorySink()
    for batch in first_sink.batches:                        # what it wrote stays written
        second_sink.write(batch)
    successor = Worker(_config(consumer="successor"), client=client, sink=second_sink)
    successor.run()
    rewritten = {(p.tags, p.time_ns) for batch in second_sink.batches[len(first_sink.batches):]
                 for p in batch if p.measurement == RAW}
    assert written_first & rewritten                        # the fault happened: some were written twice
    assert _raw(second_sink) == _expected(t0, 60)            # and are stored once, as sent


def test_a_checkpoint_taken_while_the_sink_is_down_holds_the_pending_raw_points(
        client: fakeredis.FakeRedis) -> None:
    t0 = _t0_ns()
    Producer(client, shards=1).send(_points(t0, 0, 8))
    down = MemorySink()
    down.down = True
    crashed = Worker(_config(shards=1, drain=False, checkpoint_interval_s=0.001, consumer="crashed"),
                     client=client, sink=down)
    write = crashed._write
    crashed._write = lambda state, points, tally: None if down.down else write(state, points, tally)  # type: ignore[method-assign]
    for _ in range(3):
        crashed.poll_once()
        crashed.wait_for_writes()
    assert crashed.shards[0].windows.raw_pending == 8
    assert client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"] == 0   # acknowledged...
    assert down.points() == []                                                       # ...not written
    client.delete(f"{PREFIX}:{{0}}:lease")
    client.hdel(f"{PREFIX}:workers", "crashed")
    sink = MemorySink()
    Worker(_config(shards=1, consumer="successor"), client=client, sink=sink).run()
    assert _raw(sink) == _expected(t0, 8)


def test_a_pattern_naming_a_catalogued_measurement_is_reported_at_start(
        client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker(_config(shards=1, raw_measurements=("attachment_monitoring", "audit_*")), client=client,
                    sink=MemorySink())
    with caplog.at_level("WARNING", logger="consumer.pipeline.worker"):
        assert worker.run() == 0
    warned = [r.getMessage() for r in caplog.records if "TELEMETRY_RAW_MEASUREMENTS" in r.getMessage()]
    assert len(warned) == 1 and "'attachment_monitoring'" in warned[0] and "aggregate" in warned[0]
