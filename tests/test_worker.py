"""The worker loop against a real redis-server and the in-memory sink."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import msgpack
import pytest
import redis

from consumer.core.config import WorkerConfig
from consumer.core.model import Point
from consumer.pipeline.worker import Worker
from consumer.sinks import MemorySink
from producers.keys import shard_of_series, stream_key
from producers.wire import encode_entry, encode_events
from tests.services import RedisServer

BASE_S = 1_700_000_000.0          # window-aligned event times far from the wall clock...
PREFIX = "tw"


def _config(server: RedisServer, **overrides: Any) -> WorkerConfig:
    values: dict[str, Any] = {
        "redis_url": server.url, "stream_prefix": PREFIX, "shards": 2, "window_s": 10.0, "grace_s": 0.0,
        "allowed_lateness_s": 3600.0, "max_future_s": 60.0, "influx_url": "memory://", "consumer": "w1",
        "lease_s": 5.0, "block_ms": 50, "drain": True,
    }
    values.update(overrides)
    return WorkerConfig(**values)


class Producer:
    """Writes batches the way the producer library does (one entry per batch, per shard)."""

    def __init__(self, client: redis.Redis, pid: str = "a1b2c3d4e5f60718", shards: int = 2) -> None:
        self.client, self.pid, self.shards = client, pid, shards
        self.seq: dict[int, int] = {}

    def send(self, events: list[tuple[int, str, float, dict[str, str], dict[str, Any]]]) -> None:
        by_shard: dict[int, list[Any]] = {}
        for event in events:
            by_shard.setdefault(shard_of_series(event[1], event[3], self.shards), []).append(event)
        for shard, batch in sorted(by_shard.items()):
            self.seq[shard] = self.seq.get(shard, 0) + 1
            fields = encode_entry(self.pid, self.seq[shard], encode_events(batch), len(batch))
            self.client.xadd(stream_key(PREFIX, shard), fields)  # type: ignore[arg-type]


def _now_based(offset_s: float) -> float:
    return (time.time() // 10) * 10 - 600 + offset_s


def test_drain_aggregates_every_window_and_exits(redis_server: RedisServer) -> None:
    client = redis_server.client()
    producer = Producer(client)
    t0 = _now_based(0)
    producer.send([(0, "m", t0 + 1, {"bot": "a"}, {"x": 1.0, "ok": True}),
                   (0, "m", t0 + 2, {"bot": "a"}, {"x": 3.0, "ok": False}),
                   (1, "c", t0 + 3, {"bot": "b"}, {"n": 2}),
                   (0, "m", t0 + 15, {"bot": "a"}, {"x": 5.0})])
    producer.send([(1, "c", t0 + 4, {"bot": "b"}, {"n": 5})])
    sink = MemorySink()
    worker = Worker(_config(redis_server), sink=sink)
    assert worker.run() == 0
    window0, window1 = int(t0 * 1e9), int((t0 + 10) * 1e9)
    assert sink.points("m") == [
        Point("m", (("bot", "a"),), {"event_count": 2, "x": 2.0, "x_min": 1.0, "x_max": 3.0, "x_sum": 4.0,
                                     "ok": 1}, window0),
        Point("m", (("bot", "a"),), {"event_count": 1, "x": 5.0, "x_min": 5.0, "x_max": 5.0, "x_sum": 5.0},
              window1),
    ]
    assert sink.points("c") == [Point("c", (("bot", "b"),), {"event_count": 2, "n": 7}, window0)]
    assert worker.stats.totals["events_in"] == 5
    for shard in range(2):                          # everything acknowledged, checkpointed, trimmed
        assert client.xpending(stream_key(PREFIX, shard), "aggregator")["pending"] == 0
        assert client.xlen(stream_key(PREFIX, shard)) == 0
        assert client.hget(f"{PREFIX}:{{{shard}}}:state", "last_id") is not None


def _dead_letters(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(f"{PREFIX}:dlq")]


POISON = [
    # (event, expected reason)
    ((0, "m\nx", 0.0, {}, {"f": 1.0}), "invalid_name"),
    ((0, "m", 0.0, {"k": "ends\\"}, {"f": 1.0}), "invalid_name"),
    ((0, "", 0.0, {}, {"f": 1.0}), "invalid_name"),
    ((0, "m", 0.0, {}, {"f": float("nan")}), "invalid_value"),
    ((0, "m", 0.0, {}, {"f": float("-inf")}), "invalid_value"),
    ((0, "m", 0.0, {}, {"s": "x" * 1_000_000}), "invalid_value"),
    ((0, "m", 0.0, {}, {"f": "now a string"}), "type_conflict"),
    ((0, "m", 0.0, {}, {"g": 1.0, "g_min": 2.0}), "field_clash"),
    ((0, "m", -3600.0 * 24, {}, {"f": 1.0}), "too_late"),
    ((0, "m", 3600.0, {}, {"f": 1.0}), "from_future"),
    ((9, "m", 0.0, {}, {"f": 1.0}), "invalid_event"),
]


def test_each_poison_input_is_one_dead_letter_and_the_rest_arrives(redis_server: RedisServer) -> None:
    client = redis_server.client()
    producer = Producer(client, shards=1)
    t0 = _now_based(0)
    good = [(0, "m", t0 + 1, {}, {"f": 1.0}), (0, "m", t0 + 2, {"sp ace,=\"q\"": "v a,l=ue"}, {"f": 2.0})]
    poison = [(event[0], event[1], t0 + 3 + event[2], event[3], event[4]) for event, _ in POISON]
    producer.send([good[0], *poison, good[1]])
    truncated = encode_entry("badbadbadbadbad1", 1, encode_events([good[0]])[:-3], 1)
    truncated_id = client.xadd(stream_key(PREFIX, 0), truncated).decode()  # type: ignore[arg-type]
    future_format = {**encode_entry("badbadbadbadbad2", 1, encode_events([good[0]]), 1), b"v": b"99"}
    client.xadd(stream_key(PREFIX, 0), future_format)  # type: ignore[arg-type]
    sink = MemorySink()
    worker = Worker(_config(redis_server, shards=1), sink=sink)
    assert worker.run() == 0
    letters = _dead_letters(client)
    assert [letter[b"reason"].decode() for letter in letters] == [
        reason for _, reason in POISON] + ["undecodable", "unknown_version"]
    assert [int(letter[b"index"]) for letter in letters[:len(POISON)]] == list(range(1, len(POISON) + 1))
    assert letters[len(POISON)][b"entry_id"].decode() == truncated_id
    assert msgpack.unpackb(letters[0][b"payload"], raw=False)[1] == "m\nx"
    nasty = (("sp ace,=\"q\"", "v a,l=ue"),)
    assert {p.tags: p.fields["event_count"] for p in sink.points("m")} == {(): 1, nasty: 1}
    assert worker.stats.totals["dead_letters"] == len(POISON) + 2
    assert worker.stats.totals["dead_letters_invalid_name"] == 3


def test_a_repeated_batch_is_counted_once(redis_server: RedisServer) -> None:
    client = redis_server.client()
    t0 = _now_based(0)
    fields = encode_entry("feedfeedfeedfeed", 7, encode_events([(1, "c", t0 + 1, {}, {"n": 1})]), 1)
    for _ in range(3):                               # a producer retrying an XADD it saw no reply for
        client.xadd(stream_key(PREFIX, 0), fields)  # type: ignore[arg-type]
    sink = MemorySink()
    worker = Worker(_config(redis_server, shards=1), sink=sink)
    worker.run()
    assert sink.fields("c") == {"event_count": 1, "n": 1}
    assert worker.stats.totals["duplicates"] == 2


def _uninterrupted(server: RedisServer, send: Any) -> list[Point]:
    client = server.client()
    client.flushall()
    send(Producer(client))
    sink = MemorySink()
    Worker(_config(server), sink=sink).run()
    client.flushall()
    return sink.points()


def _data(points: list[Point]) -> list[Point]:
    return [point for point in points if point.measurement != "telemetry_pipeline"]


def _workload(part: int, t0: float) -> Any:

    def send(producer: Producer) -> None:
        for i in range(40 * part, 40 * (part + 1)):
            producer.send([(0, "m", t0 + i % 37, {"u": f"u{i % 3}"}, {"x": float(i), "s": f"v{i}"}),
                           (3, "lat", t0 + i % 23, {}, {"ms": float(i % 11)}),
                           (1, "c", t0 + i % 29, {"k": "v"}, {"n": i})])
    return send


def test_takeover_after_a_crash_gives_identical_points(redis_server: RedisServer) -> None:
    t0 = _now_based(0)
    expected = _uninterrupted(redis_server, lambda p: (_workload(0, t0)(p), _workload(1, t0)(p)))
    client = redis_server.client()
    producer = Producer(client)
    _workload(0, t0)(producer)
    first_sink = MemorySink()
    crashed = Worker(_config(redis_server, drain=False, checkpoint_interval_s=0.001, read_count=7,
                             consumer="crashed"), sink=first_sink)
    for _ in range(4):                               # some entries checkpointed...
        crashed.poll_once()
    crashed.config = dataclasses.replace(crashed.config, checkpoint_interval_s=3600.0)
    for _ in range(2):                               # ...some only read
        crashed.poll_once()
    assert any(client.exists(f"{PREFIX}:{{{s}}}:state") for s in range(2))
    assert sum(client.xpending(stream_key(PREFIX, s), "aggregator")["pending"] for s in range(2)) > 0
    assert first_sink.points()                       # and some points written
    for shard in range(2):                           # the crashed worker's leases expire
        client.delete(f"{PREFIX}:{{{shard}}}:lease")
    client.hdel(f"{PREFIX}:workers", "crashed")
    _workload(1, t0)(producer)
    second_sink = MemorySink()
    for batch in first_sink.batches:                 # what the crashed worker wrote stays written
        second_sink.write(batch)
    Worker(_config(redis_server, consumer="successor"), sink=second_sink).run()
    assert _data(second_sink.points()) == _data(expected)
    assert len(_data(expected)) == 18


def test_a_stale_owner_is_fenced_and_drops_the_shard(redis_server: RedisServer) -> None:
    client = redis_server.client()
    Producer(client, shards=1).send([(1, "c", _now_based(1), {}, {"n": 1})])
    stale = Worker(_config(redis_server, shards=1, drain=False, consumer="stale"), sink=MemorySink())
    stale.poll_once()
    assert list(stale.shards) == [0]
    client.delete(f"{PREFIX}:{{0}}:lease")           # paused past its lease...
    client.set(f"{PREFIX}:{{0}}:lease", "other:99")  # ...and another worker took the shard
    state = stale.shards[0]
    state.dirty = True
    stale.checkpoints.save(state)
    assert stale.shards == {}
    assert client.exists(f"{PREFIX}:{{0}}:state") == 0
    assert client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"] == 1


def test_sink_outage_keeps_windows_then_catches_up(redis_server: RedisServer) -> None:
    client = redis_server.client()
    producer = Producer(client, shards=1)
    t0 = _now_based(0)
    producer.send([(1, "c", t0 + 1, {}, {"n": 1}), (1, "c", t0 + 11, {}, {"n": 1})])
    sink = MemorySink()
    sink.down = True
    worker = Worker(_config(redis_server, shards=1, checkpoint_interval_s=0.001), sink=sink)
    runner = threading.Thread(target=worker.run)
    runner.start()

    def errors_reach(count: int) -> None:
        deadline = time.monotonic() + 30
        while worker.stats.totals["write_errors"] < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.stats.totals["write_errors"] >= count          # it is retrying...

    def pending_ids() -> list[bytes]:
        return [row["message_id"] for row in client.xpending_range(stream_key(PREFIX, 0), "aggregator",
                                                                   min="-", max="+", count=10)]

    errors_reach(3)
    # An entry read while the write is out: recorded, and not acknowledged (its state is not
    # checkpointed while the flush it would follow is unfinished), whatever happened before.
    producer.send([(1, "c", t0 + 2, {}, {"n": 1})])
    late_id = client.xrevrange(stream_key(PREFIX, 0), count=1)[0][0]
    deadline = time.monotonic() + 30
    while late_id not in pending_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    errors_reach(worker.stats.totals["write_errors"] + 2)
    assert runner.is_alive()
    assert late_id in pending_ids()                                   # ...and holds it
    assert sink.points("c") == []
    sink.down = False
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert [p.fields["n"] for p in sink.points("c")] == [2, 1]
    assert client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"] == 0


def test_stop_during_an_outage_checkpoints_and_returns(redis_server: RedisServer) -> None:
    client = redis_server.client()
    Producer(client, shards=1).send([(1, "c", _now_based(1), {}, {"n": 4})])
    sink = MemorySink()
    sink.down = True
    worker = Worker(_config(redis_server, shards=1), sink=sink)
    runner = threading.Thread(target=worker.run)
    runner.start()
    while worker.stats.totals["write_errors"] < 1:
        time.sleep(0.05)
    worker.stop()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"] == 0   # covered by the state
    sink.down = False
    successor = MemorySink()
    Worker(_config(redis_server, shards=1, consumer="w2"), sink=successor).run()
    assert successor.fields("c") == {"event_count": 1, "n": 4}


def test_redis_losing_its_data_is_reported_and_survived(redis_server: RedisServer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    client = redis_server.client()
    producer = Producer(client, shards=1)
    t0 = _now_based(0)
    producer.send([(1, "c", t0 + 1, {}, {"n": 1})])
    sink = MemorySink()
    worker = Worker(_config(redis_server, shards=1, drain=False, checkpoint_interval_s=0.001), sink=sink)
    worker.poll_once()
    worker.poll_once()
    client.flushall()                                # Redis restarted empty
    producer.send([(1, "c", t0 + 2, {}, {"n": 10})])
    worker.poll_once()                               # notices, recreates the group
    worker.config = _config(redis_server, shards=1)
    worker.ownership.next_maintenance = 0.0
    assert worker.run() == 0
    assert sink.fields("c") == {"event_count": 2, "n": 11}
    assert worker.stats.totals["redis_resets"] >= 1
    assert sum("came back without" in r.getMessage() for r in caplog.records if r.levelname == "ERROR") == 1


def test_entries_lost_to_the_length_cap_are_reported(redis_server: RedisServer) -> None:
    client = redis_server.client()
    producer = Producer(client, shards=1)
    t0 = _now_based(0)
    for i in range(5):
        producer.send([(1, "c", t0 + 1, {}, {"n": i})])
    client.xtrim(stream_key(PREFIX, 0), maxlen=2, approximate=False)
    sink = MemorySink()
    worker = Worker(_config(redis_server, shards=1), sink=sink)
    worker.run()
    assert sink.fields("c") == {"event_count": 2, "n": 7}
    assert worker.stats.totals["lost_entries"] == 3


def test_self_telemetry_points_go_through_the_sink(redis_server: RedisServer) -> None:
    client = redis_server.client()
    Producer(client, shards=1).send([(0, "m", _now_based(1), {}, {"f": float("nan")}),
                                     (1, "c", _now_based(1), {}, {"n": 1})])
    sink = MemorySink()
    Worker(_config(redis_server, shards=1, consumer="w9"), sink=sink).run()
    points = sink.points("telemetry_pipeline")
    # one point per self-telemetry window: a run that straddles a window's end writes two
    assert 1 <= len(points) <= 2, points
    assert {point.tags for point in points} == {(("shard", "0"), ("worker", "w9"))}
    names = ("events_in", "dead_letters", "dead_letters_invalid_value", "points_out")
    assert tuple(sum(point.fields[name] for point in points) for name in names) == (1, 1, 1, 1)


def test_configured_tags_are_pseudonymized_before_anything_is_stored(redis_server: RedisServer) -> None:
    client = redis_server.client()
    t0 = _now_based(0)
    Producer(client, shards=1).send([(1, "c", t0 + 1, {"user_id": "alice", "bot_name": "elena"}, {"n": 1}),
                                     (1, "c", t0 + 2, {"user_id": "alice", "bot_name": "elena"}, {"n": 2})])
    sink = MemorySink()
    Worker(_config(redis_server, shards=1, pseudonymize=("user_id",), pseudonym_key="k1"), sink=sink).run()
    [point] = sink.points("c")
    tags = dict(point.tags)
    assert tags["bot_name"] == "elena"
    assert tags["user_id"].startswith("p_") and "alice" not in tags["user_id"]
    assert point.fields == {"event_count": 2, "n": 3}


def _counting_reads(worker: Worker, after_first: Any = None) -> list[list[int]]:
    """Record the shards of each ``read_new`` call; run ``after_first`` once the first returns."""
    calls: list[list[int]] = []
    read_new = worker.source.read_new

    def counted(shards: Any, **kwargs: Any) -> Any:
        calls.append(list(shards))
        got = read_new(shards, **kwargs)
        if len(calls) == 1 and after_first is not None:
            after_first()
        return got
    worker.source.read_new = counted  # type: ignore[method-assign]
    return calls


def test_a_shard_read_to_its_end_is_written_in_the_same_poll(redis_server: RedisServer) -> None:
    """A partial read plus an empty one: its closed window goes out before the next shard's work."""
    client = redis_server.client()
    t0 = _now_based(0)                                   # a window closed by the clock long ago
    Producer(client, shards=1).send([(1, "c", t0 + 1, {"u": "a"}, {"n": 2}),
                                     (1, "c", t0 + 2, {"u": "b"}, {"n": 3})])
    sink = MemorySink()
    worker = Worker(_config(redis_server, shards=1, drain=False), sink=sink)
    calls = _counting_reads(worker)
    worker.poll_once()
    worker.wait_for_writes()
    assert calls == [[0], [0]]                           # the read, then the one that found the end
    written = sorted((p.tags, p.fields["n"]) for p in sink.points("c"))
    assert written == [((("u", "a"),), 2), ((("u", "b"),), 3)]
    assert worker.shards[0].read_ahead == []


def test_entries_arriving_meanwhile_hold_the_write_back_and_are_read_once(redis_server: RedisServer) -> None:
    """A producer still appending to a closed window: no early point to rewrite, nothing read twice."""
    client = redis_server.client()
    producer = Producer(client, shards=1)
    t0 = _now_based(0)
    producer.send([(1, "c", t0 + 1, {}, {"n": 2})])
    sink = MemorySink()
    worker = Worker(_config(redis_server, shards=1, drain=False), sink=sink)
    _counting_reads(worker, after_first=lambda: producer.send([(1, "c", t0 + 3, {}, {"n": 5})]))
    worker.poll_once()
    worker.wait_for_writes()
    assert sink.points("c") == []                        # the second read found more: not idle
    assert len(worker.shards[0].read_ahead) == 1
    worker.poll_once()                                   # the entry read ahead, then the end
    worker.wait_for_writes()
    assert [(p.fields["event_count"], p.fields["n"]) for p in sink.points("c")] == [(2, 7)]
    assert worker.stats.totals["events_in"] == 2
    assert worker.stats.totals["late_rewrites"] == 0


def test_no_extra_read_when_no_window_waits_on_it(redis_server: RedisServer) -> None:
    """The current window is not due by the clock: a partial read costs no second read."""
    client = redis_server.client()
    Producer(client, shards=1).send([(1, "c", time.time(), {}, {"n": 1})])
    worker = Worker(_config(redis_server, shards=1, drain=False, grace_s=600.0), sink=MemorySink())
    calls = _counting_reads(worker)
    worker.poll_once()
    assert calls == [[0]]
    assert worker.stats.totals["events_in"] == 1
