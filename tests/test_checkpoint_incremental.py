"""Incremental checkpoints against a real redis-server: exact restores, small writes, fencing.

A checkpoint sends only what changed (:mod:`consumer.aggregation.window_log`,
:mod:`consumer.pipeline.dedupe`); these
tests prove a restore from it is exactly the state that was saved (random event sequences,
crashes between checkpoints, replays, as the worker does), that a small change at 10,000 series
writes a few KiB, that segments stay bounded, that a stale owner is still refused, and that a
checkpoint written by the single-blob layout before still restores.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import msgpack
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.checkpoint_cost import BASE_S, CONFIG, populated, record_users
from consumer.aggregation.window import Flush, ShardWindows
from consumer.aggregation.window_log import HEAD, LOG_VERSION, MAX_SEGMENTS, SEGMENT, segment_name
from consumer.aggregation.window_state import decode_series, decode_window, encode_series, unpack_snapshot
from consumer.core.checkpoint import CheckpointStore, StateWrite
from consumer.core.errors import Fenced
from consumer.pipeline.dedupe import Dedupe
from consumer.pipeline.lease import LeaseManager
from producers.wire import KIND_COUNT, KIND_EMIT, KIND_OBSERVE
from tests.services import RedisServer
from tests.stream_setup import delivered_entries

_prefixes = itertools.count()
SMALL = {"window_s": 1.0, "grace_s": 0.0, "allowed_lateness_s": 5.0, "max_future_s": 60.0, "max_series": 6,
         "raw_measurements": ("audit",)}


def canonical(windows: ShardWindows) -> Any:
    """The whole state, series in key order (a restore may hold them in another order)."""
    state = unpack_snapshot(windows.snapshot())
    blobs = state.pop("win")
    decoded = [decode_window(blob) for blob in blobs]
    return state, [(w.index, w.flushed, sorted((encode_series(s) for s in w.series.values()), key=repr))
                   for w in decoded]


class Saver:
    """A shard owner checkpointing ``windows`` and ``dedupe`` the way the worker does."""

    def __init__(self, client: redis.Redis[bytes], prefix: str, lease: str) -> None:
        self.store = CheckpointStore(client, prefix=prefix, group="g")
        self.lease = lease
        self.full = True
        self.sizes: list[int] = []

    def save(self, windows: ShardWindows, dedupe: Dedupe, last_id: str = "0-1") -> StateWrite:
        log = windows.checkpoint(full=self.full)
        fields, deleted = dedupe.changes(full=self.full)
        write = StateWrite({**log.fields, **fields}, log.deleted + deleted, self.full)
        self.store.save(0, lease_value=self.lease, last_id=last_id, write=write, ack_ids=[])
        windows.checkpoint_saved(log)
        dedupe.saved()
        self.full = False
        self.sizes.append(write.size)
        return write

    def restore(self, config: dict[str, Any]) -> tuple[ShardWindows, Dedupe]:
        checkpoint = self.store.load(0)
        fields = checkpoint.fields if checkpoint is not None else {}   # none yet: a fresh shard
        return ShardWindows.restore_fields(fields, **config), Dedupe.restore_fields(fields, ttl_s=5)


def _owner(redis_server: RedisServer) -> tuple[redis.Redis[bytes], Saver]:
    client = redis_server.client()
    prefix = f"p{next(_prefixes)}"
    delivered_entries(client, prefix=prefix)
    lease = LeaseManager(client, prefix=prefix, worker_id="w1", lease_s=60).acquire(0)
    assert lease is not None
    return client, Saver(client, prefix, lease)


_event = st.tuples(
    st.sampled_from([KIND_EMIT, KIND_EMIT, KIND_COUNT, KIND_OBSERVE]),
    st.sampled_from(["m", "attachment_monitoring", "audit"]),
    st.integers(-24, 2).map(lambda quarter: quarter / 4),                       # event time - clock
    st.sampled_from(["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"]),
    st.sampled_from(["elena", "marcus"]),
    st.one_of(st.integers(-50, 50), st.floats(-1e3, 1e3, allow_nan=False), st.booleans()),
)
_op = st.one_of(
    st.tuples(st.just("events"), st.lists(_event, min_size=1, max_size=6), st.sampled_from([0.0, 0.5, 2.0])),
    st.tuples(st.just("flush"), st.booleans()),      # the sink takes it (commit) or fails
    st.just(("checkpoint",)),
    st.just(("crash",)),                             # restore from Redis, replay what came after
)


def _wire(event: tuple[Any, ...], now: float) -> list[Any]:
    kind, name, offset, user, bot, value = event
    field = "emotional_intensity" if name == "attachment_monitoring" else "v"
    if kind != KIND_EMIT:
        value = abs(int(value)) + 1 if kind == KIND_COUNT else float(value)
    return [kind, name, now + offset, {"user_id": user, "bot_name": bot}, {field: value}]


class Run:
    """One shard's windows, dedupe and sink, fed ops; optionally checkpointing and crashing."""

    def __init__(self, saver: Saver | None) -> None:
        self.windows, self.dedupe = ShardWindows(**SMALL), Dedupe(ttl_s=5)
        self.sink: dict[Any, Any] = {}
        self.saver = saver
        self.since: list[tuple[list[list[Any]], int, float]] = []   # entries after the checkpoint
        self.at_checkpoint: Any = canonical(self.windows)

    def apply(self, op: tuple[Any, ...], entry_ms: int, now: float) -> None:
        if op[0] == "events":
            batch = [_wire(event, now) for event in op[1]]
            self._record(batch, entry_ms, now)
            self.since.append((batch, entry_ms, now))
        elif op[0] == "flush":
            flush = self.windows.collect_due(now, idle=True)
            if op[1]:
                self._write(flush)
        elif self.saver is not None and op[0] == "checkpoint":
            self.saver.save(self.windows, self.dedupe)
            self.since, self.at_checkpoint = [], canonical(self.windows)
        elif self.saver is not None and op[0] == "crash":
            self.windows, self.dedupe = self.saver.restore(SMALL)
            assert canonical(self.windows) == self.at_checkpoint
            self.saver.full = True                    # a new owner's first checkpoint
            for batch, ms, at in self.since:          # the entries after the checkpoint, re-read
                self._record(batch, ms, at)

    def _record(self, batch: list[list[Any]], entry_ms: int, now: float) -> None:
        if self.dedupe.admit("p", entry_ms, entry_ms):
            self.windows.record_batch(batch, entry_ms, 0, now)

    def _write(self, flush: Flush) -> None:
        for point in flush.points:
            self.sink[(point.measurement, point.tags, point.time_ns)] = point.fields
        self.windows.commit(flush)

    def drained(self) -> dict[Any, Any]:
        self._write(self.windows.collect_all())
        return self.sink


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=40))
def test_checkpoints_and_crashes_give_the_outputs_of_a_run_without_them(
        redis_server: RedisServer, ops: list[tuple[Any, ...]]) -> None:
    _, saver = _owner(redis_server)
    steady, crashing = Run(None), Run(saver)
    now = BASE_S
    for step, op in enumerate(ops):
        if op[0] == "events":
            now += op[2]
        for run in (steady, crashing):
            run.apply(op, 1_000 + step, now)
    assert crashing.drained() == steady.drained()


def test_a_series_written_since_the_last_checkpoint_is_saved_as_written(redis_server: RedisServer) -> None:
    _, saver = _owner(redis_server)
    windows, dedupe = ShardWindows(**SMALL), Dedupe(ttl_s=5)
    windows.record_batch([[KIND_EMIT, "m", BASE_S, {"user_id": "u1"}, {"v": 1.0}]], 1, 0, BASE_S)
    saver.save(windows, dedupe)
    windows.commit(windows.collect_due(BASE_S + 2, idle=True))   # only its committed version changes
    assert windows.dirty_count == 0
    write = saver.save(windows, dedupe)
    restored, _ = saver.restore(SMALL)
    assert restored.dirty_count == 0 and canonical(restored) == canonical(windows)
    assert not [name for name in write.fields if name.startswith(SEGMENT)]   # a clean mark, no record


def _two_users_saved(saver: Saver) -> tuple[ShardWindows, Dedupe, Flush]:
    """u1 and u2 in one saved segment, both dirty; the flush that would write them."""
    windows, dedupe = ShardWindows(**SMALL), Dedupe(ttl_s=5)
    windows.record_batch([[KIND_EMIT, "m", BASE_S, {"user_id": user}, {"v": 1.0}] for user in ("u1", "u2")],
                         1, 0, BASE_S)
    saver.save(windows, dedupe)
    return windows, dedupe, windows.collect_due(BASE_S + 2, idle=True)


def test_a_commit_of_a_whole_segment_is_a_clean_mark_and_of_part_of_one_a_record(
        redis_server: RedisServer) -> None:
    _, saver = _owner(redis_server)
    windows, dedupe, flush = _two_users_saved(saver)
    part = Flush()
    part._marks = [mark for mark in flush._marks if mark[1].key[1] == (("user_id", "u1"),)]
    windows.commit(part)                               # u1 written, u2 still dirty in the same segment
    write = saver.save(windows, dedupe)
    assert [name for name in write.fields if name.startswith(SEGMENT)] == [segment_name(int(BASE_S), 1)]  # u1
    restored, _ = saver.restore(SMALL)
    assert restored.dirty_count == 1 and canonical(restored) == canonical(windows)
    windows.commit(flush)                              # now u2 too: segment 0 holds only u2, clean
    write = saver.save(windows, dedupe)
    assert not [name for name in write.fields if name.startswith(SEGMENT)]
    restored, _ = saver.restore(SMALL)
    assert restored.dirty_count == 0 and canonical(restored) == canonical(windows)


def test_a_manifest_of_the_format_before_clean_marks_still_restores(redis_server: RedisServer) -> None:
    client, saver = _owner(redis_server)
    _two_users_saved(saver)
    expected = canonical(saver.restore(SMALL)[0])
    head = msgpack.unpackb(client.hget(saver.store.key(0), HEAD), raw=False, strict_map_key=False)
    assert head["v"] == LOG_VERSION and all(len(window) == 4 for window in head["win"])
    head["v"], head["win"] = 5, [window[:3] for window in head["win"]]
    client.hset(saver.store.key(0), HEAD, msgpack.packb(head, use_bin_type=True))
    restored, _ = saver.restore(SMALL)
    assert restored.dirty_count == 2 and canonical(restored) == expected


def test_a_small_change_at_10k_series_writes_a_few_kib(redis_server: RedisServer) -> None:
    _, saver = _owner(redis_server)
    windows, dedupe = populated(10_000), Dedupe(ttl_s=60)
    dedupe.admit("producer-a", 1, 1)
    first = saver.save(windows, dedupe)
    record_users(windows, [17, 4_242, 9_999], ts=BASE_S + 2.0, entry_ms=2, rng=random.Random(3))
    second = saver.save(windows, dedupe)
    assert first.size > 300_000                     # everything, once
    assert second.size < 3_000                      # three series, the manifest, one producer
    assert set(second.fields) == {"wh", "dh", "ws:170000000:1"}
    restored, _ = saver.restore(CONFIG)
    assert canonical(restored) == canonical(windows)


def test_segments_stay_bounded_and_evicted_windows_are_deleted(redis_server: RedisServer) -> None:
    client, saver = _owner(redis_server)
    config = {**CONFIG, "max_series": 10_000}
    windows, dedupe, rng = ShardWindows(**config), Dedupe(ttl_s=60), random.Random(5)
    record_users(windows, range(500), ts=BASE_S + 1, entry_ms=1, rng=rng)
    for second in range(60):                         # a late event or two each second, then the next window
        record_users(windows, rng.sample(range(500), 2), ts=BASE_S + 1, entry_ms=10 + second, rng=rng)
        saver.save(windows, dedupe)
        segments = [name for name in client.hkeys(saver.store.key(0)) if name.startswith(SEGMENT.encode())]
        assert len(segments) <= MAX_SEGMENTS
    assert max(saver.sizes[1:]) < 0.5 * saver.sizes[0]   # a merge costs less than the window
    record_users(windows, range(3), ts=BASE_S + 400, entry_ms=100, rng=rng)   # window 0 falls out of lateness
    windows.commit(windows.collect_all())
    windows.evict()
    saver.save(windows, dedupe)
    names = {name.decode() for name in client.hkeys(saver.store.key(0))}
    assert not any(name.startswith("ws:170000000:") for name in names)
    restored, _ = saver.restore(config)
    assert canonical(restored) == canonical(windows) and restored.open_windows == 1


def test_dedupe_sends_only_producers_that_sent_and_deletes_expired_ones(redis_server: RedisServer) -> None:
    _, saver = _owner(redis_server)
    windows, dedupe = ShardWindows(**CONFIG), Dedupe(ttl_s=10)
    for n in range(1_000):
        dedupe.admit(f"producer-{n:04d}", 1, 1_000)
    saver.save(windows, dedupe)
    dedupe.admit("producer-0007", 2, 20_000)
    dedupe.expire()                                  # all but producer-0007 silent for 10 s of stream time
    write = saver.save(windows, dedupe)
    assert set(write.fields) == {"wh", "dh", "dp:producer-0007"} and len(write.deleted) == 999
    _, restored = saver.restore(CONFIG)
    assert len(restored) == 1 and not restored.admit("producer-0007", 2, 20_001)


def test_a_stale_owner_is_fenced_and_changes_nothing(redis_server: RedisServer) -> None:
    client, saver = _owner(redis_server)
    windows, dedupe = populated(200), Dedupe(ttl_s=60)
    saver.save(windows, dedupe)
    before = client.hgetall(saver.store.key(0))
    client.delete(f"{saver.store.prefix}:{{0}}:lease")
    successor = LeaseManager(client, prefix=saver.store.prefix, worker_id="w2", lease_s=60).acquire(0)
    assert successor is not None
    record_users(windows, [1, 2], ts=BASE_S + 2, entry_ms=5, rng=random.Random(1))
    for full in (False, True):
        saver.full = full
        with pytest.raises(Fenced):
            saver.save(windows, dedupe, last_id="9-9")
    assert client.hgetall(saver.store.key(0)) == before
    assert client.xpending(f"{saver.store.prefix}:{{0}}", "g")["pending"] == 1


def test_a_checkpoint_of_the_single_blob_layout_restores_and_is_replaced(redis_server: RedisServer) -> None:
    client, saver = _owner(redis_server)
    windows = ShardWindows(**SMALL)
    for i, user in enumerate(["u1", "u2", "u3"]):
        windows.record_batch([[KIND_EMIT, "m", BASE_S + i, {"user_id": user}, {"v": 1.5 * i}]], 100 + i, 0,
                             BASE_S + 3)
    windows.commit(windows.collect_due(BASE_S + 2.5, idle=True))
    windows.record_batch([[KIND_EMIT, "audit", BASE_S + i, {"user_id": "u1"}, {"v": i}] for i in range(3)],
                         103, 0, BASE_S + 3)                               # raw points, pending (v4)
    dedupe = Dedupe(ttl_s=5)
    dedupe.admit("producer-a", 7, 102)
    # exactly what the checkpoint script of the single-blob layout wrote
    client.hset(saver.store.key(0), mapping={"last_id": "102-0", "windows": windows.snapshot(),
                                             "dedupe": dedupe.snapshot(), "owner": saver.lease, "trimmed": 4})
    restored, restored_dedupe = saver.restore(SMALL)
    assert restored.snapshot() == windows.snapshot() and restored.raw_pending == 3
    assert not restored_dedupe.admit("producer-a", 7, 103)
    saver.save(restored, restored_dedupe, last_id="102-0")    # the new owner's first: full
    names = set(client.hkeys(saver.store.key(0)))
    assert b"windows" not in names and b"dedupe" not in names and b"wh" in names
    assert client.hget(saver.store.key(0), "trimmed") == b"4"  # not state: kept
    again, again_dedupe = saver.restore(SMALL)
    assert canonical(again) == canonical(windows)
    assert msgpack.unpackb(client.hget(saver.store.key(0), "dh")) == 102
    assert not again_dedupe.admit("producer-a", 7, 104)


def test_a_series_record_with_flat_tags_from_before_still_decodes() -> None:
    windows = populated(3)
    window = next(iter(windows._windows.values()))
    for series in window.series.values():
        record = msgpack.unpackb(msgpack.packb(encode_series(series)), raw=False)
        flat = [*record[:1], [item for pair in series.key[1] for item in pair], *record[2:]]
        for form in (record, flat):
            decoded = decode_series(form)
            assert (decoded.key, decoded.shape, decoded.acc) == (series.key, series.shape, series.acc)
            assert (decoded.count, decoded.version, decoded.committed) == (
                series.count, series.version, series.committed)
