"""Producer unit tests against fakeredis: what lands in the streams, accounting, lifecycle."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

import producers
from producers import Telemetry
from producers.keys import shard_of_series, stream_key
from producers.wire import FORMAT_VERSION, KIND_COUNT, KIND_EMIT, KIND_GAUGE, KIND_OBSERVE
from tests.services import free_port
from tests.test_producer_support import duplicates, read_batches, read_events


@pytest.fixture
def fake() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def tel(fake: fakeredis.FakeRedis) -> Iterator[Telemetry]:
    producer = Telemetry(client=fake, flush_interval_ms=10)
    yield producer
    producer.close(timeout=1)


def test_each_method_writes_its_wire_event(tel: Telemetry, fake: fakeredis.FakeRedis) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    tel.emit("attachment_monitoring", {"emotional_intensity": 0.82, "intervention_provided": True,
                                       "dependency_count": 3, "note": "hi"},
             tags={"user_id": "u42", "bot_name": "elena"}, ts=1_700_000_000.5)
    tel.count("engagement", "interventions", 2, tags={"bot_name": "elena"}, ts=when)
    tel.gauge("trust", "trust_value", 0.5, ts=1_700_000_001)
    tel.observe("vector", "latency_ms", 12.5, tags={"bot_name": "elena"}, ts=1_700_000_002.0)
    assert tel.flush(5)
    events = sorted(read_events(fake), key=lambda e: e[2])
    assert events == sorted([
        [KIND_EMIT, "attachment_monitoring", 1_700_000_000.5, {"user_id": "u42", "bot_name": "elena"},
         {"emotional_intensity": 0.82, "intervention_provided": True, "dependency_count": 3, "note": "hi"}],
        [KIND_COUNT, "engagement", when.timestamp(), {"bot_name": "elena"}, {"interventions": 2}],
        [KIND_GAUGE, "trust", 1_700_000_001.0, {}, {"trust_value": 0.5}],
        [KIND_OBSERVE, "vector", 1_700_000_002.0, {"bot_name": "elena"}, {"latency_ms": 12.5}],
    ], key=lambda e: e[2])


def test_entry_carries_version_producer_and_increasing_sequence(tel: Telemetry,
                                                                fake: fakeredis.FakeRedis) -> None:
    for round_ in range(3):
        tel.emit("m", {"round": round_})
        assert tel.flush(5)
    batches = read_batches(fake)
    shard = shard_of_series("m", None, 4)
    assert [(s, b.version, b.producer_id, b.sequence, len(b.events)) for s, b in batches] == [
        (shard, FORMAT_VERSION, tel.producer_id, n, 1) for n in (1, 2, 3)]
    assert len(tel.producer_id) == 16 and int(tel.producer_id, 16) >= 0


def test_series_go_to_their_crc_shard_one_entry_per_shard_per_flush(fake: fakeredis.FakeRedis) -> None:
    tel = Telemetry(client=fake, flush_interval_ms=60_000, shards=4)
    tags = [{"user_id": f"u{i}", "bot_name": "elena"} for i in range(40)]
    for tag in tags:
        tel.emit("m", {"x": 1}, tags=tag)
    assert tel.flush(5)
    expected: dict[int, list[str]] = {}
    for tag in tags:
        expected.setdefault(shard_of_series("m", tag, 4), []).append(tag["user_id"])
    for shard in range(4):
        entries = fake.xrange(stream_key("telemetry", shard))
        assert len(entries) == (1 if shard in expected else 0)
    got = {s: [e[3]["user_id"] for e in b.events] for s, b in read_batches(fake)}
    assert got == expected
    tel.close(1)


def test_bind_returns_cached_handle_and_merges_tags(tel: Telemetry, fake: fakeredis.FakeRedis) -> None:
    att = tel.bind("attachment_monitoring", bot_name="elena")
    assert tel.bind("attachment_monitoring", bot_name="elena") is att
    assert tel.bind("attachment_monitoring", bot_name="marcus") is not att
    att.emit({"emotional_intensity": 0.4}, tags={"user_id": "u7", "bot_name": "override"}, ts=10.0)
    att.count("checks", ts=11.0)
    att.gauge("consecutive_days", 6, ts=12.0)
    att.observe("latency_ms", 3.0, ts=13.0)
    with att.timer("block_ms"):
        pass
    assert tel.flush(5)
    events = sorted(read_events(fake), key=lambda e: e[2])
    assert [e[:2] + e[3:] for e in events[:4]] == [
        [KIND_EMIT, "attachment_monitoring", {"bot_name": "override", "user_id": "u7"},
         {"emotional_intensity": 0.4}],
        [KIND_COUNT, "attachment_monitoring", {"bot_name": "elena"}, {"checks": 1}],
        [KIND_GAUGE, "attachment_monitoring", {"bot_name": "elena"}, {"consecutive_days": 6}],
        [KIND_OBSERVE, "attachment_monitoring", {"bot_name": "elena"}, {"latency_ms": 3.0}],
    ]
    assert events[4][0] == KIND_OBSERVE and list(events[4][4]) == ["block_ms"]
    assert events[4][4]["block_ms"] >= 0


def test_timer_as_context_manager_and_decorator(tel: Telemetry, fake: fakeredis.FakeRedis) -> None:
    @tel.timer("work", "call_ms", tags={"fn": "f"})
    def work(x: int) -> int:
        return x * 2

    assert work(21) == 42
    with pytest.raises(ZeroDivisionError), tel.timer("work", "block_ms"):
        _ = 1 / 0   # the block's time is observed even when it raises
    assert tel.flush(5)
    events = read_events(fake)
    assert sorted(((e[0], e[1], e[3], list(e[4])) for e in events), key=repr) == [
        (KIND_OBSERVE, "work", {"fn": "f"}, ["call_ms"]), (KIND_OBSERVE, "work", {}, ["block_ms"])]
    assert all(isinstance(next(iter(e[4].values())), float) for e in events)


def test_bad_input_never_raises_and_is_counted(tel: Telemetry, fake: fakeredis.FakeRedis,
                                               caplog: pytest.LogCaptureFixture) -> None:
    class Odd:
        pass

    calls: list[Any] = [
        lambda: tel.emit("m", {"nan": math.nan, "inf": math.inf}),          # encodable: worker dead-letters
        lambda: tel.emit("m", {"obj": Odd()}),                              # unencodable
        lambda: tel.emit("m", {"huge": 2 ** 80}),                           # unencodable
        lambda: tel.emit("m", None),                                        # type: ignore[arg-type]
        lambda: tel.emit(None, {"x": 1}, tags={1: 2, "k": None}),           # type: ignore[arg-type, dict-item]
        lambda: tel.emit("m", {"x": 1}, tags={"k": ["unhashable"]}),        # type: ignore[dict-item]
        lambda: tel.emit("m", {"x": 1}, tags=Odd()),                        # type: ignore[arg-type]
        lambda: tel.emit("m", {"x": 1}, ts="yesterday"),
        lambda: tel.count("m", None, Odd()),                                # type: ignore[arg-type]
        lambda: tel.gauge("m", "g", None),                                  # type: ignore[arg-type]
        lambda: tel.observe(Odd(), 3, 2 ** 90),                             # type: ignore[arg-type]
        lambda: tel.bind("m", k=Odd()).emit({"x": Odd()}),                  # type: ignore[arg-type]
        lambda: tel.emit("m", {Odd(): 1}),
    ]
    with caplog.at_level(logging.WARNING, logger="producers"):
        for call in calls:
            call()
        for call in calls:
            call()
        assert tel.flush(5)
    stats = tel.stats()
    delivered = len(read_events(fake))
    assert stats["emitted"] == 2 * len(calls)
    assert stats["errors"] > 0 and stats["dropped"] == 0 and stats["buffered"] == 0
    assert stats["sent"] == delivered
    assert stats["emitted"] == stats["sent"] + stats["errors"]
    messages = [r.getMessage() for r in caplog.records if "cannot be encoded" in r.getMessage()]
    assert messages and len(messages) == len(set(messages))   # each kind once, not once per event


def test_close_is_idempotent_and_later_events_are_dropped(fake: fakeredis.FakeRedis) -> None:
    tel = Telemetry(client=fake, flush_interval_ms=60_000)
    handle = tel.bind("m", bot_name="elena")
    tel.emit("m", {"x": 1})
    assert tel.close(5) is True
    assert tel.close(5) is True
    tel.emit("m", {"x": 2})
    handle.count("n")
    assert tel.stats() == {"emitted": 3, "sent": 1, "dropped": 2, "buffered": 0, "errors": 0,
                           "send_failures": 0}
    assert len(read_events(fake)) == 1
    assert fake.ping()   # an injected client is not closed


def test_flush_times_out_when_redis_is_unreachable() -> None:
    tel = Telemetry(redis_url=f"redis://127.0.0.1:{free_port()}/0", flush_interval_ms=10)
    tel.emit("m", {"x": 1})
    assert tel.flush(timeout=0.3) is False
    stats = tel.stats()
    assert stats["buffered"] == 1 and stats["sent"] == 0 and stats["send_failures"] >= 1
    assert tel.close(timeout=0.2) is False


def test_stats_add_up_after_concurrent_emitters(tel: Telemetry, fake: fakeredis.FakeRedis) -> None:
    import threading

    def worker(n: int) -> None:
        for i in range(5000):
            tel.count("m", "c", i, tags={"w": str(n)})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tel.flush(10)
    events = read_events(fake)
    assert len(events) == 20_000
    assert duplicates([(e[3]["w"], e[4]["c"]) for e in events]) == {}
    assert tel.stats() == {"emitted": 20_000, "sent": 20_000, "dropped": 0, "buffered": 0, "errors": 0,
                           "send_failures": 0}


def test_asyncio_tasks_emit_without_awaiting(tel: Telemetry, fake: fakeredis.FakeRedis) -> None:
    @tel.timer("handler", "latency_ms")
    async def handle(n: int) -> int:
        await asyncio.sleep(0)
        tel.emit("handler", {"n": n}, tags={"task": str(n % 3)})
        return n

    async def main() -> list[int]:
        results = await asyncio.gather(*(handle(n) for n in range(200)))
        assert await asyncio.to_thread(tel.flush, 5)
        return list(results)

    assert asyncio.run(main()) == list(range(200))
    events = read_events(fake)
    assert sorted(e[4]["n"] for e in events if "n" in e[4]) == list(range(200))
    assert len([e for e in events if "latency_ms" in e[4]]) == 200


def test_module_default_is_noop_until_configured(fake: fakeredis.FakeRedis) -> None:
    assert producers.current() is None
    early_timer = producers.timer("lib", "init_ms")   # a library grabs it at import time
    producers.emit("lib", {"x": 1})
    producers.count("lib", "c")
    assert producers.flush() is True
    assert producers.stats()["emitted"] == 0
    tel = producers.configure(client=fake, flush_interval_ms=10)
    try:
        assert producers.current() is tel
        producers.emit("lib", {"x": 2})
        producers.count("lib", "c")
        producers.gauge("lib", "g", 1.0)
        producers.observe("lib", "o", 2.0)
        with early_timer:
            pass
        assert producers.flush(5)
        assert producers.stats()["sent"] == 5
    finally:
        assert producers.close(5)
    assert producers.current() is None
    assert sorted(next(iter(e[4])) for e in read_events(fake)) == ["c", "g", "init_ms", "o", "x"]


def test_retried_xadd_resends_same_sequence_and_payload(fake: fakeredis.FakeRedis) -> None:
    class LostReplyPipeline:
        def __init__(self, inner: Any, owner: LostReplyClient) -> None:
            self._inner, self._owner = inner, owner

        def xadd(self, *args: Any, **kwargs: Any) -> None:
            self._inner.xadd(*args, **kwargs)

        def execute(self, raise_on_error: bool = True) -> list[Any]:
            result = self._inner.execute(raise_on_error=raise_on_error)
            if self._owner.lose_replies:
                self._owner.lose_replies -= 1
                raise redis.ConnectionError("connection lost before the reply")
            return list(result)

    class LostReplyClient:
        def __init__(self, inner: Any) -> None:
            self.inner, self.lose_replies = inner, 1

        def pipeline(self, transaction: bool = False) -> LostReplyPipeline:
            return LostReplyPipeline(self.inner.pipeline(transaction=transaction), self)

    client = LostReplyClient(fake)
    tel = Telemetry(client=client, flush_interval_ms=10, shards=1)
    tel.emit("m", {"i": 1})
    assert tel.flush(10)
    tel.emit("m", {"i": 2})
    assert tel.flush(10)
    raw = fake.xrange(stream_key("telemetry", 0))
    assert len(raw) == 3 and raw[0][1] == raw[1][1]          # the retry is byte-identical
    assert [b.sequence for _, b in read_batches(fake, shards=1)] == [1, 1, 2]
    assert [e[4]["i"] for e in read_events(fake, shards=1)] == [1, 2]
    assert tel.stats()["sent"] == 2 and tel.stats()["send_failures"] == 1
    tel.close(1)


def test_from_env_reads_variables(fake: fakeredis.FakeRedis) -> None:
    env = {"TELEMETRY_STREAM_PREFIX": "tp", "TELEMETRY_SHARDS": "2", "TELEMETRY_BUFFER_EVENTS": "50"}
    tel = Telemetry.from_env(env, client=fake, flush_interval_ms=10)
    assert (tel.config.prefix, tel.config.shards, tel.config.buffer_events) == ("tp", 2, 50)
    tel.emit("m", {"x": 1})
    assert tel.flush(5)
    assert [e[4] for e in read_events(fake, prefix="tp", shards=2)] == [{"x": 1}]
    tel.close(1)


def test_odd_timeouts_do_not_raise(fake: fakeredis.FakeRedis) -> None:
    tel = Telemetry(client=fake, flush_interval_ms=10)
    tel.emit("m", {"x": 1})
    assert tel.flush(None) is True                 # type: ignore[arg-type]
    assert tel.flush(float("inf")) is True
    tel.emit("m", {"x": 2})
    assert tel.flush("soon") is True               # type: ignore[arg-type]
    assert tel.close(float("nan")) is True
    assert len(read_events(fake)) == 2
