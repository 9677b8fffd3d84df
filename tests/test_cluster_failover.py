"""A Redis Cluster failover under load: three masters with a replica each, and ``CLUSTER FAILOVER``
on the replica of the master serving shard 0, while the producer is sending.

A manual failover is coordinated: the master stops accepting writes, the replica catches up with
its replication stream and takes over the slots, the old master becomes its replica. Clients
are answered ``MOVED`` and follow. What must hold: every event the producer reported as sent is
in its shard stream (a retried ``XADD`` may add a duplicate entry, which carries the same producer
id and sequence number, so the worker counts it once), and a shard's checkpoint and lease written
before the failover are intact after it and still fence a stale owner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.core.checkpoint import CheckpointStore, StateWrite
from consumer.core.errors import Fenced
from consumer.pipeline.lease import LeaseManager
from consumer.pipeline.source import StreamSource
from producers import Telemetry, keys, wire
from tests import chaos_harness as ch
from tests.cluster import LocalCluster, wait_caught_up, wait_running
from tests.services import InfluxServer

PREFIX = ch.PREFIX
GROUP = "aggregator"


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three masters, one replica each; every node stopped by PID."""
    cluster = LocalCluster(tmp_path / "cluster", masters=3, replicas=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _record_slowly(tel: Telemetry, events: list[ch.WorkEvent], slices: int, pause_s: float) -> None:
    step = max(1, len(events) // slices)
    for start in range(0, len(events), step):
        ch.record_with_producer(tel, events[start:start + step])
        time.sleep(pause_s)


def _stream_batches(client: object, shards: int) -> dict[tuple[str, int], int]:
    """(producer id, sequence) -> events of that batch, over every shard; counts duplicates once."""
    seen: dict[tuple[str, int], int] = {}
    for shard in range(shards):
        for _id, fields in client.xrange(keys.stream_key(PREFIX, shard)):  # type: ignore[attr-defined]
            batch = wire.decode_entry(fields)
            seen[(f"{shard}:{batch.producer_id}", batch.sequence)] = len(batch.events)
    return seen


def test_failover_loses_no_sent_event_and_keeps_checkpoints_and_leases(
        replicated_cluster: LocalCluster) -> None:
    cluster = replicated_cluster
    shard0 = keys.stream_key(PREFIX, 0)
    master = cluster.node_of(shard0)
    replica = cluster.replica_of(master)
    workload = ch.make_workload(31, t0_s=ch.first_window_for(time.time(), 10.0, 6), windows=6, events=3000)
    first, second = workload.chunks(2)
    client = cluster.client()
    tel = Telemetry(redis_url=cluster.url, shards=ch.SHARDS, flush_interval_ms=10)
    try:
        ch.record_with_producer(tel, first)
        assert tel.flush(30)

        store = CheckpointStore(client, prefix=PREFIX, group=GROUP)
        source = StreamSource(client, prefix=PREFIX, group=GROUP, consumer="w1")
        leases = LeaseManager(client, prefix=PREFIX, worker_id="w1", lease_s=120.0)
        source.ensure_group(0)
        entries = source.read_new([0], count=100_000, block_ms=None)[0]
        lease = leases.acquire(0)
        assert lease is not None
        store.save(0, lease_value=lease, last_id=entries[-1].entry_id,
                   write=StateWrite({"wh": b"state-before", "dh": b"d"}),
                   ack_ids=[e.entry_id for e in entries])
        before = store.load(0)

        sender = threading.Thread(target=_record_slowly, args=(tel, second, 30, 0.03))
        sender.start()
        cluster.failover(replica)
        sender.join(60)
        assert not sender.is_alive()
        assert tel.flush(60), tel.stats()

        # the failover happened: the replica serves shard 0's slot, its old master follows it
        assert cluster.role(replica) == "master" and cluster.role(master) == "slave"
        assert cluster.node_of(shard0) is replica
        stats = tel.stats()
        assert stats["dropped"] == 0 and stats["sent"] == len(workload.events), stats

        batches = _stream_batches(client, ch.SHARDS)
        assert sum(batches.values()) == len(workload.events)

        # the checkpoint and the lease moved with the slot, intact
        assert store.load(0) == before
        assert source.pending(0).count == 0
        assert leases.renew(0) is True
        with pytest.raises(Fenced):
            store.save(0, lease_value="w0:0", last_id="0-0", write=StateWrite({"wh": b"stale"}), ack_ids=[])
        after = source.read_new([0], count=100_000, block_ms=None).get(0, [])
        store.save(0, lease_value=lease, last_id=after[-1].entry_id if after else before.last_id,
                   write=StateWrite({"wh": b"state-after", "dh": b"d"}), ack_ids=[e.entry_id for e in after])
        saved = store.load(0)
        assert saved is not None and saved.fields["wh"] == b"state-after"
        assert source.pending(0).count == 0
    finally:
        tel.close(5)
        client.close()


def test_a_worker_rides_out_a_failover_with_exact_totals(
        replicated_cluster: LocalCluster, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    cluster = replicated_cluster
    server, db = influx
    master = cluster.node_of(keys.stream_key(PREFIX, 0))
    replica = cluster.replica_of(master)
    workload = ch.make_workload(37, t0_s=ch.first_window_for(time.time(), 10.0, 6), windows=6, events=2400)
    first, second = workload.chunks(2)
    env = ch.worker_env(cluster.url, server.url, db, TELEMETRY_LEASE="3s", TELEMETRY_BLOCK_MS="100",
                        TELEMETRY_CHECKPOINT_INTERVAL="300ms", TELEMETRY_CONSUMER="failover-w")
    worker = ch.WorkerProcess(env, tmp_path / "worker.log")
    client = cluster.client()
    tel = Telemetry(redis_url=cluster.url, shards=ch.SHARDS, flush_interval_ms=10)
    try:
        worker.start()
        ch.record_with_producer(tel, first)
        assert tel.flush(30)
        wait_caught_up(client, ch.SHARDS, [worker])

        sender = threading.Thread(target=_record_slowly, args=(tel, second, 30, 0.03))
        sender.start()
        cluster.failover(replica)
        sender.join(60)
        assert tel.flush(60)
        assert cluster.role(replica) == "master"

        wait_caught_up(client, ch.SHARDS, [worker])
        expected = ch.reference_points(workload.events, workload.window_s)
        wait_running(lambda: not ch.compare(expected, ch.read_points(server, db)),
                     "InfluxDB to hold every point", [worker])
        ch.assert_matches_reference(server, db, expected, len(workload.events))
        assert ch.dead_letters(client) == 0
    finally:
        tel.close(5)
        if worker.alive():
            worker.terminate()
        client.close()


@pytest.mark.chaos
def test_workers_ride_out_a_master_crash_with_exact_totals(
        replicated_cluster: LocalCluster, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    """SIGKILL the master serving shard 0 once its replica has everything; the cluster elects the
    replica after the node timeout; two workers and the producer carry on through it."""
    cluster = replicated_cluster
    server, db = influx
    master = cluster.node_of(keys.stream_key(PREFIX, 0))
    workload = ch.make_workload(41, t0_s=ch.first_window_for(time.time(), 10.0, 8), windows=8, events=3000)
    first, second = workload.chunks(2)
    env = ch.worker_env(cluster.url, server.url, db, TELEMETRY_LEASE="3s", TELEMETRY_BLOCK_MS="100",
                        TELEMETRY_CHECKPOINT_INTERVAL="300ms")
    workers = [ch.WorkerProcess({**env, "TELEMETRY_CONSUMER": f"crash-{i}"}, tmp_path / f"crash-{i}.log")
               for i in range(2)]
    client = cluster.client()
    tel = Telemetry(redis_url=cluster.url, shards=ch.SHARDS, flush_interval_ms=10)
    try:
        for worker in workers:
            worker.start()
        ch.record_with_producer(tel, first)
        assert tel.flush(30)
        wait_caught_up(client, ch.SHARDS, workers)
        cluster.replicated(master)
        client.close()

        elected = cluster.crash(master)
        assert not master.is_running() and master.proc is not None and master.proc.returncode == -9
        client = cluster.client()
        assert cluster.node_of(keys.stream_key(PREFIX, 0)) is elected

        ch.record_with_producer(tel, second)
        assert tel.flush(60), tel.stats()
        wait_caught_up(client, ch.SHARDS, workers, 90.0)
        expected = ch.reference_points(workload.events, workload.window_s)
        wait_running(lambda: not ch.compare(expected, ch.read_points(server, db)),
                     "InfluxDB to hold every point", workers, 90.0)
        ch.assert_matches_reference(server, db, expected, len(workload.events))
        assert ch.dead_letters(client) == 0
    finally:
        tel.close(5)
        for worker in workers:
            if worker.alive():
                worker.terminate()
        client.close()
