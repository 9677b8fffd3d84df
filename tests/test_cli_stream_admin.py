"""The operator stream adapter under RESP2 and RESP3: the same typed records either way."""

from __future__ import annotations

import pytest

from consumer.admin.stream_admin import StreamAdmin
from producers.keys import dlq_key, stream_key
from tests.services import RedisServer

PREFIX = "sa"


@pytest.mark.parametrize("protocol", [2, 3])
def test_records_are_protocol_independent(redis_server: RedisServer, protocol: int) -> None:
    setup = redis_server.client()
    key0, key1 = stream_key(PREFIX, 0), stream_key(PREFIX, 1)
    ids = [setup.xadd(key0, {"n": str(i)}).decode() for i in range(4)]
    setup.xgroup_create(key0, "g", id="0")
    setup.xreadgroup("g", "c1", {key0: ">"}, count=3)
    setup.xadd(dlq_key(PREFIX), {"reason": "too_late"})
    admin = StreamAdmin(redis_server.client(protocol=protocol), prefix=PREFIX, shards=2, group="g")

    shard0, shard1 = admin.overview()
    assert (shard0.exists, shard0.length, shard0.first_id, shard0.last_id) == (True, 4, ids[0], ids[-1])
    assert shard1.exists is False and shard1.groups == ()
    group = shard0.group("g")
    assert group is not None
    assert (group.pending, group.lag_entries, group.last_delivered_id, group.oldest_pending_id) == (
        3,
        1,
        ids[2],
        ids[0],
    )
    assert [(c.name, c.pending) for c in group.consumers] == [("c1", 3)]

    last = admin.latest_ids([key0, key1])
    assert last == {key0: ids[-1], key1: "0-0"}
    assert admin.read_new(last, block_ms=10) == []
    new1 = setup.xadd(key1, {"n": "x"}).decode()
    new0 = setup.xadd(key0, {"n": "y"}).decode()
    got = admin.read_new(last, block_ms=100)
    assert sorted((key, entry.entry_id, dict(entry.fields)) for key, entry in got) == sorted(
        [(key0, new0, {b"n": b"y"}), (key1, new1, {b"n": b"x"})]
    )
    assert last == {key0: new0, key1: new1}

    assert [e.entry_id for e in admin.iter_range(key0)] == [*ids, new0]
    assert [e.entry_id for e in admin.iter_range(key0, limit=2)] == ids[:2]
    assert [e.entry_id for e in admin.recent(key0, 2)] == [new0, ids[-1]]
    counts = admin.dead_letter_counts()
    assert (counts.total, counts.by_reason, counts.complete) == (1, {"too_late": 1}, True)
    assert setup.xpending(key0, "g")["pending"] == 3  # reading changed nothing for the group


def test_iter_range_pages_through_long_streams(redis_server: RedisServer) -> None:
    client = redis_server.client()
    key = stream_key(PREFIX, 0)
    pipe = client.pipeline()
    for i in range(2500):
        pipe.xadd(key, {"i": str(i)})
    pipe.execute()
    admin = StreamAdmin(client, prefix=PREFIX, shards=1, group="g")
    assert [int(e.fields[b"i"]) for e in admin.iter_range(key)] == list(range(2500))
