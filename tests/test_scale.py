"""Many workers on one Redis: shards spread over the live workers and follow them as they come
and go, with no gap and no double count.

Eight shards, three worker processes (``python -m consumer``), then a fourth joins, one leaves
cleanly (SIGTERM) and one crashes (SIGKILL). Each change happens while a chunk of the
workload is in the streams, and the chunks carry late events that rewrite windows already
written, possibly by another worker. After each change the leases must match rendezvous hashing
over exactly the live workers; at the end InfluxDB must equal the plain-Python reference.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from consumer.pipeline.lease import rendezvous_owner
from producers import Telemetry, keys
from tests import chaos_harness as ch
from tests.cluster import LocalCluster, wait_caught_up, wait_running
from tests.services import InfluxServer, RedisServer

SHARDS = 8
SOAK_SEED = int(os.environ.get("CHAOS_SEED", "20251125"))
NAMES = ("scale-a", "scale-b", "scale-c", "scale-d")


def expected_owners(live: list[str]) -> list[str | None]:
    return [rendezvous_owner(shard, sorted(live)) for shard in range(SHARDS)]


class Fleet:
    """Named worker processes sharing one environment."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env = env
        self.tmp_path = tmp_path
        self.workers: dict[str, ch.WorkerProcess] = {}

    def start(self, name: str) -> ch.WorkerProcess:
        worker = ch.WorkerProcess({**self.env, "TELEMETRY_CONSUMER": name}, self.tmp_path / f"{name}.log")
        self.workers[name] = worker.start()
        return worker

    def live(self) -> list[ch.WorkerProcess]:
        return [worker for worker in self.workers.values() if worker.alive()]

    def stop_all(self) -> None:
        for worker in self.live():
            worker.terminate()


def test_shards_follow_workers_joining_leaving_and_crashing_with_exact_totals(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, db = influx
    client = redis_server.client()
    workload = ch.make_workload(23, t0_s=ch.first_window_for(time.time(), 10.0, 16), windows=16, events=4000)
    chunks = ch.late_chunks(workload, 4, late_per_chunk=40, seed=23)
    sender = ch.RawSender(client, shards=SHARDS, batch_events=60)
    env = ch.worker_env(redis_server.url, server.url, db, TELEMETRY_SHARDS=str(SHARDS), TELEMETRY_LEASE="2s",
                        TELEMETRY_CHECKPOINT_INTERVAL="300ms", TELEMETRY_BLOCK_MS="100")
    fleet = Fleet(env, tmp_path)

    def settle(live: list[str], what: str) -> None:
        wait_running(lambda: ch.lease_owners(client, SHARDS) == expected_owners(live), what, fleet.live())
        wait_caught_up(client, SHARDS, fleet.live())

    try:
        for name in NAMES[:3]:
            fleet.start(name)
        sender.send(chunks[0])
        settle(["scale-a", "scale-b", "scale-c"], "three workers to share the shards")
        assert set(ch.lease_owners(client, SHARDS)) == {"scale-a", "scale-b", "scale-c"}

        # join: the new worker takes only the shards rendezvous hashing now gives it
        before = ch.lease_owners(client, SHARDS)
        fleet.start("scale-d")
        sender.send(chunks[1])
        settle(["scale-a", "scale-b", "scale-c", "scale-d"], "the shards to spread over four workers")
        after = ch.lease_owners(client, SHARDS)
        moved = [shard for shard in range(SHARDS) if before[shard] != after[shard]]
        assert moved and all(after[shard] == "scale-d" for shard in moved), (before, after)

        # clean leave: SIGTERM, exit 0, its shards are handed over
        sender.send(chunks[2])
        assert fleet.workers["scale-b"].terminate() == 0
        settle(["scale-a", "scale-c", "scale-d"], "scale-b's shards to move")

        # crash: SIGKILL with entries in flight; the others wait out its leases and resume from
        # its checkpoints, re-reading what it had not checkpointed
        sender.send(chunks[3])
        record = fleet.workers["scale-c"].kill("crash with entries in flight")
        assert record.returncode == -signal.SIGKILL and not fleet.workers["scale-c"].alive()
        settle(["scale-a", "scale-d"], "scale-c's shards to be taken over")

        assert sender.events_sent == len(workload.events)
        expected = ch.reference_points(workload.events, workload.window_s)
        wait_running(lambda: not ch.compare(expected, ch.read_points(server, db)),
                     "InfluxDB to hold every point", fleet.live())
        ch.assert_matches_reference(server, db, expected, len(workload.events))
        assert ch.dead_letters(client) == 0
        assert [w for w in fleet.workers.values() if w.alive()] == [fleet.workers["scale-a"],
                                                                    fleet.workers["scale-d"]]
    finally:
        fleet.stop_all()
        client.close()


def test_more_workers_than_shards_leaves_the_extra_ones_idle(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, db = influx
    client: redis.Redis = redis_server.client()
    env = ch.worker_env(redis_server.url, server.url, db, TELEMETRY_SHARDS="2", TELEMETRY_LEASE="2s",
                        TELEMETRY_CHECKPOINT_INTERVAL="300ms", TELEMETRY_BLOCK_MS="100")
    fleet = Fleet(env, tmp_path)
    names = ["idle-a", "idle-b", "idle-c", "idle-d"]
    try:
        for name in names:
            fleet.start(name)
        owners = [rendezvous_owner(shard, sorted(names)) for shard in range(2)]

        def heartbeats() -> set[str]:
            return {k.decode() for k in client.hkeys(keys.workers_key(ch.PREFIX))}

        # every worker is live (a hot standby), but only the rendezvous owners hold a shard
        wait_running(lambda: heartbeats() == set(names) and ch.lease_owners(client, 2) == owners,
                     "four live workers, two of them owning the shards", fleet.live())
        assert len(set(owners)) <= 2 < len(names)
        idle = set(names) - set(owners)
        time.sleep(1.0)   # a few maintenance rounds (lease 2 s / 3): the standbys stay idle
        assert ch.lease_owners(client, 2) == owners and heartbeats() == set(names)
        assert all(fleet.workers[name].alive() for name in idle)
    finally:
        fleet.stop_all()
        client.close()


def _soak(redis_url: str, client: Any, send: Callable[[list[ch.WorkEvent]], None],
          workload: ch.Workload, influx: tuple[InfluxServer, str], tmp_path: Path, *, shards: int,
          steps: int) -> None:
    """At each step a random worker joins, leaves, crashes, or freezes (SIGSTOP) past its lease and
    comes back to find its shards taken (fenced); a chunk is sent each time; exact at the end."""
    server, db = influx
    rng = random.Random(SOAK_SEED)
    chunks = ch.late_chunks(workload, steps, late_per_chunk=60, seed=SOAK_SEED)
    env = ch.worker_env(redis_url, server.url, db, TELEMETRY_SHARDS=str(shards), TELEMETRY_LEASE="2s",
                        TELEMETRY_CHECKPOINT_INTERVAL="300ms", TELEMETRY_BLOCK_MS="100")
    fleet = Fleet(env, tmp_path)
    actions: list[str] = []
    try:
        for index in range(3):
            fleet.start(f"soak-{index}")
        for step, chunk in enumerate(chunks):
            send(chunk)
            live = [name for name, worker in fleet.workers.items() if worker.alive()]
            action = rng.choice(["join", "leave", "crash", "pause"] if len(live) > 1 else ["join", "pause"])
            if action == "join":
                fleet.start(f"soak-{len(fleet.workers)}")
            name = rng.choice(live)
            worker = fleet.workers[name]
            if action == "leave":
                assert worker.terminate() == 0
            elif action == "crash":
                assert worker.kill(f"step {step}").returncode == -signal.SIGKILL and not worker.alive()
            elif action == "pause":
                worker.pause()
                time.sleep(3.0)   # past its 2 s lease: the others take its shards
                worker.resume()
            actions.append(f"{step}:{action}:{name}")
            alive = sorted(name for name, w in fleet.workers.items() if w.alive())
            owners = [rendezvous_owner(shard, alive) for shard in range(shards)]
            wait_running(lambda owners=owners: ch.lease_owners(client, shards) == owners,  # type: ignore[misc]
                         f"step {step} to settle ({actions})", fleet.live(), 90.0)
        wait_caught_up(client, shards, fleet.live(), 90.0)
        expected = ch.reference_points(workload.events, workload.window_s)
        wait_running(lambda: not ch.compare(expected, ch.read_points(server, db)),
                     "InfluxDB to hold every point", fleet.live(), 120.0)
        ch.assert_matches_reference(server, db, expected, len(workload.events))
        assert ch.dead_letters(client) == 0, actions
    finally:
        fleet.stop_all()


def _soak_workload() -> ch.Workload:
    return ch.make_workload(SOAK_SEED, t0_s=ch.first_window_for(time.time(), 10.0, 24), windows=24,
                            events=20000)


@pytest.mark.chaos
def test_soak_random_joins_leaves_crashes_and_pauses_give_exact_totals(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    client = redis_server.client()
    sender = ch.RawSender(client, shards=16, batch_events=80)
    try:
        _soak(redis_server.url, client, sender.send, _soak_workload(), influx, tmp_path, shards=16, steps=14)
    finally:
        client.close()


@pytest.mark.chaos
def test_soak_on_a_cluster_gives_exact_totals(
        redis_cluster: LocalCluster, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    client = redis_cluster.client()
    tel = Telemetry(redis_url=redis_cluster.url, shards=16, flush_interval_ms=10)

    def send(events: list[ch.WorkEvent]) -> None:
        ch.record_with_producer(tel, events)
        assert tel.flush(30), tel.stats()

    try:
        _soak(redis_cluster.url, client, send, _soak_workload(), influx, tmp_path, shards=16, steps=10)
    finally:
        tel.close(5)
        client.close()
