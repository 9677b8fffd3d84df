"""The producer's buffer: what it holds costs the garbage collector nothing, and its bound is exact."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import fakeredis
import pytest

from producers import Telemetry, _buffer
from producers._buffer import EventBuffer
from producers._encode import WIDTH, unflatten
from producers.config import ProducerConfig
from producers.wire import KIND_COUNT, KIND_EMIT, KIND_GAUGE
from tests.test_producer_support import read_events

QUIET = {"flush_interval_ms": 3_600_000, "batch_max_events": 1_000_000}   # no wake by time or size


@pytest.fixture
def fake() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


def idle_buffer(bound: int, **settings: int) -> EventBuffer:
    """A buffer whose flusher is not started: only callers and the test act on it."""
    return EventBuffer(ProducerConfig(buffer_events=bound, **{**QUIET, **settings}), fakeredis.FakeRedis,
                       producer_id="0123456789abcdef", owns_client=True)


def emit_into(core: EventBuffer, i: int) -> None:
    """What Telemetry.emit does, with the event's number as its time and field."""
    core.append((KIND_EMIT, "ovf", float(i), None, None, {"i": i}, None))
    if not core.tick() % core.check_every:
        core.check()


def taken_numbers(core: EventBuffer) -> list[int]:
    numbers: list[int] = []
    while items := core._take(core._batch_max):
        numbers.extend(event[4]["i"] for event in unflatten(items))
    return numbers


def test_buffered_events_add_no_objects_for_the_garbage_collector(fake: fakeredis.FakeRedis,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A buffered event holding the caller's dicts must not be a tracked container: buffered events
    would reach the oldest generation and make full collections run in the caller's thread."""
    monkeypatch.setattr(_buffer, "SPILL_EVENTS", 1_000_000)   # keep all 20,000 in the caller's list
    tel = Telemetry(client=fake, buffer_events=100_000, **QUIET)
    fields = [{"intensity": i / 10, "ok": True} for i in range(20_000)]   # plain values: untracked
    tags = [{"user_id": f"u{i}", "bot_name": "elena"} for i in range(20_000)]
    bound = tel.bind("attachment_monitoring", bot_name="elena")
    tracked_before = len(gc.get_objects())
    for i in range(5_000):
        tel.emit("attachment_monitoring", fields[i], tags[i])
        tel.count("engagement", "interventions", 1, tags[i + 5_000])
        tel.observe("latency", "ms", i * 0.5, tags[i + 10_000])
        bound.emit(fields[i + 15_000], {"user_id": f"u{i}"})
    tracked_growth = len(gc.get_objects()) - tracked_before
    held = tel._core._buf
    assert tel.stats()["buffered"] == 20_000 and len(held) == 20_000 * WIDTH
    assert [item for item in held if gc.is_tracked(item)] == []   # nothing for the collector to walk
    # other threads of the test run may allocate meanwhile; one tracked object per event is 20,000
    assert tracked_growth < 2_000, f"{tracked_growth} new tracked objects for 20,000 buffered events"
    assert tel.flush(10)
    assert len(read_events(fake)) == 20_000
    tel.close(1)


@pytest.mark.parametrize(("bound", "emitted"), [(1_000, 10_000), (10_000, 25_000), (5_000, 5_000)])
def test_bound_drops_exactly_the_oldest_and_keeps_order(bound: int, emitted: int) -> None:
    """Beyond the bound the oldest go, counted exactly, whether the buffer spilled into chunks
    (bound above the spill length) or not; the rest come out oldest first."""
    core = idle_buffer(bound)
    for i in range(emitted):
        emit_into(core, i)
    stats = core.stats()
    assert (stats["emitted"], stats["dropped"], stats["buffered"]) == (emitted, emitted - bound, bound)
    assert taken_numbers(core) == list(range(emitted - bound, emitted))
    assert core.stats()["dropped"] == emitted - bound


def test_callers_keep_the_bound_between_reads() -> None:
    """The flusher may be stuck on a frozen Redis: without any stats() or take, the buffer never
    holds more than the bound plus one check interval, and what it holds is the newest."""
    core = idle_buffer(2_000)
    most = 0
    for i in range(50_000):
        emit_into(core, i)
        most = max(most, core.queued())
    assert 2_000 <= most <= 2_000 + core.check_every
    assert taken_numbers(core) == list(range(48_000, 50_000))


def test_unflatten_gives_each_kind_its_wire_form_in_order() -> None:
    fixed, call = {"bot_name": "elena"}, {"user_id": "u1"}
    items = [
        KIND_EMIT, "m", 1.0, {"a": "b"}, None, {"x": 1.0}, None,
        KIND_COUNT, "m", 2.0, None, None, "n", 3,
        KIND_EMIT, "m", 3.0, fixed, call, {"y": 2.0}, None,
        KIND_GAUGE, "m", 4.0, fixed, call, "g", 0.5,
        KIND_COUNT, "m", 5.0, None, None, ["unhashable"], 1,
        KIND_EMIT, "m", 6.0, fixed, "not tags", {"z": 1.0}, None,
    ]
    assert len(items) % WIDTH == 0
    assert unflatten(items) == [
        (KIND_EMIT, "m", 1.0, {"a": "b"}, {"x": 1.0}),
        (KIND_COUNT, "m", 2.0, None, {"n": 3}),
        (KIND_EMIT, "m", 3.0, {"bot_name": "elena", "user_id": "u1"}, {"y": 2.0}),
        (KIND_GAUGE, "m", 4.0, {"bot_name": "elena", "user_id": "u1"}, {"g": 0.5}),
        (KIND_COUNT, "m", 5.0, None, ["unhashable"], 1),          # left for the encoder to count
        (KIND_EMIT, "m", 6.0, (fixed, "not tags"), {"z": 1.0}),  # likewise
    ]
    assert fixed == {"bot_name": "elena"}   # the handle's own tags are not changed by the merge


def test_an_emit_inside_a_locked_section_of_its_own_thread_does_not_deadlock() -> None:
    """A finalizer or signal handler may emit while its thread holds the buffer's lock (say, in
    stats()): the check it reaches must give up, not wait for itself; the bound catches up."""
    core = idle_buffer(1_000)

    def emit_while_holding_the_lock() -> None:
        with core._lock:
            for i in range(3_000):
                emit_into(core, i)

    thread = threading.Thread(target=emit_while_holding_the_lock, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "emit deadlocked on the buffer's lock held by its own thread"
    assert core.queued() == 3_000   # no check could keep the bound meanwhile
    stats = core.stats()            # the next holder of the lock does
    assert (stats["dropped"], stats["buffered"]) == (2_000, 1_000)
    assert taken_numbers(core) == list(range(2_000, 3_000))


def test_threads_overflowing_the_bound_lose_only_their_oldest_counted_exactly() -> None:
    """Several threads append while their checks trim: every event is either kept or dropped,
    never split or lost uncounted, and what each thread keeps is its newest events, in order."""
    core = idle_buffer(3_000)
    per_thread, threads = 20_000, 4

    def emitter(thread_no: int) -> None:
        for i in range(per_thread):
            emit_into(core, thread_no * per_thread + i)

    workers = [threading.Thread(target=emitter, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stats = core.stats()
    total = per_thread * threads
    assert (stats["emitted"], stats["dropped"], stats["buffered"]) == (total, total - 3_000, 3_000)
    kept = taken_numbers(core)
    assert len(kept) == len(set(kept)) == 3_000
    for thread_no in range(threads):
        own = [i - thread_no * per_thread for i in kept if i // per_thread == thread_no]
        assert own == list(range(per_thread - len(own), per_thread))   # its newest, in order


def staged_entry_sizes(core: EventBuffer) -> list[int]:
    """Event counts of the entries one ``_stage`` call encodes (what the next send carries)."""
    assert core._stage()
    sizes = [count for _shard, _sequence, _fields, count in core._sender.pending]
    core._sender.pending.clear()
    return sizes


def test_takes_hold_what_one_quantum_encodes_within_limits() -> None:
    """The flusher sizes its takes by the encoding cost it measured: a cheap event gives larger
    takes, a costly one smaller, never fewer than MIN_TAKE_EVENTS nor more than a batch."""
    core = idle_buffer(100_000, shards=1, batch_max_events=2_000)
    assert core._take_events == round(_buffer.QUANTUM_S / _buffer.FIRST_COST_S)
    for _ in range(50):   # converges to the measured cost
        core._learn_cost(elapsed_s=0.001, events=4_000)   # 250 ns per event
    assert core._take_events == pytest.approx(_buffer.QUANTUM_S / 250e-9, rel=0.01)
    core._learn_cost(elapsed_s=0.01, events=1)            # a tiny take: mostly fixed cost, ignored
    assert core._take_events == pytest.approx(_buffer.QUANTUM_S / 250e-9, rel=0.01)
    for _ in range(50):
        core._learn_cost(elapsed_s=0.02, events=200)      # 100 µs per event
    assert core._take_events == _buffer.MIN_TAKE_EVENTS
    for _ in range(50):
        core._learn_cost(elapsed_s=0.0, events=200)       # below the clock's resolution
    assert core._take_events == 2_000


def test_the_flusher_sends_after_one_take_and_catches_up_in_full_batches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While little waits, one take per send (the send lets callers have the interpreter lock);
    once half the bound waits, several full batches per send."""
    core = idle_buffer(40_000, shards=1, batch_max_events=2_000)
    monkeypatch.setattr(core, "_learn_cost", lambda elapsed_s, events: None)   # keep the take size
    core._take_events = 300
    for i in range(5_000):
        emit_into(core, i)
    assert staged_entry_sizes(core) == [300]
    for i in range(25_000):
        emit_into(core, i)
    assert core.queued() >= 20_000
    sizes = staged_entry_sizes(core)   # a take stops at the end of a spilled chunk: up to a batch
    assert len(sizes) == _buffer.BATCHES_PER_SEND and all(300 < n <= 2_000 for n in sizes), sizes
    core._sender.close()
