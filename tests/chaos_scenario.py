"""The chaos scenario: a worker killed again and again while the workload streams in.

Shared by ``tests/test_chaos.py`` (asserts) and ``bench/bench_chaos.py`` (reports). Each step
sends the next chunk of a workload with late events, starts a worker and injects one fault:

    random         SIGKILL after a random delay (mostly while the new chunk is being processed)
    stuck_write    a write held before InfluxDB (never reaches it), worker SIGKILLed
    after_write    InfluxDB applied a write, its reply withheld: SIGKILL between write and checkpoint
    influx_paused  influxd SIGSTOPped while the worker writes; worker SIGKILLed, influxd resumed
    sigterm        a clean stop (SIGTERM) at a random moment: must exit 0
    redis_restart  redis-server SIGKILLed under the running worker, restarted from its AOF, and
                   the next chunk sent
    influx_outage  influxd SIGKILLed under the running worker, the next chunk sent, influxd
                   restarted three seconds later

then measures recovery: after a worker kill a fresh worker (alternately the same consumer name,
as a restarted service, and a new one, as a replacement pod) is started; after a server fault the
same worker carries on. Recovery is the time from then until every shard has acknowledged
everything sent. A final ``--drain`` flushes what is left. The result carries every
proof (exit status -9, what the gateway saw) and every comparison with the reference.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis

from producers import keys
from tests import chaos_harness as ch
from tests.chaos_gateway import RecordingGateway, parse_write
from tests.services import InfluxServer, RedisServer

WORKER_KILLS: Final = ("random", "stuck_write", "after_write", "influx_paused")
WORKER_FAULTS: Final = (*WORKER_KILLS, "sigterm")
SERVER_FAULTS: Final = ("redis_restart", "influx_outage")
FAULT_KINDS: Final = WORKER_FAULTS + SERVER_FAULTS
DEFAULT_PLAN: Final = ("random", "after_write", "stuck_write", "random", "influx_paused", "redis_restart",
                       "after_write", "sigterm", "random", "influx_outage", "random")
OUTAGE_S: Final = 3.0
GROUP: Final = "aggregator"
WRITE_WAIT_S: Final = 45.0
CATCH_UP_S: Final = 90.0


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault, its proof, and how long the pipeline took to recover from it."""

    kind: str
    kill: ch.KillRecord | None
    proof: str
    recovery_s: float | None = None
    server_returncode: int | None = None


@dataclass(slots=True)
class ChaosResult:
    """Everything a chaos run observed, for assertions and the benchmark report."""

    seed: int
    events_sent: int = 0
    entries_sent: int = 0
    faults: list[Fault] = field(default_factory=list)
    drain_returncode: int | None = None
    drain_log: str = ""
    points_expected: int = 0
    points_read: int = 0
    mismatches: list[str] = field(default_factory=list)
    event_total: int = 0
    dead_letters: int = 0
    writes_recorded: int = 0
    writes_applied: int = 0
    points_written: int = 0
    written_value_problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def faults_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fault in self.faults:
            counts[fault.kind] = counts.get(fault.kind, 0) + 1
        return counts


def caught_up(client: redis.Redis, shards: int = ch.SHARDS, prefix: str = ch.PREFIX) -> bool:
    """Every shard's group has read everything and acknowledged (checkpointed) all it read."""
    for shard in range(shards):
        stream = keys.stream_key(prefix, shard)
        if not client.exists(stream):
            continue
        groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g
                  for g in client.xinfo_groups(stream)}
        group = groups.get(GROUP)
        if group is None or int(group["pending"]) != 0 or group.get("lag") not in (0, None):
            return False
        last = client.xinfo_stream(stream)["last-generated-id"]
        if group["last-delivered-id"] != last:
            return False
    return True


def entries_added(client: redis.Redis, shards: int = ch.SHARDS, prefix: str = ch.PREFIX) -> int:
    """Entries ever added to the shard streams (trimming does not lower it)."""
    total = 0
    for shard in range(shards):
        stream = keys.stream_key(prefix, shard)
        if client.exists(stream):
            total += int(client.xinfo_stream(stream)["entries-added"])
    return total


def restart_redis(server: RedisServer, down_s: float = 1.0, *, writers_running: bool = False
                  ) -> tuple[int | None, int]:
    """SIGKILL redis-server, keep it down ``down_s``, restart it from its append-only file; proves
    the kill, and that the entries added before it came back: all of them, or at least those
    counted before the kill when ``writers_running`` (they may add more up to the kill).

    Returns the killed server's exit status and the number of entries reloaded.
    """
    entries = entries_added(server.client())
    server.kill()
    returncode = server.proc.returncode if server.proc else None
    assert returncode == -9 and not server.ping(), "redis-server died of SIGKILL"
    time.sleep(down_s)
    server.start()
    reloaded = entries_added(server.client())
    complete = reloaded >= entries if writers_running else reloaded == entries
    assert complete, f"the append-only file brought back {reloaded} of {entries} entries"
    return returncode, reloaded


class ChaosRunner:
    """Runs :data:`DEFAULT_PLAN` (or any plan) against the given servers."""

    def __init__(self, redis_server: RedisServer, influx: InfluxServer, db: str, work_dir: Path, *,
                 seed: int, events: int = 6000, windows: int = 20, chunks: int = 12,
                 users: int = 40, attachment_share: float | None = None, batch_events: int = 50,
                 write_wait_s: float = WRITE_WAIT_S, catch_up_s: float = CATCH_UP_S,
                 env: dict[str, str] | None = None, upstream_url: str | None = None) -> None:
        """``users``, ``attachment_share`` and ``batch_events`` shape the workload (see
        :func:`~tests.chaos_harness.make_workload`; many users make many series); the two waits
        bound how long a fault may wait for a write and a recovery may take, which a bigger
        workload may need raised."""
        self.redis_server = redis_server
        self.influx = influx
        self.db = db
        self.work_dir = work_dir
        self.rng = random.Random(seed)
        self.result = ChaosResult(seed=seed)
        self.gateway = RecordingGateway(upstream_url or influx.url, label="worker")
        self.write_wait_s = write_wait_s
        self.catch_up_s = catch_up_s
        t0_s = ch.first_window_for(time.time(), 10.0, windows)
        self.workload = ch.make_workload(seed, t0_s=t0_s, windows=windows, events=events, users=users,
                                         attachment_share=attachment_share)
        self.chunks = ch.late_chunks(self.workload, chunks, late_per_chunk=15, seed=seed)
        self.sender = ch.RawSender(redis_server.client(), batch_events=batch_events)
        self.env = ch.worker_env(redis_server.url, self.gateway.url, db, TELEMETRY_LEASE="2s",
                                 TELEMETRY_CHECKPOINT_INTERVAL="500ms", **(env or {}))
        self.log = work_dir / "worker.log"
        self.starts = 0

    def worker(self, args: Sequence[str] = ()) -> ch.WorkerProcess:
        """A worker; every other start reuses the name ``chaos-1`` (a restarted service)."""
        self.starts += 1
        name = "chaos-1" if self.starts % 2 else f"chaos-{self.starts}"
        return ch.WorkerProcess({**self.env, "TELEMETRY_CONSUMER": name}, self.log, args)

    def send_next(self) -> None:
        if self.chunks:
            self.result.entries_sent += self.sender.send(self.chunks.pop(0))
            self.result.events_sent = self.sender.events_sent

    def run(self, plan: Sequence[str] = DEFAULT_PLAN) -> ChaosResult:
        started = time.monotonic()
        self.gateway.start()
        try:
            worker = self.worker().start()
            for kind in plan:
                if kind in WORKER_FAULTS:  # server faults send their chunk while the server is down
                    self.send_next()
                fault = self.inject(kind, worker)
                if fault.kill is not None:
                    worker = self.worker().start()
                elif not worker.alive():
                    raise AssertionError(f"the worker did not survive {kind}; log:\n{worker.log_tail()}")
                recovery_s = self.recover(worker, since=time.monotonic())
                self.result.faults.append(Fault(kind, fault.kill, fault.proof, recovery_s,
                                                fault.server_returncode))
            while self.chunks:
                self.send_next()
            worker.terminate()
            drain = self.worker(["--drain"])
            self.result.drain_returncode = drain.run(timeout_s=180)
            self.result.drain_log = drain.log_tail(60)
            self.verify()
        finally:
            self.gateway.stop()
        self.result.duration_s = time.monotonic() - started
        return self.result

    def recover(self, worker: ch.WorkerProcess, since: float) -> float:
        client = self.redis_server.client()
        deadline = since + self.catch_up_s
        while time.monotonic() < deadline:
            if caught_up(client):
                return time.monotonic() - since
            if not worker.alive():
                raise AssertionError(f"worker exited during recovery; log:\n{worker.log_tail()}")
            time.sleep(0.05)
        raise AssertionError(f"worker did not catch up within {self.catch_up_s}s; log:\n{worker.log_tail()}")

    def inject(self, kind: str, worker: ch.WorkerProcess) -> Fault:
        inject = {"random": self._random, "stuck_write": self._stuck_write,
                  "after_write": self._after_write, "influx_paused": self._influx_paused,
                  "sigterm": self._sigterm,
                  "redis_restart": self._redis_restart, "influx_outage": self._influx_outage}[kind]
        return inject(worker)

    def _redis_restart(self, worker: ch.WorkerProcess) -> Fault:
        returncode, reloaded = restart_redis(self.redis_server)
        self.send_next()
        return Fault("redis_restart", None, f"redis-server died of SIGKILL (rc {returncode}) under "
                     f"worker {worker.pid}; restarted from its AOF with {reloaded} entries",
                     server_returncode=returncode)

    def _influx_outage(self, worker: ch.WorkerProcess) -> Fault:
        before = len(self.gateway.recorder.writes)
        self.influx.kill()
        returncode = self.influx.proc.returncode if self.influx.proc else None
        assert returncode == -9 and not self.influx.ping(), "influxd died of SIGKILL"
        self.send_next()
        time.sleep(OUTAGE_S)
        failed = sum(1 for w in self.gateway.recorder.writes[before:] if not w.applied)
        self.influx.start()
        return Fault("influx_outage", None, f"influxd died of SIGKILL (rc {returncode}) for {OUTAGE_S:.0f}s; "
                     f"{failed} write attempts failed meanwhile", server_returncode=returncode)

    def _random(self, worker: ch.WorkerProcess) -> Fault:
        # mostly while the chunk is being processed, sometimes once the worker has gone idle
        delay = self.rng.uniform(0.01, 0.4) if self.rng.random() < 0.6 else self.rng.uniform(0.4, 2.5)
        time.sleep(delay)
        return Fault("random", worker.kill("random"), f"killed {delay:.2f}s after the chunk was sent")

    def _sigterm(self, worker: ch.WorkerProcess) -> Fault:
        delay = self.rng.uniform(0.2, 2.5)
        time.sleep(delay)
        stop = worker.stop("sigterm")
        assert stop.returncode == 0, f"SIGTERM ended the worker with {stop.returncode}:\n{worker.log_tail()}"
        return Fault("sigterm", stop, f"SIGTERM {delay:.2f}s after the chunk was sent: exit 0")

    def _stuck_write(self, worker: ch.WorkerProcess) -> Fault:
        self.gateway.hold_before.set()
        held = self.gateway.wait_held(self.write_wait_s)
        kill = worker.kill("stuck_write")
        applied_then = held.applied
        self.gateway.release(drop=True)
        assert not applied_then, "the held write must not have reached InfluxDB"
        return Fault("stuck_write", kill, f"write #{held.number} held before InfluxDB, never applied")

    def _after_write(self, worker: ch.WorkerProcess) -> Fault:
        self.gateway.hold_after.set()
        held = self.gateway.wait_held(self.write_wait_s)
        applied, delivered = held.applied, held.delivered
        kill = worker.kill("after_write")
        self.gateway.release()
        assert applied and not delivered, "the held write must be in InfluxDB with its reply withheld"
        return Fault("after_write", kill,
                     f"write #{held.number} applied by InfluxDB (status {held.upstream_status}), "
                     "reply withheld: killed before its checkpoint")

    def _influx_paused(self, worker: ch.WorkerProcess) -> Fault:
        before = len(self.gateway.recorder.writes)
        self.influx.pause()
        try:
            ch.wait_for(lambda: any(w.upstream_status is None for w in self.gateway.recorder.writes[before:]),
                        "a write to the paused influxd", self.write_wait_s)
            stuck = next(w for w in self.gateway.recorder.writes[before:] if w.upstream_status is None)
            state = ch.proc_state(self.influx.pid)
            kill = worker.kill("influx_paused")
            assert state == "T", f"influxd state {state!r}, expected stopped"
        finally:
            self.influx.resume()
        ch.wait_for(lambda: stuck.upstream_status is not None, "influxd to answer the stuck write", 60.0)
        return Fault("influx_paused", kill,
                     f"write #{stuck.number} in flight to SIGSTOPped influxd (state T) at the kill; "
                     f"influxd answered {stuck.upstream_status} after SIGCONT")

    def verify(self) -> None:
        result = self.result
        client = self.redis_server.client()
        expected = ch.reference_points(self.workload.events, self.workload.window_s)
        actual = ch.read_points(self.influx, self.db)
        result.points_expected, result.points_read = len(expected), len(actual)
        result.mismatches = ch.compare(expected, actual, ch.field_types(self.influx, self.db))
        result.event_total = ch.event_total(actual)
        result.dead_letters = ch.dead_letters(client)
        writes = self.gateway.recorder.writes
        applied = [w for w in writes if w.applied]
        written = [point for w in applied for point in parse_write(w)]
        result.writes_recorded, result.writes_applied = len(writes), len(applied)
        result.points_written = len(written)
        versions = ch.entry_versions(self.sender, self.workload.window_s)
        result.written_value_problems = ch.check_written_values(written, versions)
