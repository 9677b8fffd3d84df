"""Faults beyond a crashed worker: a paused owner that comes back after losing its lease, InfluxDB
down for several windows, Redis killed and restarted from its append-only file, a retried XADD.

Each test first proves its fault happened (process state, exit status, lease owners, refused
connections), then that InfluxDB holds exactly the reference.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from producers import Telemetry, keys
from tests import chaos_harness as ch
from tests.chaos_gateway import Recorder, RecordingGateway, parse_write, stale_writes
from tests.chaos_scenario import caught_up
from tests.services import InfluxServer, RedisServer

LEASE = "2s"


def _catch_up(redis_server: RedisServer, *workers: ch.WorkerProcess, timeout_s: float = 60.0) -> None:
    client = redis_server.client()
    deadline = time.monotonic() + timeout_s
    while not caught_up(client):
        for worker in workers:
            assert worker.alive(), f"worker {worker.pid} exited; log:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"not caught up in {timeout_s}s; log:\n{workers[0].log_tail()}"
        time.sleep(0.05)


def _unread_entries(client: Any) -> int:
    """Entries the group has not read yet (the backlog kept in Redis, not in the worker)."""
    total = 0
    for shard in range(ch.SHARDS):
        for group in client.xinfo_groups(keys.stream_key(ch.PREFIX, shard)):
            total += int(group.get("lag") or 0)
    return total


def _drain(env: dict[str, str], log: Path) -> None:
    drain = ch.WorkerProcess({**env, "TELEMETRY_CONSUMER": "drainer"}, log, ["--drain"])
    assert drain.run(timeout_s=120) == 0, drain.log_tail()


def test_owner_paused_past_its_lease_cannot_put_back_stale_points(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, db = influx
    client = redis_server.client()
    recorder = Recorder()
    gw1 = RecordingGateway(server.url, label="w1", recorder=recorder).start()
    gw2 = RecordingGateway(server.url, label="w2", recorder=recorder).start()
    workload = ch.make_workload(11, t0_s=ch.first_window_for(time.time(), 10.0, 20), events=4000)
    chunks = ch.late_chunks(workload, 8, late_per_chunk=15, seed=11)
    sender = ch.RawSender(client)
    env = ch.worker_env(redis_server.url, server.url, db, TELEMETRY_LEASE=LEASE,
                        TELEMETRY_CHECKPOINT_INTERVAL="300ms")
    w1 = ch.WorkerProcess({**env, "TELEMETRY_CONSUMER": "w1", "TELEMETRY_INFLUX_URL": gw1.url},
                          tmp_path / "w1.log").start()
    w2 = ch.WorkerProcess({**env, "TELEMETRY_CONSUMER": "w2", "TELEMETRY_INFLUX_URL": gw2.url},
                          tmp_path / "w2.log")
    try:
        sender.send(chunks[0])
        ch.wait_for(lambda: ch.lease_owners(client) == ["w1"] * ch.SHARDS, "w1 to own every shard", 30)
        _catch_up(redis_server, w1)
        sender.send(chunks[1])
        _catch_up(redis_server, w1)

        # w1 is caught in a write: it sent points, we hold them, then freeze it and fail the write,
        # so it wakes up (much later) inside its retry loop with window state that is out of date.
        gw1.hold_before.set()
        sender.send(chunks[2])
        held = gw1.wait_held(timeout_s=30)
        w1.pause()
        assert ch.proc_state(w1.pid) == "T"
        gw1.release(drop=True)
        w2.start()
        ch.wait_for(lambda: ch.lease_owners(client) == ["w2"] * ch.SHARDS,
                    "w2 to take every shard after w1's lease expired", 30)
        assert ch.proc_state(w1.pid) == "T", "w1 stayed frozen while its leases expired"
        sender.send(chunks[3])
        sender.send(chunks[4])
        _catch_up(redis_server, w2)

        resumed_at = time.monotonic()
        w1.resume()
        time.sleep(3 * 2.0)  # let the old owner run into its retry, renewal and checkpoint
        for chunk in chunks[5:]:
            sender.send(chunk)
            _catch_up(redis_server, w1, w2)
        assert w1.alive() and w2.alive()
    finally:
        w1.terminate()
        if w2.proc is not None:
            w2.terminate()
        gw1.stop()
        gw2.stop()
    _drain(env, tmp_path / "drain.log")

    assert held.dropped and not held.applied
    versions = ch.entry_versions(sender, workload.window_s)
    zombie = [w for w in recorder.writes if w.label == "w1" and w.arrived_s >= resumed_at]
    stale = stale_writes(recorder.writes, versions, lambda w: w.label == "w1" and w.arrived_s >= resumed_at)
    assert stale == [], f"{len(zombie)} writes by w1 after it resumed; stale ones:\n" + "\n".join(stale[:10])
    written = [point for w in recorder.writes if w.applied for point in parse_write(w)]
    assert ch.check_written_values(written, versions) == []
    ch.assert_matches_reference(server, db, ch.reference_points(workload.events, workload.window_s),
                                sender.events_sent)
    assert ch.dead_letters(client) == 0


def test_influx_down_for_several_windows_then_back_loses_nothing_within_memory_budget(
        redis_server: RedisServer, influx_server: InfluxServer, tmp_path: Path) -> None:
    db = "outage"
    influx_server.create_database(db)
    client = redis_server.client()
    window_s, windows = 1.0, 60
    workload = ch.make_workload(12, t0_s=ch.first_window_for(time.time(), window_s, windows),
                                window_s=window_s, windows=windows, events=60_000)
    chunks = workload.chunks(6)
    sender = ch.RawSender(client, batch_events=200)
    # Windows retained for late events count against the budget, so lateness is kept to five
    # windows here; the budget then binds only because InfluxDB is down.
    env = ch.worker_env(redis_server.url, influx_server.url, db, TELEMETRY_WINDOW="1s",
                        TELEMETRY_GRACE="200ms", TELEMETRY_ALLOWED_LATENESS="5s",
                        TELEMETRY_MAX_OPEN_SERIES="400", TELEMETRY_READ_COUNT="20", TELEMETRY_LEASE=LEASE)
    worker = ch.WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        sender.send(chunks[0])
        _catch_up(redis_server, worker)
        baseline_kb = worker.memory_kb()["VmRSS"]

        influx_server.kill()
        assert influx_server.proc is not None and influx_server.proc.returncode == -9
        assert not influx_server.ping()
        down_at = time.monotonic()
        for chunk in chunks[1:5]:
            sender.send(chunk)
        time.sleep(5 * window_s)  # InfluxDB stays down for five windows while the backlog waits
        assert not caught_up(client), "with InfluxDB down the worker cannot have finished"
        assert worker.alive(), worker.log_tail()
        peak_kb = worker.memory_kb()["VmHWM"]
        unread = _unread_entries(client)
        influx_server.start()
        outage_s = time.monotonic() - down_at
        sender.send(chunks[5])
        _catch_up(redis_server, worker, timeout_s=120)
        after_kb = worker.memory_kb()["VmHWM"]
    finally:
        worker.terminate()
    _drain(env, tmp_path / "drain.log")

    assert outage_s >= 5 * window_s
    assert unread > 0, "the backlog waited in Redis: the worker stopped reading at its budget"
    budget_kb = baseline_kb + 48 * 1024  # 400 series-windows a shard need a few MB; 50k events far more
    assert peak_kb <= budget_kb, f"RSS peaked at {peak_kb} kB during the outage (baseline {baseline_kb} kB)"
    assert after_kb <= budget_kb, f"RSS peaked at {after_kb} kB catching up (baseline {baseline_kb} kB)"
    ch.assert_matches_reference(influx_server, db, ch.reference_points(workload.events, window_s),
                                sender.events_sent)


def test_memory_budget_full_of_retained_windows_does_not_stall_a_shard_forever(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    """Windows already written but kept for late events fill the budget of open series-windows;
    reading stops, so the watermark stops, so nothing is ever evicted: the shard must not wait
    for that forever (InfluxDB is up the whole time)."""
    server, db = influx
    workload = ch.make_workload(15, t0_s=ch.first_window_for(time.time(), 10.0, 20), events=6000)
    sender = ch.RawSender(redis_server.client())
    sender.send(workload.events)
    expected = ch.reference_points(workload.events, workload.window_s)
    per_shard = [0] * ch.SHARDS
    for measurement, tags, _time in expected:
        per_shard[keys.shard_of_series(measurement, dict(tags), ch.SHARDS)] += 1
    budget = 300
    assert min(per_shard) > 2 * budget, "every shard holds more series-windows than the budget"
    env = ch.worker_env(redis_server.url, server.url, db, TELEMETRY_LEASE=LEASE,
                        TELEMETRY_MAX_OPEN_SERIES=str(budget), TELEMETRY_READ_COUNT="5")
    worker = ch.WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        _catch_up(redis_server, worker, timeout_s=30)  # an uninterrupted run needs a few seconds
    finally:
        worker.terminate()
    ch.assert_matches_reference(server, db, expected, len(workload.events))


def test_redis_killed_and_restarted_from_aof_mid_run_gives_exact_totals(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, db = influx
    workload = ch.make_workload(13, t0_s=ch.first_window_for(time.time(), 10.0, 20), events=4000)
    chunks = workload.chunks(6)
    sender = ch.RawSender(redis_server.client())
    env = ch.worker_env(redis_server.url, server.url, db, TELEMETRY_LEASE=LEASE)
    worker = ch.WorkerProcess(env, tmp_path / "worker.log").start()
    producer = Telemetry(redis_url=redis_server.url, shards=ch.SHARDS, prefix=ch.PREFIX)
    try:
        for chunk in chunks[:2]:
            sender.send(chunk)
        _catch_up(redis_server, worker)
        sender.send(chunks[2])
        before = sum(ch.stream_lengths(redis_server.client()))

        redis_server.kill()
        assert redis_server.proc is not None and redis_server.proc.returncode == -9
        assert not redis_server.ping()
        recorded = ch.record_with_producer(producer, chunks[3])  # buffered by the producer meanwhile
        time.sleep(2.0)
        assert producer.stats()["buffered"] > 0, "the producer could not have sent with Redis down"
        redis_server.start()
        assert sum(ch.stream_lengths(redis_server.client())) >= before, "the AOF brought the streams back"
        assert producer.flush(timeout=30), producer.stats()
        assert worker.alive(), f"the worker did not survive the Redis restart:\n{worker.log_tail()}"
        for chunk in chunks[4:]:
            sender.send(chunk)
        _catch_up(redis_server, worker, timeout_s=90)
    finally:
        producer.close(timeout=5)
        worker.terminate()
    _drain(env, tmp_path / "drain.log")

    assert recorded == len(chunks[3])
    ch.assert_matches_reference(server, db, ch.reference_points(workload.events, workload.window_s),
                                sender.events_sent + recorded)
    assert ch.dead_letters(redis_server.client()) == 0


def test_retried_xadd_of_the_same_batch_counts_once(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, db = influx
    workload = ch.make_workload(14, t0_s=ch.first_window_for(time.time(), 10.0, 20), events=2000)
    sender = ch.RawSender(redis_server.client())
    sender.send(workload.events)
    entries = len(sender.entries)
    for index in range(0, entries, 3):
        sender.resend(index)  # the producer's reply was lost; it sends the same batch again
    assert sum(ch.stream_lengths(redis_server.client())) == entries + len(range(0, entries, 3))
    env = ch.worker_env(redis_server.url, server.url, db, TELEMETRY_LEASE=LEASE)
    _drain(env, tmp_path / "drain.log")
    ch.assert_matches_reference(server, db, ch.reference_points(workload.events, workload.window_s),
                                len(workload.events))
