"""``telemetry doctor`` against a real pipeline: real producer, real worker, real Redis and InfluxDB.

The healthy cases must pass (exit 0, no false alarm) and each provoked failure must give its own
first ✗ with a fix that works when followed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from typer.testing import CliRunner

from consumer.core.config import DEFAULT_GROUP, WorkerConfig
from consumer.pipeline.worker import Worker
from producers import Telemetry
from producers.keys import lease_key, stream_key
from tests.cli_harness import make_app, stream_flags
from tests.fake_http import JsonHandler, serving
from tests.services import InfluxServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "dp"
SHARDS = 2


def _doctor(redis_url: str, influx_url: str, db: str, *args: str, env: dict[str, str] | None = None,
            prefix: str = PREFIX, influx_flags: Sequence[str] | None = None) -> tuple[int, dict[str, Any]]:
    """``telemetry doctor --json``: exit code and checks by name; v1 flags for ``db`` unless
    ``influx_flags`` says otherwise."""
    flags = ["--influx-api", "v1", "--influx-db", db] if influx_flags is None else list(influx_flags)
    result = CliRunner().invoke(
        make_app("consumer.cli.doctor"),
        ["doctor", "--json", *stream_flags(redis_url, prefix, SHARDS), "--influx-url", influx_url,
         *flags, *args],
        env={"GRAFANA_URL": "", "TELEMETRY_INFLUX_USER": "", "TELEMETRY_INFLUX_PASSWORD": "", **(env or {})},
    )
    assert result.exit_code in (0, 1), result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] == (result.exit_code == 0)
    return result.exit_code, {c["name"]: c for c in doc["checks"]}


def _emit(redis_url: str, measurement: str, fields: dict[str, Any], *, ts: float | None = None,
          tags: dict[str, str] | None = None) -> None:
    tel = Telemetry(redis_url=redis_url, prefix=PREFIX, shards=SHARDS)
    try:
        tel.emit(measurement, fields, tags=tags, ts=ts)
        assert tel.flush(timeout=10)
    finally:
        tel.close()


def _config(redis_url: str, influx_url: str, db: str, **overrides: Any) -> WorkerConfig:
    settings: dict[str, Any] = {
        "redis_url": redis_url, "stream_prefix": PREFIX, "shards": SHARDS, "window_s": 10, "grace_s": 0,
        "influx_url": influx_url, "influx_api": "v1", "influx_db": db, "block_ms": 100, **overrides,
    }
    return WorkerConfig(**settings)


def _drain(redis_url: str, influx_url: str, db: str) -> Worker:
    worker = Worker(_config(redis_url, influx_url, db, drain=True))
    assert worker.run() == 0
    return worker


def _statuses(checks: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


def _first_failure(checks: dict[str, Any]) -> str | None:
    return next((name for name, check in checks.items() if check["status"] == "fail"), None)


def _fails_first(check: str, *doctor_args: str, **doctor_options: Any) -> dict[str, Any]:
    """Run the doctor, assert that ``check`` is its first ✗ (exit 1), and return every check."""
    code, checks = _doctor(*doctor_args, **doctor_options)
    assert (code, _first_failure(checks)) == (1, check), _statuses(checks)
    return checks


def _passes(*doctor_args: str, **doctor_options: Any) -> dict[str, Any]:
    """Run the doctor, assert exit 0 (no ✗ at all), and return every check."""
    code, checks = _doctor(*doctor_args, **doctor_options)
    assert code == 0, {name: check["summary"] for name, check in checks.items() if check["status"] == "fail"}
    return checks


def test_right_after_a_drain_of_a_non_catalogue_measurement_everything_passes(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    """The new user's first run: emit one event, drain it, ask the doctor."""
    server, db = influx
    _emit(redis_server.url, "clibar_m", {"x": 1}, tags={"user_id": "u1"})
    worker = _drain(redis_server.url, server.url, db)
    assert (worker.stats.totals["events_in"], worker.stats.totals["points_out"]) == (1, 1)
    checks = _passes(redis_server.url, server.url, db)
    assert _first_failure(checks) is None
    # the entry was acknowledged and trimmed, but the stream did receive it
    assert checks["streams_receive"]["status"] == "ok"
    assert checks["streams_receive"]["details"]["newest_age_s"] < 60
    # the point is data, even outside the catalogue
    assert checks["points"]["status"] == "ok"
    assert checks["points"]["details"]["other"] == {"clibar_m": 1}
    assert "clibar_m" in checks["points"]["summary"]
    # a drain run reports on itself at the end
    assert checks["self_telemetry"]["status"] == "ok"
    # the worker exited: not "live", but nothing waits, so nothing is wrong
    assert checks["consumer_live"]["status"] == "warn"
    assert worker.worker_id in checks["consumer_live"]["summary"]
    assert "exited" in checks["consumer_live"]["summary"]
    assert "telemetry consume" in checks["consumer_live"]["fix"]


def _healthy(redis_server: RedisServer, influx_url: str, db: str) -> None:
    _emit(redis_server.url, "clibar_m", {"x": 1}, tags={"user_id": "u1"})
    _drain(redis_server.url, influx_url, db)


def _fix_setting(fix: str, variable: str) -> str:
    """The value ``fix`` gives ``variable`` (``VARIABLE=value``)."""
    return fix.split(f"{variable}=", 1)[1].split()[0].rstrip(";,)")


def test_redis_down(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy(redis_server, server.url, db)
    redis_server.kill()
    checks = _fails_first("redis", redis_server.url, server.url, db)
    assert "start Redis" in checks["redis"]["fix"]
    redis_server.start()   # following the fix (append-only file: the data is back)
    _passes(redis_server.url, server.url, db)


def test_wrong_prefix_names_the_prefix_in_use(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy(redis_server, server.url, db)
    checks = _fails_first("streams_exist", redis_server.url, server.url, db, prefix="telemetry")
    fix = checks["streams_exist"]["fix"]
    assert _fix_setting(fix, "TELEMETRY_STREAM_PREFIX") == PREFIX
    assert "TELEMETRY_REDIS_URL" not in fix
    prefix = _fix_setting(fix, "TELEMETRY_STREAM_PREFIX")
    _passes(redis_server.url, server.url, db, prefix=prefix)


def test_wrong_database_names_the_database_in_use(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy(redis_server, server.url, db)
    wrong = redis_server.url.rsplit("/", 1)[0] + "/3"
    checks = _fails_first("streams_exist", wrong, server.url, db)
    fix = checks["streams_exist"]["fix"]
    assert _fix_setting(fix, "TELEMETRY_REDIS_URL") == redis_server.url
    _passes(_fix_setting(fix, "TELEMETRY_REDIS_URL"), server.url, db)


def test_worker_never_started(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _emit(redis_server.url, "clibar_m", {"x": 1})
    checks = _fails_first("group_exists", redis_server.url, server.url, db)
    assert "no worker has ever read" in checks["group_exists"]["summary"]
    assert "telemetry consume" in checks["group_exists"]["fix"]
    _drain(redis_server.url, server.url, db)
    _passes(redis_server.url, server.url, db)


def test_consumer_group_gone_or_named_differently(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy(redis_server, server.url, db)
    checks = _fails_first("group_exists", redis_server.url, server.url, db, "--group", "other")
    assert _fix_setting(checks["group_exists"]["fix"], "TELEMETRY_GROUP") == "aggregator"
    client = redis_server.client()
    for shard in range(SHARDS):
        client.xgroup_destroy(stream_key(PREFIX, shard), "aggregator")
    _emit(redis_server.url, "clibar_m", {"x": 2})
    checks = _fails_first("group_exists", redis_server.url, server.url, db)
    assert "telemetry consume" in checks["group_exists"]["fix"]
    worker = _drain(redis_server.url, server.url, db)   # recreates the group, resumes from its checkpoint
    assert worker.stats.totals["events_in"] == 1
    _passes(redis_server.url, server.url, db)


def test_worker_stopped_while_events_arrive(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy(redis_server, server.url, db)
    _emit(redis_server.url, "clibar_m", {"x": 2})
    checks = _fails_first("consumer_live", redis_server.url, server.url, db)
    assert "entries waiting: 1" in checks["consumer_live"]["summary"]
    assert "telemetry consume" in checks["consumer_live"]["fix"]
    _drain(redis_server.url, server.url, db)
    _passes(redis_server.url, server.url, db)


def test_influx_down(redis_server: RedisServer, influx_server: InfluxServer) -> None:
    influx_server.create_database("whisperengine")
    _healthy(redis_server, influx_server.url, "whisperengine")
    influx_server.kill()
    checks = _fails_first("influx", redis_server.url, influx_server.url, "whisperengine")
    assert "start InfluxDB" in checks["influx"]["fix"]
    influx_server.start()
    _passes(redis_server.url, influx_server.url, "whisperengine")


def test_bad_credentials(redis_server: RedisServer, auth_influx: InfluxServer) -> None:
    _emit(redis_server.url, "clibar_m", {"x": 1})
    worker = Worker(_config(redis_server.url, auth_influx.url, "whisperengine", drain=True,
                            influx_user="admin", influx_password="right"))
    assert worker.run() == 0
    env = {"TELEMETRY_INFLUX_USER": "admin", "TELEMETRY_INFLUX_PASSWORD": "wrong"}
    checks = _fails_first("influx_auth", redis_server.url, auth_influx.url, "whisperengine", env=env)
    assert "TELEMETRY_INFLUX_PASSWORD" in checks["influx_auth"]["fix"]
    env["TELEMETRY_INFLUX_PASSWORD"] = "right"
    _passes(redis_server.url, auth_influx.url, "whisperengine", env=env)


def test_wrong_database_names_the_databases_there(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy(redis_server, server.url, db)
    checks = _fails_first("influx_container", redis_server.url, server.url, "whisperengine")
    fix = checks["influx_container"]["fix"]
    assert "CREATE DATABASE" in fix
    _passes(redis_server.url, server.url, _fix_setting(fix, "TELEMETRY_INFLUX_DB"))


def test_no_points_because_every_event_is_a_dead_letter(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    for _ in range(2):
        _emit(redis_server.url, "clibar_m", {"x": float("nan")})
    _emit(redis_server.url, "clibar_m", {"x": 1}, ts=time.time() + 3600)
    _drain(redis_server.url, server.url, db)
    checks = _fails_first("points", redis_server.url, server.url, db)
    points = checks["points"]
    assert "3 dead letter(s), top reasons: invalid_value 2, from_future 1" in points["summary"]
    assert points["details"]["dead_letters"] == {"invalid_value": 2, "from_future": 1}
    assert "telemetry dlq list" in points["fix"]
    _emit(redis_server.url, "clibar_m", {"x": 1})     # the emitting code fixed
    _drain(redis_server.url, server.url, db)
    _passes(redis_server.url, server.url, db)


def test_points_only_outside_the_dashboards_time_range(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _emit(redis_server.url, "clibar_m", {"x": 1}, ts=time.time() - 3 * 86_400)
    worker = _drain(redis_server.url, server.url, db)
    assert worker.stats.totals["points_out"] == 1
    checks = _fails_first("points", redis_server.url, server.url, db)
    assert "newest point 3d ago (clibar_m at" in checks["points"]["summary"]
    assert "outside the dashboards' time range (last 24h)" in checks["points"]["summary"]
    assert "time picker" in checks["points"]["fix"]
    code, checks = _doctor(redis_server.url, server.url, db, "--since", "4d")
    assert (code, checks["points"]["status"]) == (0, "ok")


def _wait_for(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextlib.contextmanager
def _running_worker(redis_server: RedisServer, influx_url: str, db: str,
                    **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m consumer`` with a long lease, once it holds every shard; stopped afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update({"TELEMETRY_REDIS_URL": redis_server.url, "TELEMETRY_STREAM_PREFIX": PREFIX,
                "TELEMETRY_SHARDS": str(SHARDS), "TELEMETRY_WINDOW": "1s", "TELEMETRY_GRACE": "0s",
                "TELEMETRY_LEASE": "120s", "TELEMETRY_BLOCK_MS": "100", "TELEMETRY_INFLUX_URL": influx_url,
                "TELEMETRY_INFLUX_API": "v1", "TELEMETRY_INFLUX_DB": db, "PYTHONPATH": str(ROOT), **extra})
    proc = subprocess.Popen([sys.executable, "-m", "consumer"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client = redis_server.client()
    try:
        _wait_for(lambda: all(client.exists(lease_key(PREFIX, s)) for s in range(SHARDS)))
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)


def test_worker_alive_but_stuck(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    with _running_worker(redis_server, server.url, db) as proc:
        proc.send_signal(signal.SIGSTOP)      # alive, holding its leases, doing nothing
        _emit(redis_server.url, "clibar_m", {"x": 1})
        time.sleep(1.5)
        checks = _fails_first("lag", redis_server.url, server.url, db, "--lag-limit", "1s")
        assert checks["consumer_live"]["status"] == "ok"
        assert "restart it" in checks["lag"]["fix"]
        proc.send_signal(signal.SIGCONT)
        _wait_for(lambda: server.query('SELECT count("event_count") FROM "clibar_m"', db=db))
        # the point lands before its entry is acknowledged (at the next checkpoint): until then the
        # entry is pending and older than the limit, which the lag check rightly reports
        client = redis_server.client()
        _wait_for(lambda: not any(client.xpending(stream_key(PREFIX, s), DEFAULT_GROUP)["pending"]
                                  for s in range(SHARDS)))
        _passes(redis_server.url, server.url, db, "--lag-limit", "1s")


def test_a_worker_behind_because_influx_is_down_blames_influx(
        redis_server: RedisServer, influx_server: InfluxServer) -> None:
    influx_server.create_database("whisperengine")
    # a long checkpoint interval keeps the entry unacknowledged while InfluxDB is down
    with _running_worker(redis_server, influx_server.url, "whisperengine",
                         TELEMETRY_CHECKPOINT_INTERVAL="60s"):
        influx_server.kill()
        _emit(redis_server.url, "clibar_m", {"x": 1})
        time.sleep(2.5)
        checks = _fails_first("influx", redis_server.url, influx_server.url, "whisperengine",
                              "--lag-limit", "1s")
        assert checks["lag"]["status"] == "warn"     # behind, but because of InfluxDB
        assert "InfluxDB reachable" in checks["lag"]["fix"]


class _Grafana(JsonHandler):
    """Grafana's datasource API as it answers (``/api/datasources``, ``/api/datasources/uid/UID``)."""

    sources: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        if self.path == "/api/health":
            self.reply_json(200, {"commit": "abc", "database": "ok", "version": "11.3.0"})
        elif self.headers.get("Authorization") != "Bearer tok":
            self.reply_json(401, {"message": "Unauthorized"})
        elif self.path == "/api/datasources":
            self.reply_json(200, self.sources)
        elif self.path.startswith("/api/datasources/uid/"):
            uid = self.path.rsplit("/", 1)[1]
            source = next((s for s in self.sources if s["uid"] == uid), None)
            if source is None:
                self.reply_json(404, {"message": "Data source not found"})
            else:
                self.reply_json(200, source)
        else:
            self.reply_json(404, {"message": "Not found"})


def _source(uid: str, version: str) -> dict[str, Any]:
    return {"id": 1, "uid": uid, "orgId": 1, "name": f"Influx {uid}", "type": "influxdb", "access": "proxy",
            "url": "http://influxdb:8086", "isDefault": True, "jsonData": {"version": version}}


def test_dashboards_datasource_uid_missing_in_grafana(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy(redis_server, server.url, db)
    with serving(_Grafana) as url:
        env = {"GRAFANA_URL": url, "GRAFANA_TOKEN": "tok"}
        _Grafana.sources = []
        checks = _fails_first("grafana_datasource", redis_server.url, server.url, db, env=env)
        provisioning = "grafana_dashboards/provisioning/datasources/influxdb.yaml"
        assert provisioning in checks["grafana_datasource"]["fix"]
        _Grafana.sources = [_source("P951FEA4DE68E13C5", "Flux")]   # created by hand, under its own uid
        checks = _fails_first("grafana_datasource", redis_server.url, server.url, db, env=env)
        assert ("telemetry dashboards build --datasource-uid P951FEA4DE68E13C5"
                in checks["grafana_datasource"]["fix"])
        _Grafana.sources = [_source("influxdb-influxql", "InfluxQL")]
        checks = _passes(redis_server.url, server.url, db, env=env)
        assert checks["grafana_datasource"]["details"]["uids"] == ["influxdb-influxql"]


def test_json_and_text_carry_the_same_verdicts(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy(redis_server, server.url, db)
    _emit(redis_server.url, "clibar_m", {"x": 2})           # and the worker is gone
    args = [*stream_flags(redis_server.url, PREFIX, SHARDS), "--influx-url", server.url, "--influx-api", "v1",
            "--influx-db", db]
    env = {"GRAFANA_URL": ""}
    app = make_app("consumer.cli.doctor")
    text = CliRunner().invoke(app, ["doctor", *args], env=env)
    doc = json.loads(CliRunner().invoke(app, ["doctor", "--json", *args], env=env).stdout)
    marks = {"ok": "✓", "fail": "✗", "warn": "!", "skip": "–"}
    lines = [line for line in text.stdout.splitlines() if line[:1] in marks.values()]
    expected = [f"{marks[c['status']]} {c['title']}" for c in doc["checks"]]
    assert [line.split(":", 1)[0] for line in lines] == expected
    assert (text.exit_code, doc["ok"], doc["first_failure"]) == (1, False, "consumer_live")
