"""A worker keeps its shards while it works through a large read.

One read is ``TELEMETRY_READ_COUNT`` (500) entries per shard, and a busy producer puts up to
2,000 events in an entry, so one poll iteration can hold a million events. If leases and the
heartbeat are renewed only between iterations, an iteration longer than ``TELEMETRY_LEASE``
lets every lease expire and the heartbeat go stale: the other workers then see this one as dead,
take its shards and redo its work from the last checkpoint, and shards ping-pong between workers
(fencing keeps the results exact, but the fleet is slower than one worker). Processing is slowed
here deterministically (a pause per event), never measured.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from consumer.aggregation.window import ShardWindows
from consumer.core.config import WorkerConfig
from consumer.pipeline.worker import Worker
from consumer.sinks import MemorySink
from producers import keys, wire
from tests.services import RedisServer

PREFIX = "tl"
EVENTS = 300
PAUSE_S = 0.01            # 300 events x 10 ms = 3 s of processing for one read, lease 1 s


def test_a_read_longer_than_the_lease_keeps_the_shard(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    client = redis_server.client()
    start = (time.time() // 10) * 10 - 120
    events: list[wire.WireEvent] = [
        (wire.KIND_COUNT, "scale_leases", start + index * 0.01, {"user_id": f"u{index % 7}"}, {"n": 1})
        for index in range(EVENTS)]
    client.xadd(keys.stream_key(PREFIX, 0),
                wire.encode_entry("5ca1e5ca1e5ca1e5", 1, wire.encode_events(events), EVENTS))  # type: ignore[arg-type]

    real_record_batch = ShardWindows.record_batch

    def slow_record_batch(self: ShardWindows, raws: Any, *args: Any) -> Any:
        time.sleep(PAUSE_S * len(raws))
        return real_record_batch(self, raws, *args)

    monkeypatch.setattr(ShardWindows, "record_batch", slow_record_batch)
    config = WorkerConfig(redis_url=redis_server.url, stream_prefix=PREFIX, shards=1, influx_url="memory://",
                          consumer="slow-1", lease_s=1.0, block_ms=50, window_s=10.0, grace_s=0.0, drain=True)
    sink = MemorySink()
    with caplog.at_level(logging.WARNING):
        assert Worker(config, client=client, sink=sink).run() == 0

    written = sum(int(point.fields["event_count"]) for point in sink.points()
                  if point.measurement == "scale_leases")
    assert written == EVENTS                                  # exact either way (fencing)...
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []                                     # ...but the lease must not lapse
    assert client.get(keys.fence_key(PREFIX, 0)) == b"1"      # acquired once, never re-acquired
    client.close()
