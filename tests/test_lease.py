"""Shard leases, fencing tokens and rendezvous assignment against a real redis-server."""

from __future__ import annotations

import pytest

from consumer.core.checkpoint import CheckpointStore, StateWrite
from consumer.core.errors import Fenced
from consumer.pipeline.lease import LeaseManager, assign, rendezvous_owner
from tests.services import RedisServer
from tests.stream_setup import delivered_entries


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_owner_per_shard_and_tokens_increase(redis_server: RedisServer) -> None:
    client = redis_server.client()
    first = LeaseManager(client, prefix="t", worker_id="w1", lease_s=5)
    second = LeaseManager(client, prefix="t", worker_id="w2", lease_s=5)
    assert first.acquire(0) == "w1:1"
    assert second.acquire(0) is None
    assert first.acquire(0) == "w1:1"          # re-acquiring our own lease keeps the token
    first.release(0)
    assert first.held() == []
    assert second.acquire(0) == "w2:2"
    assert second.token(0) == 2
    assert first.renew(0) is False


def test_expired_lease_is_taken_over_and_the_stale_owner_is_fenced(redis_server: RedisServer) -> None:
    client = redis_server.client()
    [entry] = delivered_entries(client)
    store = CheckpointStore(client, prefix="t", group="g")
    stale = LeaseManager(client, prefix="t", worker_id="w1", lease_s=0.2)
    stale_value = stale.acquire(0)
    assert stale_value is not None
    client.delete("t:{0}:lease")           # the owner paused past its lease: Redis expired it
    successor = LeaseManager(client, prefix="t", worker_id="w2", lease_s=5)
    new_value = successor.acquire(0)
    assert new_value == "w2:2"
    store.save(0, lease_value=new_value, last_id="0-0", write=StateWrite({"wh": b"new"}), ack_ids=[])
    with pytest.raises(Fenced):
        store.save(0, lease_value=stale_value, last_id=entry, write=StateWrite({"wh": b"stale"}, full=True),
                   ack_ids=[entry])
    checkpoint = store.load(0)
    assert checkpoint is not None
    assert (checkpoint.fields["wh"], checkpoint.last_id, checkpoint.owner) == (b"new", "0-0", "w2:2")
    assert client.xpending("t:{0}", "g")["pending"] == 1       # the stale owner acked nothing
    assert stale.renew(0) is False


def test_remaining_time_is_measured_from_before_the_call(redis_server: RedisServer) -> None:
    clock = FakeClock()
    leases = LeaseManager(redis_server.client(), prefix="t", worker_id="w1", lease_s=10, clock=clock)
    assert leases.remaining_s(0) == 0.0
    leases.acquire(0)
    clock.now += 4
    assert leases.remaining_s(0) == pytest.approx(6.0)
    assert leases.renew(0)
    assert leases.remaining_s(0) == pytest.approx(10.0)


def test_heartbeats_define_live_workers(redis_server: RedisServer) -> None:
    client = redis_server.client()
    a = LeaseManager(client, prefix="t", worker_id="a", lease_s=1)
    b = LeaseManager(client, prefix="t", worker_id="b", lease_s=1)
    a.heartbeat(now_ms=10_000)
    b.heartbeat(now_ms=5_000)
    assert a.live_workers(now_ms=10_500) == ["a"]
    assert a.live_workers(now_ms=10_500 + 100_000) == []
    assert client.hlen("t:workers") == 0           # long-dead entries are cleaned up
    a.heartbeat()
    a.leave()
    assert client.hlen("t:workers") == 0


def test_rendezvous_moves_only_the_leavers_shards() -> None:
    workers = ["w1", "w2", "w3"]
    shards = range(64)
    before = {s: rendezvous_owner(s, workers) for s in shards}
    after = {s: rendezvous_owner(s, ["w1", "w3"]) for s in shards}
    moved = {s for s in shards if before[s] != after[s]}
    assert moved == {s for s in shards if before[s] == "w2"}
    assert set(before.values()) == set(workers)
    union = sorted(s for w in workers for s in assign(shards, workers, w))
    assert union == list(shards)
