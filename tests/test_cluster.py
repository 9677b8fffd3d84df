"""The pipeline on a real three-master Redis Cluster (``tests/cluster.py``).

What a cluster changes: keys live on different nodes by hash slot, and a script or transaction
may only touch keys of one slot. Every key of a shard carries the hash tag ``{i}``
(``producers/keys.py``), so the checkpoint, lease and trim scripts stay atomic; these tests run
them against the real cluster (which refuses a cross-slot script, so a key outside the shard's
slot would fail here), then send events through the producer's ``redis+cluster://`` client and
run two workers over the cluster, killing one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from consumer.core.checkpoint import CheckpointStore, StateWrite
from consumer.core.errors import Fenced
from consumer.core.model import DeadLetter
from consumer.dlq.deadletter import DeadLetterWriter
from consumer.pipeline.lease import LeaseManager
from consumer.pipeline.source import StreamSource
from producers import Telemetry, keys, wire
from tests import chaos_harness as ch
from tests.cluster import LocalCluster, key_slot, wait_caught_up, wait_running
from tests.services import InfluxServer

PREFIX = ch.PREFIX
GROUP = "aggregator"


def _shard_keys(shard: int) -> list[str]:
    return [keys.stream_key(PREFIX, shard), keys.state_key(PREFIX, shard), keys.lease_key(PREFIX, shard),
            keys.fence_key(PREFIX, shard)]


def test_the_fixture_is_a_healthy_three_master_cluster(redis_cluster: LocalCluster) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3
    client = redis_cluster.client()
    try:
        info = client.cluster_info(target_nodes=RedisCluster.RANDOM)
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == 16384
        assert int(info["cluster_known_nodes"]) == 3
    finally:
        client.close()
    # the server itself refuses a script over two slots, even two slots of the same node: the
    # property the shard hash tags exist for
    by_node: dict[int, list[str]] = {}
    for shard in range(16):
        key = keys.state_key(PREFIX, shard)
        by_node.setdefault(redis_cluster.node_of(key).port, []).append(key)
    port, node_keys = next((p, k) for p, k in by_node.items() if len(k) >= 2)
    with redis.Redis(host="127.0.0.1", port=port) as node:
        with pytest.raises(redis.ResponseError, match="same slot"):
            node.eval("return redis.call('GET', KEYS[1])", 2, node_keys[0], node_keys[1])
        assert node.eval("return redis.call('GET', KEYS[1])", 1, node_keys[0]) is None


def test_every_key_of_a_shard_is_in_one_slot_and_shards_spread_over_the_nodes(
        redis_cluster: LocalCluster) -> None:
    slots = {}
    for shard in range(16):
        shard_slots = {key_slot(key) for key in _shard_keys(shard)}
        assert len(shard_slots) == 1, (shard, shard_slots)
        slots[shard] = shard_slots.pop()
    assert len(set(slots.values())) == 16
    nodes = {redis_cluster.slot_owner(slot).port for slot in slots.values()}
    assert len(nodes) == 3, "16 shards should land on all three masters"
    # the dead-letter stream and its per-shard seen sets share one slot (an atomic append)
    letters = DeadLetterWriter(redis.Redis(), prefix=PREFIX)
    assert {key_slot(letters.key), key_slot(letters.seen_key(0)), key_slot(letters.seen_key(7))} == {
        key_slot(letters.key)}


def _entry(producer: str, sequence: int, value: int) -> dict[bytes, bytes]:
    event: wire.WireEvent = (wire.KIND_COUNT, "m", 1_700_000_000.0, {"user_id": "u1"}, {"c": value})
    return wire.encode_entry(producer, sequence, wire.encode_events([event]), 1)


def test_checkpoint_lease_trim_and_dead_letter_scripts_are_atomic_on_the_cluster(
        redis_cluster: LocalCluster) -> None:
    client = redis_cluster.client()
    try:
        shards = (0, 1, 2, 3)
        assert len({redis_cluster.node_of(keys.stream_key(PREFIX, s)).port for s in shards}) >= 2
        source = StreamSource(client, prefix=PREFIX, group=GROUP, consumer="w1")
        store = CheckpointStore(client, prefix=PREFIX, group=GROUP)
        leases = LeaseManager(client, prefix=PREFIX, worker_id="w1", lease_s=30.0)
        other = LeaseManager(client, prefix=PREFIX, worker_id="w2", lease_s=30.0)
        for shard in shards:
            assert source.ensure_group(shard) is True
            ids = [client.xadd(keys.stream_key(PREFIX, shard), _entry("p" * 16, n, n)) for n in (1, 2, 3)]
            ids = [i.decode() for i in ids]
            entries = source.read_new([shard], count=10, block_ms=None)[shard]
            assert [e.entry_id for e in entries] == ids
            lease = leases.acquire(shard)
            assert lease == "w1:1"
            assert other.acquire(shard) is None

            store.save(shard, lease_value=lease, last_id=ids[1],
                       write=StateWrite({"wh": b"W" * 10_000, "dh": b"D"}),
                       ack_ids=ids[:2])
            saved = store.load(shard)
            assert saved is not None
            assert (saved.last_id, saved.fields, saved.owner) == (
                ids[1], {"wh": b"W" * 10_000, "dh": b"D"}, lease)
            assert source.pending(shard).count == 1          # the XACK ran in the same script

            # a stale owner (wrong token) changes nothing, neither state nor acknowledgements
            with pytest.raises(Fenced):
                store.save(shard, lease_value="w1:0", last_id=ids[2],
                           write=StateWrite({"wh": b"X"}, full=True), ack_ids=ids[2:])
            assert store.load(shard) == saved
            assert source.pending(shard).count == 1

            # trimming below what the group still needs keeps the unacknowledged entry
            removed = source.trim_acknowledged(shard, store.key(shard))
            assert removed == 2
            assert [e.entry_id for e in source.read_range(shard, after_id="0-0", count=10)] == ids[2:]
            assert source.lost_entries(shard, store.key(shard)) == 0

            leases.release(shard)
            assert other.acquire(shard) == "w2:2"         # the fence counter moved on: a larger token

    finally:
        client.close()


def test_dead_letters_are_appended_once_on_the_cluster(redis_cluster: LocalCluster) -> None:
    client = redis_cluster.client()
    try:
        letters = DeadLetterWriter(client, prefix=PREFIX)
        letter = DeadLetter("too_late", "old", keys.stream_key(PREFIX, 0), "1700000000000-0", 0, b"payload")
        assert letters.append(0, [letter, letter]) == 1
        assert letters.append(0, [letter]) == 0
        assert client.xlen(letters.key) == 1
    finally:
        client.close()


def test_producer_sends_every_event_to_its_shard_on_the_cluster(redis_cluster: LocalCluster) -> None:
    workload = ch.make_workload(7, t0_s=ch.first_window_for(time.time(), 10.0, 4), windows=4, events=1200)
    tel = Telemetry(redis_url=redis_cluster.url, shards=ch.SHARDS, flush_interval_ms=10)
    try:
        assert ch.record_with_producer(tel, workload.events) == 1200
        assert tel.flush(30)
        assert tel.stats()["dropped"] == 0
    finally:
        tel.close(5)
    client = redis_cluster.client()
    try:
        batches: dict[tuple[int, str, int], int] = {}   # a retried XADD repeats (producer, sequence)
        for shard in range(ch.SHARDS):
            for _id, fields in client.xrange(keys.stream_key(PREFIX, shard)):
                batch = wire.decode_entry(fields)
                for event in batch.events:
                    assert keys.shard_of_series(event[1], event[3], ch.SHARDS) == shard
                batches[(shard, batch.producer_id, batch.sequence)] = len(batch.events)
        assert sum(batches.values()) == 1200
    finally:
        client.close()


# --- two workers over the cluster, one killed ------------------------------------------------


def test_two_workers_on_the_cluster_one_killed_give_exact_totals(
        redis_cluster: LocalCluster, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, db = influx
    workload = ch.make_workload(11, t0_s=ch.first_window_for(time.time(), 10.0, 8), windows=8, events=3000)
    first, second = workload.chunks(2)
    env = ch.worker_env(redis_cluster.url, server.url, db, TELEMETRY_LEASE="2s",
                        TELEMETRY_CHECKPOINT_INTERVAL="300ms", TELEMETRY_BLOCK_MS="100")
    workers = {name: ch.WorkerProcess({**env, "TELEMETRY_CONSUMER": name}, tmp_path / f"{name}.log")
               for name in ("cluster-a", "cluster-b")}
    client = redis_cluster.client()
    tel = Telemetry(redis_url=redis_cluster.url, shards=ch.SHARDS, flush_interval_ms=10)
    try:
        for worker in workers.values():
            worker.start()
        wait_running(lambda: set(ch.lease_owners(client)) == set(workers), "both workers to own shards",
                     workers.values())
        ch.record_with_producer(tel, first)
        assert tel.flush(30)
        wait_caught_up(client, ch.SHARDS, workers.values())

        killed = workers["cluster-a"].kill("mid-run")
        assert killed.returncode == -9 and not workers["cluster-a"].alive()
        ch.record_with_producer(tel, second)
        assert tel.flush(30)
        survivor = [workers["cluster-b"]]
        wait_running(lambda: ch.lease_owners(client) == ["cluster-b"] * ch.SHARDS,
                     "the survivor to take every shard", survivor)
        wait_caught_up(client, ch.SHARDS, survivor)
        expected = ch.reference_points(workload.events, workload.window_s)
        ch.wait_for(lambda: not ch.compare(expected, ch.read_points(server, db)),
                    "InfluxDB to hold every point", 60.0)
        ch.assert_matches_reference(server, db, expected, len(workload.events))
        assert ch.dead_letters(client) == 0
        assert workers["cluster-b"].alive(), workers["cluster-b"].log_tail()
    finally:
        tel.close(5)
        for worker in workers.values():
            if worker.alive():
                worker.terminate()
        client.close()
