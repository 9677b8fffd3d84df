"""Checkpoints, dedupe state and idempotent dead letters against a real redis-server."""

from __future__ import annotations

import pytest

from consumer.core.checkpoint import CheckpointStore, StateWrite
from consumer.core.errors import Fenced
from consumer.core.model import DeadLetter
from consumer.dlq.deadletter import DeadLetterWriter
from consumer.pipeline.dedupe import Dedupe
from consumer.pipeline.lease import LeaseManager
from tests.services import RedisServer
from tests.stream_setup import delivered_entries


def test_checkpoint_stores_state_and_acks_atomically(redis_server: RedisServer) -> None:
    client = redis_server.client()
    ids = delivered_entries(client, 3)
    lease = LeaseManager(client, prefix="t", worker_id="w1", lease_s=5).acquire(0)
    assert lease is not None
    store = CheckpointStore(client, prefix="t", group="g")
    assert store.load(0) is None
    store.save(0, lease_value=lease, last_id=ids[1], write=StateWrite({"wh": b"\x00w", "dh": b"\x01d"}),
               ack_ids=ids[:2])
    checkpoint = store.load(0)
    assert checkpoint is not None
    assert (checkpoint.last_id, checkpoint.fields) == (ids[1], {"wh": b"\x00w", "dh": b"\x01d"})
    pending = client.xpending("t:{0}", "g")
    assert (pending["pending"], pending["min"].decode()) == (1, ids[2])


def test_checkpoint_without_the_lease_writes_nothing(redis_server: RedisServer) -> None:
    client = redis_server.client()
    [entry] = delivered_entries(client)
    store = CheckpointStore(client, prefix="t", group="g")
    with pytest.raises(Fenced):
        store.save(0, lease_value="w1:1", last_id=entry, write=StateWrite({"wh": b"x"}), ack_ids=[entry])
    assert store.load(0) is None
    assert client.xpending("t:{0}", "g")["pending"] == 1


def test_dedupe_admits_each_sequence_once_and_survives_a_snapshot() -> None:
    dedupe = Dedupe(ttl_s=10)
    assert dedupe.admit("p1", 1, 1_000)
    assert dedupe.admit("p1", 2, 1_001)
    assert not dedupe.admit("p1", 2, 1_002)
    assert not dedupe.admit("p1", 1, 1_003)
    assert dedupe.admit("p2", 1, 20_000)
    restored = Dedupe.restore(dedupe.snapshot(), ttl_s=10)
    assert not restored.admit("p1", 2, 20_001)
    assert restored.expire() == 1            # p1 silent for more than 10 s of stream time
    assert restored.admit("p1", 1, 20_002)
    assert len(restored) == 2


def test_dead_letters_are_appended_once_per_position(redis_server: RedisServer) -> None:
    client = redis_server.client()
    writer = DeadLetterWriter(client, prefix="t")
    letters = [DeadLetter("too_late", "old", "t:{0}", "1000-0", 0, b"a"),
               DeadLetter("invalid_value", "NaN", "t:{0}", "1000-0", 1, b"b", {"measurement": "m"})]
    assert writer.append(0, letters) == 2
    assert writer.append(0, letters) == 0            # re-produced after a crash: recognised
    entries = client.xrange("t:dlq")
    assert [(e[1][b"reason"], e[1][b"index"], e[1][b"payload"]) for e in entries] == [
        (b"too_late", b"0", b"a"), (b"invalid_value", b"1", b"b")]
    assert entries[1][1][b"measurement"] == b"m"
    assert writer.forget_before(0, 1001) == 2
    assert writer.append(0, letters[:1]) == 1
