"""Writes on the writer thread: the loop reads and records while a write is out, commits only what
was written, keeps the order of a shard's writes, and a handover waits for the write first."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import pytest

from consumer.core.model import Point
from consumer.pipeline.worker import Worker
from consumer.pipeline.write_behind import PendingWrite, WriteBehind
from consumer.sinks import MemorySink, WriteResult
from producers.keys import stream_key
from tests.services import RedisServer
from tests.test_worker import PREFIX, Producer, _config, _now_based


class HeldSink(MemorySink):
    """A sink whose writes wait until :meth:`release`: a slow InfluxDB the test controls."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self._go = threading.Event()

    def write(self, points: Sequence[Point]) -> WriteResult:
        self.entered.set()
        assert self._go.wait(30), "the test never released the write"
        return super().write(points)

    def release(self) -> None:
        self._go.set()


def test_the_loop_records_the_next_entries_while_a_write_is_out(redis_server: RedisServer) -> None:
    client = redis_server.client()
    producer = Producer(client, shards=1)
    t0 = _now_based(0)
    producer.send([(1, "c", t0 + 1, {}, {"n": 1})])
    sink = HeldSink()
    worker = Worker(_config(redis_server, shards=1, drain=False, checkpoint_interval_s=0.001), sink=sink,
                    clock=lambda: t0 + 1)  # the clock in window 0: only the watermark makes a window due
    worker.poll_once()                      # window 0 is not due (a later window's event is needed)...
    producer.send([(1, "c", t0 + 11, {}, {"n": 1})])
    worker.poll_once()                      # ...now it is: handed to the thread, which holds it
    assert sink.entered.wait(10)
    producer.send([(1, "c", t0 + 12, {}, {"n": 5}), (1, "c", t0 + 2, {}, {"n": 2})])
    worker.poll_once()                      # read and recorded while the write is held
    assert worker.stats.totals["events_in"] == 4
    assert sink.points("c") == []
    state = worker.shards[0]
    assert state.windows.dirty_count == 2   # window 0 (in flight, and recorded into since), window 1
    # no checkpoint while the write is out: the entry read meanwhile is not acknowledged yet
    assert client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"] == 1
    sink.release()
    worker.wait_for_writes()
    assert [p.fields["n"] for p in sink.points("c")] == [1]   # what was collected, not what came after
    assert state.windows.dirty_count == 2   # window 0 stays dirty: an event arrived during the write
    worker.config = dataclasses.replace(worker.config, drain=True)
    worker.run()
    assert {p.time_ns: p.fields["n"] for p in sink.points("c")} == {
        round(t0 * 1e9): 3, round((t0 + 10) * 1e9): 6}
    assert client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"] == 0


def test_a_handover_waits_for_the_write_then_checkpoints(redis_server: RedisServer) -> None:
    client = redis_server.client()
    producer = Producer(client, shards=1)
    t0 = _now_based(0)
    producer.send([(1, "c", t0 + 1, {}, {"n": 1}), (1, "c", t0 + 11, {}, {"n": 1})])
    sink = HeldSink()
    worker = Worker(_config(redis_server, shards=1, drain=False), sink=sink, clock=lambda: t0 + 1)
    worker.poll_once()                           # window 0 due by the watermark, window 1 not
    assert sink.entered.wait(10)
    state = worker.shards[0]
    threading.Timer(0.3, sink.release).start()
    worker.ownership._checkpoint(state)          # what maintain() calls before giving a shard up
    assert sink.points("c") and state.windows.dirty_count == 1   # written and committed first...
    checkpoint = worker.store.load(0)
    assert checkpoint is not None                                  # ...then checkpointed so
    assert worker.ownership.new_state(0, "next", checkpoint.fields).windows.dirty_count == 1


def test_writes_are_made_in_order_and_a_shard_is_busy_until_settled() -> None:
    order: list[int] = []

    def write(job: PendingWrite[int]) -> WriteResult:
        assert job.state is not None
        order.append(job.state)
        return WriteResult(written=len(job.points))

    writes: WriteBehind[int] = WriteBehind(write, key=lambda shard: shard % 10)
    submitted = (1, 12, 3, 11, 22, 21)
    jobs = [writes.submit(shard, None, []) for shard in submitted]
    assert writes.busy(2) and writes.busy(1) and not writes.busy(4)
    for job in jobs:
        assert job.done.wait(5)
    assert writes.busy(1)                  # done, not yet settled: collecting again would repeat it
    assert writes.finished() == jobs and not writes.busy(1) and writes.pending == 0
    assert order == list(submitted)        # in the order they were handed over
    writes.close()


def test_an_error_on_the_thread_is_raised_in_the_loop() -> None:
    def write(job: PendingWrite[int]) -> WriteResult:
        raise ValueError("a bug in encoding")
    writes: WriteBehind[int] = WriteBehind(write, key=lambda shard: shard)
    job = writes.submit(0, None, [])
    assert job.done.wait(5)
    with pytest.raises(ValueError, match="a bug in encoding"):
        writes.finished()
    writes.close()
