"""Faults around the worker: Redis restarts under it, the memory budget pauses reading."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from consumer.pipeline.worker import Worker
from consumer.sinks import MemorySink
from producers.keys import stream_key
from tests.services import RedisServer
from tests.test_worker import PREFIX, Producer, _config, _now_based

ROOT = Path(__file__).resolve().parents[1]


def _wait_for(predicate: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_reconnects_after_a_redis_restart(redis_server: RedisServer) -> None:
    producer_client = redis_server.client()
    producer = Producer(producer_client, shards=1)
    t0 = _now_based(0)
    producer.send([(1, "c", t0 + 1, {}, {"n": 1})])
    sink = MemorySink()
    worker = Worker(_config(redis_server, shards=1, drain=False, checkpoint_interval_s=0.01, lease_s=3.0),
                    sink=sink)
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        _wait_for(lambda: worker.stats.totals["events_in"] == 1, "the first event")
        redis_server.kill()
        assert not redis_server.is_running()           # the fault happened
        time.sleep(0.5)                                  # the worker sees connection errors meanwhile
        redis_server.start()                             # same port, data back from the append-only file
        producer_client = redis_server.client()
        producer.client = producer_client
        producer.send([(1, "c", t0 + 2, {}, {"n": 10})])
        _wait_for(lambda: worker.stats.totals["events_in"] == 2, "the event sent after the restart")
        _wait_for(lambda: sink.points("c") and sink.points("c")[0].fields["n"] == 11, "the rewritten point")
    finally:
        worker.stop()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert sink.fields("c") == {"event_count": 2, "n": 11}
    assert worker.stats.totals["redis_resets"] == 0      # the data survived: nothing to report
    assert producer_client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"] == 0


def test_reading_pauses_at_the_memory_budget_and_pending_windows_are_written_early(
        redis_server: RedisServer) -> None:
    client = redis_server.client()
    producer = Producer(client, shards=1)
    t0 = _now_based(0)
    producer.send([(1, "c", t0 + 1, {"u": f"u{i}"}, {"n": 1}) for i in range(5)])
    sink = MemorySink()
    worker = Worker(_config(redis_server, shards=1, drain=False, max_open_series=3, grace_s=3600.0,
                            allowed_lateness_s=7200.0), sink=sink)
    worker.poll_once()                                   # 5 pending series-windows, none due for an hour
    assert worker.shards[0].windows.dirty_count == 5
    assert sink.points("c") == []
    producer.send([(1, "c", t0 + 2, {"u": "new"}, {"n": 1})])
    worker.poll_once()                                   # over the budget: no read, everything written
    assert worker.shards[0].paused
    assert worker.stats.totals["events_in"] == 5
    assert client.xinfo_groups(stream_key(PREFIX, 0))[0]["lag"] == 1      # the new entry waits in Redis
    assert len(sink.points("c")) == 5
    worker.poll_once()                                   # below the budget again: reading resumes
    assert not worker.shards[0].paused
    assert worker.stats.totals["events_in"] == 6


def test_telemetry_consume_drain_exits_zero(redis_server: RedisServer) -> None:
    client = redis_server.client()
    Producer(client, shards=1).send([(1, "c", _now_based(1), {}, {"n": 1})])
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "telemetry"), "consume", "--drain", "--redis-url", redis_server.url,
         "--stream-prefix", PREFIX, "--shards", "1", "--influx-url", "memory://", "--window", "10s"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "events_in=1" in done.stderr
    assert client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"] == 0
