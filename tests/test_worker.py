"""The worker loop against a real redis-server and the in-memory sink."""

from __future__ import annotations

import time
from typing import Any

import redis

from consumer.config import WorkerConfig
from consumer.model import Point
from consumer.sinks import MemorySink
from consumer.worker import Worker
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
