"""The listener path under faults: HTTP writers -> ``telemetry listen`` -> Redis -> worker -> InfluxDB.

Writers send line-protocol bodies to a real ``telemetry listen`` process and retry as
influxdb-client does (a 503 or 429 after its ``Retry-After``; a refused or dropped connection after
a short pause, on a new connection), until each body is answered 204. Meanwhile, once each at a
set number of acknowledged bodies, so that each fault lands mid-stream:

    worker_kill       the worker is SIGKILLed and a new one started
    listener_restart  the listener is stopped with SIGTERM (a deploy, a ``systemctl restart``) and a
                      new process started on the same port: writers see the port closed meanwhile
    redis_restart     redis-server is SIGKILLed under both, restarted from its append-only file a
                      second later: writers see 503s meanwhile

Every point of every acknowledged body is the reference (``tests/chaos_harness.reference_points``,
which never imports the pipeline); what InfluxDB holds at the end must equal it exactly: nothing
acknowledged lost, nothing doubled. Each fault carries its proof (exit status, PIDs, what the
writers saw).
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from consumer.core.model import Point
from consumer.sinks.line_protocol import encode_points
from producers import wire
from tests import chaos_harness as ch
from tests.chaos_scenario import Fault, caught_up, restart_redis
from tests.listen_process import telemetry_script, wait_listening
from tests.services import InfluxServer, RedisServer, free_port

FAULTS: Final = ("worker_kill", "listener_restart", "redis_restart")
TOKEN: Final = "chaos-listen-token"
CLIENT_TIMEOUT_S: Final = 10.0
BODY_DEADLINE_S: Final = 90.0
RECONNECT_PAUSE_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class Body:
    """One write request: its events (the reference's input) and their line protocol."""

    number: int
    events: tuple[ch.WorkEvent, ...]
    payload: bytes


def bodies_of(events: Sequence[ch.WorkEvent], per_body: int) -> list[Body]:
    """``events`` as line-protocol bodies of ``per_body`` lines, timestamps in nanoseconds."""
    out = []
    for number, start in enumerate(range(0, len(events), per_body)):
        chunk = tuple(events[start:start + per_body])
        points = [Point(e.measurement, tuple(sorted(e.tags.items())), dict(e.fields),
                        round(e.ts * 1e6) * 1000) for e in chunk]
        out.append(Body(number, chunk, encode_points(points)))
    return out


def emit_events(workload: ch.Workload) -> list[ch.WorkEvent]:
    """The workload's ``emit`` events: what a point (line protocol) can say. Counts and gauges
    are producer calls with no line-protocol form."""
    return [event for event in workload.events if event.kind == wire.KIND_EMIT]


class RetryingWriter(threading.Thread):
    """One HTTP client on a kept-alive connection, writing its bodies one after the other.

    Retries like influxdb-client's write API: 429/503 after ``Retry-After`` seconds, a connection
    error (refused, reset, closed mid-answer) on a new connection after a short pause; anything
    else ends the writer with an error. A body counts as acknowledged only on 204.
    """

    def __init__(self, name: str, port: int, bodies: Sequence[Body], pace_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self.port = port
        self.bodies = list(bodies)
        self.pace_s = pace_s
        self.acknowledged: list[Body] = []
        self.statuses: Counter[int] = Counter()
        self.connection_errors = 0
        self.error: str | None = None
        self._connection: http.client.HTTPConnection | None = None

    def run(self) -> None:
        try:
            for body in self.bodies:
                self._send(body)
                time.sleep(self.pace_s)
        except AssertionError as exc:
            self.error = str(exc)
        finally:
            self._close()

    def _send(self, body: Body) -> None:
        deadline = time.monotonic() + BODY_DEADLINE_S
        while time.monotonic() < deadline:
            try:
                status, retry_after = self._post(body.payload)
            except (OSError, http.client.HTTPException):
                self.connection_errors += 1
                self._close()
                time.sleep(RECONNECT_PAUSE_S)
                continue
            self.statuses[status] += 1
            if status == 204:
                self.acknowledged.append(body)
                return
            if status not in (429, 503):
                raise AssertionError(f"{self.name}: body {body.number} answered {status}")
            time.sleep(float(retry_after or 1))
        raise AssertionError(f"{self.name}: body {body.number} not accepted within {BODY_DEADLINE_S}s")

    def _post(self, payload: bytes) -> tuple[int, str | None]:
        if self._connection is None:
            self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT_S)
        self._connection.request("POST", "/api/v2/write?org=whisperengine&bucket=whisperengine&precision=ns",
                                 body=payload, headers={"Authorization": f"Token {TOKEN}",
                                                        "Content-Type": "text/plain; charset=utf-8"})
        response = self._connection.getresponse()
        response.read()
        if response.will_close:
            self._close()
        return response.status, response.getheader("Retry-After")

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass(slots=True)
class ListenerChaosResult:
    """What a run observed: faults with their proofs, what writers saw, the comparison."""

    bodies: int = 0
    acknowledged_bodies: int = 0
    acknowledged_lines: int = 0
    faults: list[Fault] = field(default_factory=list)
    acknowledged_at_fault: dict[str, int] = field(default_factory=dict)
    listener_pids: list[int] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    writer_errors: list[str] = field(default_factory=list)
    drain_returncode: int | None = None
    drain_log: str = ""
    points_expected: int = 0
    points_read: int = 0
    mismatches: list[str] = field(default_factory=list)
    event_total: int = 0
    dead_letters: int = 0

    def fault(self, kind: str) -> Fault:
        return next(f for f in self.faults if f.kind == kind)


class ListenerChaosRunner:
    """Runs the three faults of :data:`FAULTS` while :class:`RetryingWriter` threads send."""

    def __init__(self, redis_server: RedisServer, influx: InfluxServer, db: str, work_dir: Path, *,
                 seed: int, events: int = 4000, windows: int = 12, per_body: int = 40,
                 writers: int = 2, pace_s: float = 0.01) -> None:
        self.redis_server = redis_server
        self.influx = influx
        self.db = db
        t0_s = ch.first_window_for(time.time(), 10.0, windows)
        self.workload = ch.make_workload(seed, t0_s=t0_s, windows=windows, events=events)
        bodies = bodies_of(emit_events(self.workload), per_body)
        rng = random.Random(seed)
        rng.shuffle(bodies)   # writers are independent: arrival order is not event-time order
        self.port = free_port()
        self.writers = [RetryingWriter(f"writer-{n}", self.port, bodies[n::writers], pace_s)
                        for n in range(writers)]
        self.env = ch.worker_env(redis_server.url, influx.url, db, TELEMETRY_LEASE="2s",
                                 TELEMETRY_CHECKPOINT_INTERVAL="500ms", TELEMETRY_LISTEN_PORT=str(self.port),
                                 TELEMETRY_LISTEN_TOKEN=TOKEN)
        self.worker_log = work_dir / "worker.log"
        self.listener_log = work_dir / "listener.log"
        self.result = ListenerChaosResult(bodies=len(bodies))

    # -- processes --------------------------------------------------------------------------
    def worker(self, args: Sequence[str] = ()) -> ch.WorkerProcess:
        name = f"listener-chaos-{len(self.result.worker_pids) + 1}"
        return ch.WorkerProcess({**self.env, "TELEMETRY_CONSUMER": name}, self.worker_log, args)

    def listener(self) -> ch.WorkerProcess:
        """A real ``telemetry listen``, answering ``/ping`` before it is returned."""
        process = ch.WorkerProcess(self.env, self.listener_log, ["listen"],
                                   command=[telemetry_script()]).start()
        assert wait_listening(self.port, process.alive), f"no listener; log:\n{process.log_tail()}"
        self.result.listener_pids.append(process.pid)
        return process

    # -- what the writers have seen ---------------------------------------------------------
    def acknowledged(self) -> int:
        return sum(len(w.acknowledged) for w in self.writers)

    def seen(self, what: Callable[[RetryingWriter], int]) -> int:
        return sum(what(w) for w in self.writers)

    def wait_acknowledged(self, count: int) -> None:
        ch.wait_for(lambda: self.acknowledged() >= count or not any(w.is_alive() for w in self.writers),
                    f"{count} acknowledged bodies", BODY_DEADLINE_S)
        assert self.acknowledged() >= count, f"writers stopped: {[w.error for w in self.writers]}"

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> ListenerChaosResult:
        worker = self.worker().start()
        self.result.worker_pids.append(worker.pid)
        listener = self.listener()
        try:
            for writer in self.writers:
                writer.start()
            total = self.result.bodies
            for step, kind in enumerate(FAULTS, start=1):
                self.wait_acknowledged(step * total // (len(FAULTS) + 1))
                self.result.acknowledged_at_fault[kind] = self.acknowledged()
                if kind == "worker_kill":
                    worker = self._kill_worker(worker)
                elif kind == "listener_restart":
                    listener = self._restart_listener(listener)
                else:
                    self._restart_redis()
            for writer in self.writers:
                writer.join(BODY_DEADLINE_S)
            ch.wait_for(lambda: caught_up(self.redis_server.client()), "the worker to catch up", 90.0)
        finally:
            listener.terminate()
            worker.terminate()
        drain = self.worker(["--drain"])
        self.result.drain_returncode = drain.run(timeout_s=180)
        self.result.drain_log = drain.log_tail(60)
        self.verify()
        return self.result

    def _kill_worker(self, worker: ch.WorkerProcess) -> ch.WorkerProcess:
        kill = worker.kill("worker_kill")
        replacement = self.worker().start()
        self.result.worker_pids.append(replacement.pid)
        self.result.faults.append(Fault("worker_kill", kill, f"worker {kill.pid} died of SIGKILL "
                                        f"(rc {kill.returncode}); worker {replacement.pid} started"))
        return replacement

    def _restart_listener(self, listener: ch.WorkerProcess) -> ch.WorkerProcess:
        errors_before = self.seen(lambda w: w.connection_errors)
        stop = listener.stop("listener_restart")
        replacement = self.listener()
        errors = self.seen(lambda w: w.connection_errors) - errors_before
        self.result.faults.append(Fault(
            "listener_restart", stop, f"listener {stop.pid} stopped by SIGTERM (rc {stop.returncode}); "
            f"listener {replacement.pid} on the same port; writers saw {errors} connection errors meanwhile"))
        return replacement

    def _restart_redis(self) -> None:
        unavailable_before = self.seen(lambda w: w.statuses[503])
        returncode, reloaded = restart_redis(self.redis_server, writers_running=True)
        unavailable = self.seen(lambda w: w.statuses[503]) - unavailable_before
        self.result.faults.append(Fault(
            "redis_restart", None, f"redis-server died of SIGKILL (rc {returncode}); restarted from its AOF "
            f"with {reloaded} entries; writers were answered 503 {unavailable} times meanwhile",
            server_returncode=returncode))

    def verify(self) -> None:
        result = self.result
        acknowledged = [body for w in self.writers for body in w.acknowledged]
        events = [event for body in sorted(acknowledged, key=lambda b: b.number) for event in body.events]
        result.acknowledged_bodies, result.acknowledged_lines = len(acknowledged), len(events)
        result.statuses = sum((w.statuses for w in self.writers), Counter())
        result.connection_errors = self.seen(lambda w: w.connection_errors)
        result.writer_errors = [w.error for w in self.writers if w.error]
        expected = ch.reference_points(events, self.workload.window_s)
        actual = ch.read_points(self.influx, self.db)
        result.points_expected, result.points_read = len(expected), len(actual)
        result.mismatches = ch.compare(expected, actual, ch.field_types(self.influx, self.db))
        result.event_total = ch.event_total(actual)
        result.dead_letters = ch.dead_letters(self.redis_server.client())
