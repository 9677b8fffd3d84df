"""The Redis Streams adapter against a real redis-server, under RESP2 and RESP3."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from consumer.core.errors import GroupMissing, SourceUnavailable
from consumer.pipeline.source import StreamEntry, StreamSource, next_id, parse_id
from tests.services import RedisServer


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis_server.client(protocol=request.param)
    try:
        yield conn
    finally:
        conn.close()


def _source(client: redis.Redis, consumer: str = "w1") -> StreamSource:
    return StreamSource(client, prefix="t", group="g", consumer=consumer)


def test_read_new_returns_typed_entries_in_order_per_shard(client: redis.Redis) -> None:
    source = _source(client)
    assert source.ensure_group(0) is True
    assert source.ensure_group(0) is False
    source.ensure_group(1)
    ids0 = [client.xadd("t:{0}", {"k": str(i)}).decode() for i in range(3)]
    ids1 = [client.xadd("t:{1}", {"k": "x"}).decode()]
    got = source.read_new([0, 1], count=10, block_ms=None)
    assert got == {
        0: [StreamEntry(0, ids0[i], {b"k": str(i).encode()}) for i in range(3)],
        1: [StreamEntry(1, ids1[0], {b"k": b"x"})],
    }
    assert source.read_new([0, 1], count=10, block_ms=10) == {}
    assert source.pending(0).count == 3
    assert source.pending(0).min_id == ids0[0]


def test_read_range_ack_and_trim_never_remove_unacknowledged(client: redis.Redis) -> None:
    source = _source(client)
    source.ensure_group(0)
    ids = [client.xadd("t:{0}", {"k": str(i)}).decode() for i in range(5)]
    source.read_new([0], count=3, block_ms=None)            # 3 delivered, 2 never read
    assert [e.entry_id for e in source.read_range(0, after_id=ids[0], until_id=ids[3], count=10)] == ids[1:4]
    assert source.ack(0, ids[:2]) == 2
    assert source.lowest_unacknowledged(0) == ids[2]
    assert source.trim_acknowledged(0, "t:{0}:state") == 2
    assert [e.entry_id for e in source.read_range(0, after_id="0-0", count=10)] == ids[2:]
    source.ack(0, [ids[2]])
    assert source.lowest_unacknowledged(0) == next_id(ids[2])
    assert source.trim_acknowledged(0, "t:{0}:state") == 1
    info = source.info(0)
    assert info is not None
    assert (info.length, info.first_id, info.entries_added) == (2, ids[3], 5)
    assert source.lost_entries(0, "t:{0}:state") == 0
    client.xtrim("t:{0}", maxlen=1, approximate=False)      # the hard cap strikes
    assert source.lost_entries(0, "t:{0}:state") == 1
    group = source.group_info(0)
    assert group is not None and (group.pending, group.last_delivered_id) == (0, ids[2])


def test_claim_stale_moves_entries_of_a_dead_consumer(client: redis.Redis) -> None:
    dead, alive = _source(client, "dead"), _source(client, "alive")
    dead.ensure_group(0)
    ids = [client.xadd("t:{0}", {"k": "v"}).decode() for _ in range(2)]
    dead.read_new([0], count=10, block_ms=None)
    cursor, entries = alive.claim_stale(0, min_idle_ms=0)
    assert cursor == "0-0"
    assert [e.entry_id for e in entries] == ids


def test_missing_group_and_stream_are_typed(client: redis.Redis) -> None:
    source = _source(client)
    assert source.info(5) is None
    assert source.groups(5) == []
    source.ensure_group(0)
    client.delete("t:{0}")
    with pytest.raises(GroupMissing) as caught:
        source.read_new([0], count=1, block_ms=None)
    assert caught.value.shard == 0


def test_unreachable_redis_is_source_unavailable(redis_server: RedisServer) -> None:
    conn = redis_server.client(socket_connect_timeout=0.5)
    redis_server.kill()
    assert not redis_server.is_running()
    with pytest.raises(SourceUnavailable):
        _source(conn).ensure_group(0)


def test_ids_order_numerically() -> None:
    assert parse_id("10-2") > parse_id("9-30")
    assert next_id("5-9") == "5-10"


def test_idle_consumers_with_nothing_pending_are_removed(client: redis.Redis) -> None:
    dead, alive = _source(client, "dead"), _source(client, "alive")
    dead.ensure_group(0)
    entry = client.xadd("t:{0}", {"k": "v"}).decode()
    dead.read_new([0], count=10, block_ms=None)
    assert alive.remove_idle_consumers(0, min_idle_ms=0) == []      # still has a pending entry
    alive.ack(0, [entry])                                           # its successor acknowledged it
    alive.read_new([0], count=10, block_ms=None)
    assert alive.remove_idle_consumers(0, min_idle_ms=0) == ["dead"]
    names = [c["name"] for c in client.xinfo_consumers("t:{0}", "g")]
    assert b"dead" not in names and "dead" not in names
