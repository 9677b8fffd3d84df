"""``telemetry listen`` on a real Redis (and influxd behind a worker): every answer provoked for real.

The listener runs in a thread of the test process on a free loopback port; clients are plain
HTTP (urllib), gzip bodies, and influxdb-client itself (synchronous and batching write APIs) with
its URL pointed at the listener instead of influxd.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from aiohttp import web
from influxdb_client import InfluxDBClient, Point, WriteOptions
from influxdb_client.client.write_api import SYNCHRONOUS

from consumer.core.config import WorkerConfig
from consumer.pipeline.listener import Listener, ListenerConfig
from consumer.pipeline.worker import Worker
from producers.wire import KIND_POINT, KIND_REJECTED, decode_entry
from tests.services import InfluxServer, RedisServer, free_port

PREFIX = "lsn"
SHARDS = 2


class RunningListener:
    """A listener serving in a background thread (its own event loop) until :meth:`stop`."""

    def __init__(self, redis_url: str, port: int | None = None, **options: Any) -> None:
        self.port = port or free_port()
        self.config = ListenerConfig(redis_url=redis_url, prefix=PREFIX, shards=SHARDS,
                                     stream_maxlen=1_000_000, port=self.port, **options)
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.listener = Listener(self.config)
        self._runner = web.AppRunner(self.listener.app())
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())

    def start(self) -> RunningListener:
        self._thread.start()
        assert self._ready.wait(10), "the listener did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def listener(redis_server: RedisServer) -> Iterator[RunningListener]:
    running = RunningListener(redis_server.url).start()
    yield running
    running.stop()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def stored_events(server: RedisServer) -> list[list[Any]]:
    client = server.client()
    events: list[list[Any]] = []
    for shard in range(SHARDS):
        for _id, fields in client.xrange(f"{PREFIX}:{{{shard}}}"):
            events.extend(decode_entry(fields).events)
    return events


def test_v1_and_v2_writes_are_in_redis_before_204(redis_server: RedisServer,
                                                  listener: RunningListener) -> None:
    status, headers, _ = post(f"{listener.url}/write?db=x&precision=s", b"cpu,host=a usage=0.5 1700000000\n")
    assert status == 204
    assert "X-Influxdb-Version" in headers
    body = gzip.compress(b"cpu,host=b usage=1i 1700000000000\ncpu,host=c ok=true 1700000000001")
    status, _, _ = post(f"{listener.url}/api/v2/write?org=o&bucket=b&precision=ms", body,
                        {"Content-Encoding": "gzip"})
    assert status == 204
    points = sorted((e for e in stored_events(redis_server) if e[0] == KIND_POINT),
                    key=lambda e: e[3]["host"])
    assert points == [
        [KIND_POINT, "cpu", 1_700_000_000_000_000_000, {"host": "a"}, {"usage": 0.5}],
        [KIND_POINT, "cpu", 1_700_000_000_000_000_000, {"host": "b"}, {"usage": 1}],
        [KIND_POINT, "cpu", 1_700_000_000_001_000_000, {"host": "c"}, {"ok": True}],
    ]
    with urllib.request.urlopen(f"{listener.url}/ping", timeout=5) as response:
        assert response.status == 204
    with urllib.request.urlopen(f"{listener.url}/health", timeout=5) as response:
        assert json.loads(response.read())["status"] == "pass"
    with urllib.request.urlopen(f"{listener.url}/metrics", timeout=5) as response:
        page = response.read().decode()
    assert 'telemetry_listen_requests_total{status="204"} 2.0' in page
    assert 'telemetry_listen_lines_total{outcome="accepted"} 3.0' in page


def test_bad_lines_are_named_and_dead_lettered_while_the_rest_go_through(
        redis_server: RedisServer, listener: RunningListener) -> None:
    body = b"m,t=1 x=1 1\nm,t=2 x= 2\nm,t=3 x=3 3\nnot a line\n"
    status, _, raw = post(f"{listener.url}/write", body)
    assert status == 400
    message = json.loads(raw)["message"]
    assert "line(s) 2, 4" in message and "2 valid line(s) accepted" in message
    events = stored_events(redis_server)
    assert sorted(e[3]["t"] for e in events if e[0] == KIND_POINT) == ["1", "3"]
    rejected = [e for e in events if e[0] == KIND_REJECTED]
    assert sorted(e[4]["line"] for e in rejected) == ["m,t=2 x= 2", "not a line"]


def test_body_limit_bad_precision_and_tokens(redis_server: RedisServer) -> None:
    running = RunningListener(redis_server.url, max_body_bytes=1_000, token="s3cret").start()
    try:
        good = {"Authorization": "Token s3cret"}
        assert post(f"{running.url}/write", b"m x=1", good)[0] == 204
        assert post(f"{running.url}/write", b"m x=1")[0] == 401
        assert post(f"{running.url}/write", b"m x=1", {"Authorization": "Token wrong"})[0] == 401
        assert post(f"{running.url}/write?u=me&p=s3cret", b"m x=1")[0] == 204
        basic = base64.b64encode(b"me:s3cret").decode()
        assert post(f"{running.url}/write", b"m x=1", {"Authorization": f"Basic {basic}"})[0] == 204
        assert post(f"{running.url}/api/v2/write", b"m x=1", {"Authorization": "Bearer s3cret"})[0] == 204
        assert post(f"{running.url}/write", b"m x=1\n" * 500, good)[0] == 413
        assert post(f"{running.url}/write?precision=fortnight", b"m x=1", good)[0] == 400
    finally:
        running.stop()
    assert len([e for e in stored_events(redis_server) if e[0] == KIND_POINT]) == 4


def test_redis_down_is_503_with_retry_after_and_nothing_is_lost_after_it_returns(
        redis_server: RedisServer, listener: RunningListener) -> None:
    assert post(f"{listener.url}/write", b"m n=1i 1")[0] == 204
    redis_server.stop()
    assert not redis_server.ping()                      # the fault happened
    status, headers, _ = post(f"{listener.url}/write", b"m n=2i 2")
    assert status == 503
    assert headers["Retry-After"] == "1"
    with pytest.raises(urllib.error.HTTPError) as health:
        urllib.request.urlopen(f"{listener.url}/health", timeout=5)
    assert health.value.code == 503
    redis_server.start()
    deadline = time.monotonic() + 20
    while (status := post(f"{listener.url}/write", b"m n=2i 2")[0]) != 204 and time.monotonic() < deadline:
        time.sleep(0.2)                                 # what a client's own retry does
    assert status == 204
    assert sorted(e[4]["n"] for e in stored_events(redis_server)) == [1, 2]   # appendonly: the first survived


def _origin_ns() -> int:
    return int((time.time() // 60) * 60 - 600) * 1_000_000_000


def test_influxdb_client_pointed_at_the_listener_lands_in_influxdb(
        redis_server: RedisServer, listener: RunningListener, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    t0 = _origin_ns()
    with InfluxDBClient(url=listener.url, token="any", org="whisperengine") as client:
        sync = client.write_api(write_options=SYNCHRONOUS)
        for i in range(10):
            sync.write(bucket="whisperengine", record=Point("via_listener").tag("user_id", "u1")
                       .field("score", float(i)).field("flag", i % 2 == 0).time(t0 + i))
        with client.write_api(write_options=WriteOptions(batch_size=4, flush_interval=100)) as batching:
            for i in range(10):
                batching.write(bucket="whisperengine", record=Point("via_listener").tag("user_id", "u2")
                               .field("score", float(i)).field("flag", True).time(t0 + i))
    config = WorkerConfig(redis_url=redis_server.url, stream_prefix=PREFIX, shards=SHARDS, window_s=10,
                          grace_s=0, influx_url=server.url, influx_api="v1", influx_db=db, drain=True,
                          block_ms=100)
    assert Worker(config).run() == 0
    rows = {row["user_id"]: row for row in server.query('SELECT * FROM "via_listener" GROUP BY *', db=db)}
    assert set(rows) == {"u1", "u2"}
    assert rows["u1"]["time"] == t0 and rows["u1"]["event_count"] == 10
    assert rows["u1"]["score"] == pytest.approx(4.5) and rows["u1"]["flag"] == 5
    assert rows["u2"]["event_count"] == 10 and rows["u2"]["flag"] == 10


def _listen_process(redis_url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update({"TELEMETRY_REDIS_URL": redis_url, "TELEMETRY_STREAM_PREFIX": PREFIX,
                "TELEMETRY_SHARDS": str(SHARDS)})
    command = [sys.executable, "-c", "from consumer.cli.app import main; main()", "listen", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_command_serves_with_several_processes_and_stops_on_sigterm(redis_server: RedisServer) -> None:
    port = free_port()
    process = _listen_process(redis_server.url, "--port", str(port), "--processes", "2")
    try:
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                status = post(f"http://127.0.0.1:{port}/write", b"m x=1 1")[0]
                break
            time.sleep(0.2)
        assert status == 204
        for i in range(20):   # new connections: the kernel spreads them over both processes
            assert post(f"http://127.0.0.1:{port}/write", f"m x={i} {i + 2}".encode())[0] == 204
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    producers_seen = {decode_entry(fields).producer_id
                      for shard in range(SHARDS)
                      for _id, fields in redis_server.client().xrange(f"{PREFIX}:{{{shard}}}")}
    assert len(stored_events(redis_server)) == 21
    assert 1 <= len(producers_seen) <= 2


def test_a_bad_setting_is_one_line_naming_it(redis_server: RedisServer) -> None:
    process = _listen_process(redis_server.url, "--port", "70000")
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert err.strip().splitlines()[-1] == ("telemetry: configuration error: --port=70000 is not a TCP port "
                                            "(0-65535)")


def _worker_env(redis_url: str, influx_url: str, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update({"TELEMETRY_REDIS_URL": redis_url, "TELEMETRY_STREAM_PREFIX": PREFIX,
                "TELEMETRY_SHARDS": str(SHARDS), "TELEMETRY_WINDOW": "10s", "TELEMETRY_GRACE": "0s",
                "TELEMETRY_LEASE": "2s", "TELEMETRY_BLOCK_MS": "100", "TELEMETRY_INFLUX_URL": influx_url,
                "TELEMETRY_INFLUX_API": "v1", "TELEMETRY_INFLUX_DB": db,
                "TELEMETRY_CHECKPOINT_INTERVAL": "200ms"})
    return env


def _send_until_accepted(url: str, body: bytes) -> int:
    """What a write client's retry does: the same body again until 204; how many tries it took."""
    for attempt in range(1, 400):
        with contextlib.suppress(OSError):
            if post(f"{url}/write?precision=ns", body)[0] == 204:
                return attempt
        time.sleep(0.05)
    raise AssertionError("the body was never accepted")


def _later(delay_s: float, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` after ``delay_s`` in a thread, while the client goes on sending."""
    def run() -> None:
        time.sleep(delay_s)
        action()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_listener_path_is_exact_across_worker_kill_listener_restart_and_redis_restart(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    t0 = _origin_ns()
    env = _worker_env(redis_server.url, server.url, db)
    command = [sys.executable, "-m", "consumer"]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    listeners = [RunningListener(redis_server.url).start()]
    port = listeners[0].port
    url = listeners[0].url
    retried, bodies, per_body = 0, 60, 50
    faults: list[threading.Thread] = []

    def restart_listener() -> None:
        listeners[-1].stop()
        time.sleep(0.3)
        listeners.append(RunningListener(redis_server.url, port=port).start())

    def restart_redis() -> None:
        redis_server.kill()                         # kill -9, whatever is in flight
        time.sleep(0.5)
        redis_server.start()

    try:
        for b in range(bodies):
            if b == 10:
                worker.kill()                       # kill -9 mid-stream
                assert worker.wait(10) == -signal.SIGKILL
                worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
            if b == 20:
                faults.append(_later(0.0, restart_listener))
            if b == 40:
                faults.append(_later(0.0, restart_redis))
            lines = "".join(f"via_listener_chaos,user_id=u{i % 7} n={b * per_body + i}i "
                            f"{t0 + (b * per_body + i) * 1_000_000}\n" for i in range(per_body))
            retried += _send_until_accepted(url, lines.encode()) - 1
        for fault in faults:
            fault.join(30)
    finally:
        listeners[-1].stop()
        worker.kill()
        worker.wait(10)
    assert len(listeners) == 2                      # the listener did restart
    drained = subprocess.run([*command, "--drain"], env=env, capture_output=True, text=True, timeout=120)
    assert drained.returncode == 0, drained.stderr
    total = bodies * per_body
    rows = server.query('SELECT sum("event_count") AS events, sum("n_sum") AS n FROM "via_listener_chaos"',
                        db=db)
    assert rows[0]["events"] == total               # none lost, none doubled
    assert rows[0]["n"] == sum(range(total))
    assert retried > 0                              # the client saw the outages and retried


class _ReplyLostOnce:
    """A redis.asyncio client whose first transaction is applied but whose answer never arrives."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.lost = 0

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self._client.pipeline(transaction=transaction)
        execute = pipe.execute
        owner = self

        async def execute_then_lose() -> Any:
            result = await execute()
            if not owner.lost:
                owner.lost += 1
                raise redis.ConnectionError("connection reset after EXEC")
            return result

        pipe.execute = execute_then_lose
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_lost_answer_is_resent_identically_and_the_retry_is_not_added_again() -> None:
    import fakeredis

    shared = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=shared)
    client = _ReplyLostOnce(fakeredis.aioredis.FakeRedis(server=shared))

    async def scenario() -> list[int]:
        listener = Listener(ListenerConfig(redis_url="redis://unused", prefix=PREFIX, shards=1,
                                           stream_maxlen=1_000), client=client)
        app = listener.app()
        statuses = []
        from aiohttp.test_utils import TestClient, TestServer
        async with TestClient(TestServer(app)) as http:
            for body in (b"m n=1i 1", b"m n=1i 1", b"m n=2i 2"):
                response = await http.post("/write", data=body)
                statuses.append(response.status)
        return statuses

    assert asyncio.run(scenario()) == [503, 204, 204]
    assert client.lost == 1                                  # the fault happened
    entries = [decode_entry(fields) for _id, fields in sync.xrange(f"{PREFIX}:{{0}}")]
    # the unanswered entry was sent again, identical (same producer and sequence: the worker applies
    # it once), and the client's retry added nothing more; the next body took the next sequence
    assert [(e.sequence, [ev[4] for ev in e.events]) for e in entries] == [
        (1, [{"n": 1}]), (1, [{"n": 1}]), (2, [{"n": 2}])]
    assert len({e.producer_id for e in entries}) == 1
