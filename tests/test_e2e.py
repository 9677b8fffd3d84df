"""End to end: producer -> real Redis -> worker (in-process and ``python -m consumer``) -> real InfluxDB.

The workload is known, so InfluxQL must return exactly the expected points and values.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from consumer.core.config import WorkerConfig
from consumer.pipeline.worker import Worker
from producers import Telemetry
from tests.services import InfluxServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "e2e"
WINDOW_S = 10


def _origin() -> float:
    """A window-aligned event time ten minutes ago: inside allowed lateness, never from the future."""
    return (time.time() // 60) * 60 - 600


def _send_workload(redis_url: str, t0: float) -> None:
    tel = Telemetry(redis_url=redis_url, prefix=PREFIX, shards=3)
    try:
        for i in range(30):
            ts = t0 + i                       # 3 windows of 10 s
            tel.emit("e2e_events", {"score": float(i), "ok": i % 3 == 0, "label": f"l{i}"},
                     tags={"bot_name": "elena", "user_id": f"u{i % 2}"}, ts=ts)
            tel.count("e2e_counts", "hits", 2, tags={"bot_name": "elena"}, ts=ts)
            tel.gauge("e2e_gauges", "depth", float(i * 10), tags={"bot_name": "marcus"}, ts=ts)
            tel.observe("e2e_latency", "ms", float(i % 10), tags={}, ts=ts)
        assert tel.flush(timeout=10)
    finally:
        tel.close()


def _expected(t0: float) -> dict[tuple[str, int, tuple[tuple[str, str], ...]], dict[str, Any]]:
    expected: dict[tuple[str, int, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    for window in range(3):
        time_ns = int((t0 + window * WINDOW_S) * 1e9)
        idx = list(range(window * 10, window * 10 + 10))
        for user in (0, 1):
            mine = [i for i in idx if i % 2 == user]
            scores = [float(i) for i in mine]
            expected[("e2e_events", time_ns, (("bot_name", "elena"), ("user_id", f"u{user}")))] = {
                "event_count": 5, "score": sum(scores) / 5, "score_min": min(scores),
                "score_max": max(scores), "score_sum": sum(scores), "ok": sum(1 for i in mine if i % 3 == 0),
                "label": f"l{max(mine)}"}
        expected[("e2e_counts", time_ns, (("bot_name", "elena"),))] = {"event_count": 10, "hits": 20}
        expected[("e2e_gauges", time_ns, (("bot_name", "marcus"),))] = {"event_count": 10,
                                                                         "depth": float(idx[-1] * 10)}
        expected[("e2e_latency", time_ns, ())] = {"event_count": 10, "ms_count": 10, "ms_sum": 45.0,
                                                  "ms_min": 0.0, "ms_max": 9.0, "ms_mean": 4.5}
    return expected


Rows = dict[tuple[str, int, tuple[tuple[str, str], ...]], dict[str, Any]]


def _query(server: InfluxServer, db: str) -> Rows:
    got: Rows = {}
    for measurement in ("e2e_events", "e2e_counts", "e2e_gauges", "e2e_latency"):
        for row in server.query(f'SELECT * FROM "{measurement}" GROUP BY *', db=db):
            tags = tuple(sorted((k, v) for k, v in row.items()
                                if k in ("bot_name", "user_id") and v not in (None, "")))
            fields = {k: v for k, v in row.items()
                      if k not in ("time", "_measurement", "bot_name", "user_id") and v is not None}
            got[(measurement, row["time"], tags)] = fields
    return got


def _assert_matches(got: dict[Any, dict[str, Any]], expected: dict[Any, dict[str, Any]]) -> None:
    assert set(got) == set(expected)
    for key, fields in expected.items():
        actual = {k: v for k, v in got[key].items() if not k.endswith(("_p50", "_p90", "_p99"))}
        assert set(actual) == set(fields), key
        for name, value in fields.items():
            assert actual[name] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-9)), key
    for key in expected:
        if key[0] == "e2e_latency":                # percentiles within 1% of the value at that rank
            p50, p99 = got[key]["ms_p50"], got[key]["ms_p99"]
            assert p50 == pytest.approx(4.0, rel=0.011) or p50 == pytest.approx(5.0, rel=0.011)
            assert p99 == pytest.approx(8.0, rel=0.011) or p99 == pytest.approx(9.0, rel=0.011)


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update({"TELEMETRY_REDIS_URL": redis_url, "TELEMETRY_STREAM_PREFIX": PREFIX, "TELEMETRY_SHARDS": "3",
                "TELEMETRY_WINDOW": f"{WINDOW_S}s", "TELEMETRY_GRACE": "0s", "TELEMETRY_LEASE": "3s",
                "TELEMETRY_BLOCK_MS": "100", "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def _worker_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "consumer", *args]


def test_in_process_worker_to_influx_v1(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    t0 = _origin()
    _send_workload(redis_server.url, t0)
    config = WorkerConfig(redis_url=redis_server.url, stream_prefix=PREFIX, shards=3, window_s=WINDOW_S,
                          grace_s=0, influx_url=server.url, influx_api="v1", influx_db=db, drain=True,
                          block_ms=100)
    worker = Worker(config)
    assert worker.run() == 0
    _assert_matches(_query(server, db), _expected(t0))
    assert worker.stats.totals["events_in"] == 120
    pipeline = server.query('SELECT sum("events_in") FROM "telemetry_pipeline"', db=db)
    assert pipeline[0]["sum"] == 120


def test_subprocess_drain_to_influx_v2_through_the_gateway(redis_server: RedisServer,
                                                           influx_v2: tuple[Any, InfluxServer, str]) -> None:
    gateway, server, db = influx_v2
    t0 = _origin()
    _send_workload(redis_server.url, t0)
    env = _env(redis_server.url, TELEMETRY_INFLUX_URL=gateway.url, TELEMETRY_INFLUX_API="v2",
               TELEMETRY_INFLUX_BUCKET=db, TELEMETRY_INFLUX_ORG="whisperengine",
               TELEMETRY_INFLUX_TOKEN="secret")
    done = subprocess.run(_worker_cmd("--drain"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "secret" not in done.stderr
    assert "stopped after" in done.stderr            # one summary line at exit
    _assert_matches(_query(server, db), _expected(t0))


def test_poison_through_real_influx_each_one_dead_letter(redis_server: RedisServer,
                                                         influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    t0 = _origin()
    server.write_lines(f"e2e_clash,bot_name=x v=\"text\" {int(t0 * 1e9)}", db=db)   # earlier data: a string
    tel = Telemetry(redis_url=redis_server.url, prefix=PREFIX, shards=3)
    tel.emit("e2e_clash", {"v": 1.5}, tags={"bot_name": "x"}, ts=t0 + 1)      # InfluxDB refuses: rejected
    tel.emit("e2e_ok", {"v": 1.5}, tags={"bot_name": "x", "note": "a b,c=d\"e"}, ts=t0 + 1)
    tel.emit("e2e_nan", {"v": float("nan")}, ts=t0 + 1)
    tel.emit("e2e_big", {"v": "x" * 1_000_000}, ts=t0 + 1)
    tel.emit("bad\nname", {"v": 1.0}, ts=t0 + 1)
    assert tel.flush(timeout=10)
    tel.close()
    client = redis_server.client()
    head = {"p": b"0123456789abcdef", "s": b"1", "n": b"1"}
    client.xadd(f"{PREFIX}:{{0}}", {"v": b"1", **head, "d": b"\x93\x00"})     # truncated msgpack
    client.xadd(f"{PREFIX}:{{1}}", {"v": b"2", **head, "d": b"\x90"})          # a format from the future
    config = WorkerConfig(redis_url=redis_server.url, stream_prefix=PREFIX, shards=3, window_s=WINDOW_S,
                          grace_s=0, influx_url=server.url, influx_api="v1", influx_db=db, drain=True)
    Worker(config).run()
    reasons = sorted(fields[b"reason"].decode() for _, fields in client.xrange(f"{PREFIX}:dlq"))
    assert reasons == ["invalid_name", "invalid_value", "invalid_value", "rejected", "undecodable",
                       "unknown_version"]
    rows = server.query('SELECT * FROM "e2e_ok"', db=db)
    assert [(r["v"], r["note"], r["event_count"]) for r in rows] == [(1.5, "a b,c=d\"e", 1)]


def _pending(client: Any) -> int:
    """Entries delivered to the group and not acknowledged, over all shards (0 before the group exists)."""
    total = 0
    for shard in range(3):
        with contextlib.suppress(redis.ResponseError):
            total += client.xpending(f"{PREFIX}:{{{shard}}}", "aggregator")["pending"]
    return total


def _run_until_progress(cmd: list[str], env: dict[str, str],
                        redis_server: RedisServer) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = redis_server.client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(client.exists(f"{PREFIX}:{{{s}}}:state") for s in range(3)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    return proc


def test_sigkill_mid_run_then_restart_gives_identical_results(
        redis_factory: Any, influx_session: InfluxServer) -> None:
    t0 = _origin()
    results = []
    for killed in (False, True):
        redis_server = redis_factory()
        db = f"kill{int(killed)}_{os.getpid()}"
        influx_session.create_database(db)
        _send_workload(redis_server.url, t0)
        env = _env(redis_server.url, TELEMETRY_INFLUX_URL=influx_session.url, TELEMETRY_INFLUX_API="v1",
                   TELEMETRY_INFLUX_DB=db, TELEMETRY_READ_COUNT="1", TELEMETRY_CHECKPOINT_INTERVAL="10ms")
        if killed:
            proc = _run_until_progress(_worker_cmd(), env, redis_server)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL          # the crash happened
            client = redis_server.client()
            assert client.xinfo_groups(f"{PREFIX}:{{0}}")             # mid-run: state exists...
        done = subprocess.run(_worker_cmd("--drain"), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        results.append(_query(influx_session, db))
        influx_session.execute(f'DROP DATABASE "{db}"')
    assert results[1] == results[0]
    _assert_matches(results[1], _expected(t0))


def test_sigterm_exits_zero_having_flushed(redis_server: RedisServer,
                                           influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    t0 = _origin()
    _send_workload(redis_server.url, t0)
    env = _env(redis_server.url, TELEMETRY_INFLUX_URL=server.url, TELEMETRY_INFLUX_API="v1",
               TELEMETRY_INFLUX_DB=db)
    proc = _run_until_progress(_worker_cmd(), env, redis_server)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    stderr = proc.stderr.read() if proc.stderr else ""
    assert sum("stopped after" in line for line in stderr.splitlines()) == 1
    _assert_matches(_query(server, db), _expected(t0))
    client = redis_server.client()
    assert all(client.xpending(f"{PREFIX}:{{{s}}}", "aggregator")["pending"] == 0 for s in range(3))


@pytest.mark.parametrize("cmd", [_worker_cmd(), [str(ROOT / ".venv" / "bin" / "telemetry"), "consume"]],
                         ids=["python-m-consumer", "telemetry-consume"])
def test_configuration_error_is_one_line_and_exit_2(cmd: list[str]) -> None:
    env = _env("redis://127.0.0.1:1/0", TELEMETRY_WINDOW="ten seconds")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "TELEMETRY_WINDOW" in lines[0], done.stderr


def test_sigterm_while_influx_hangs_checkpoints_and_a_restart_completes(
        redis_server: RedisServer, influx_server: InfluxServer) -> None:
    influx_server.create_database("hang")
    t0 = _origin()
    env = _env(redis_server.url, TELEMETRY_INFLUX_URL=influx_server.url, TELEMETRY_INFLUX_API="v1",
               TELEMETRY_INFLUX_DB="hang")
    influx_server.pause()                              # InfluxDB hangs: writes time out
    try:
        _send_workload(redis_server.url, t0)
        proc = subprocess.Popen(_worker_cmd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        client = redis_server.client()
        deadline = time.monotonic() + 60               # read, and stuck writing to InfluxDB
        while time.monotonic() < deadline and proc.poll() is None and _pending(client) < 3:
            time.sleep(0.05)
        time.sleep(4)                                  # longer than the lease: the write still hangs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0                # one bounded write attempt, then out
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "lease on shard" not in stderr          # leases kept while the write hung
        assert "InfluxDB unreachable at" in stderr      # the fault: the write really failed
    finally:
        influx_server.resume()
    # Whether influxd applies the request that sat in its socket while it was stopped is up to it;
    # the worker has nothing unacknowledged either way, and the restart below makes the result exact.
    assert all(client.xpending(f"{PREFIX}:{{{s}}}", "aggregator")["pending"] == 0 for s in range(3))
    done = subprocess.run(_worker_cmd("--drain"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _assert_matches(_query(influx_server, "hang"), _expected(t0))
