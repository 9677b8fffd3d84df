"""``telemetry doctor`` against real Redis and InfluxDB: the healthy path and each failure with its fix."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

from typer.testing import CliRunner

from consumer.aggregation.catalogue import CATALOGUE, PIPELINE_MEASUREMENT
from producers.keys import lease_key, stream_key
from tests.cli_harness import make_app, stream_flags
from tests.fake_http import JsonHandler, serving
from tests.services import InfluxServer, RedisServer

PREFIX = "t"
SHARDS = 2


def _doctor(redis_url: str, influx_url: str, db: str, *args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(
        make_app("consumer.cli.doctor"),
        [
            "doctor",
            "--json",
            *stream_flags(redis_url, PREFIX, SHARDS),
            "--influx-url",
            influx_url,
            "--influx-api",
            "v1",
            "--influx-db",
            db,
            *args,
        ],
        env={"GRAFANA_URL": "", "TELEMETRY_INFLUX_USER": "", "TELEMETRY_INFLUX_PASSWORD": "", **(env or {})},
    )
    assert result.exit_code in (0, 1), result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] == (result.exit_code == 0)
    return result.exit_code, {c["name"]: c for c in doc["checks"]}


def _healthy_redis(server: RedisServer) -> None:
    client = server.client()
    for shard in range(SHARDS):
        key = stream_key(PREFIX, shard)
        client.xadd(key, {"v": "1"})
        client.xgroup_create(key, "aggregator", id="$")
        client.xgroup_createconsumer(key, "aggregator", "worker-1")
        client.set(lease_key(PREFIX, shard), "worker-1:1", px=60_000)  # held while the worker runs


def _write_points(influx: InfluxServer, db: str, names: list[str]) -> None:
    now_ns = time.time_ns()
    lines = [
        f"{name},shard=0 events_in=3i {now_ns}" if name == PIPELINE_MEASUREMENT
        else f"{name},bot_name=elena event_count=3i {now_ns}"
        for name in names
    ]
    influx.write_lines("\n".join(lines), db=db)


def _statuses(checks: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


def test_doctor_all_healthy(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy_redis(redis_server)
    _write_points(server, db, [*CATALOGUE, PIPELINE_MEASUREMENT])
    code, checks = _doctor(redis_server.url, server.url, db)
    assert code == 0
    assert set(_statuses(checks).values()) == {"ok"}
    assert checks["points"]["details"]["points"] == {name: 1 for name in sorted(CATALOGUE)}
    assert checks["points"]["details"]["silent"] == []


def test_doctor_names_silent_measurements(
    redis_server: RedisServer, influx: tuple[InfluxServer, str]
) -> None:
    server, db = influx
    _healthy_redis(redis_server)
    _write_points(server, db, ["attachment_monitoring", "vector_classification"])
    code, checks = _doctor(redis_server.url, server.url, db)
    assert code == 0  # a silent component is a warning, not an empty pipeline
    assert checks["points"]["status"] == "warn"
    assert checks["points"]["details"]["silent"] == sorted(
        set(CATALOGUE) - {"attachment_monitoring", "vector_classification"}
    )
    assert "trust_recovery_telemetry" in checks["points"]["summary"]
    assert checks["self_telemetry"]["status"] == "warn"
    assert "telemetry consume" in checks["self_telemetry"]["fix"]


def test_doctor_redis_stopped(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    redis_server.kill()
    assert not redis_server.is_running()
    code, checks = _doctor(redis_server.url, server.url, db)
    assert code == 1
    assert checks["redis"]["status"] == "fail"
    assert "TELEMETRY_REDIS_URL" in checks["redis"]["fix"]
    assert checks["streams_exist"]["status"] == checks["lag"]["status"] == "skip"


def test_doctor_no_streams(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    code, checks = _doctor(redis_server.url, server.url, db)
    assert code == 1
    assert checks["streams_exist"]["status"] == "fail"
    assert "TELEMETRY_STREAM_PREFIX=t" in checks["streams_exist"]["fix"]
    assert checks["streams_receive"]["status"] == "fail"
    assert checks["group_exists"]["status"] == "skip"


def test_doctor_stale_streams_and_lag(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    client = redis_server.client()
    old_ms = int(client.time()[0]) * 1000 - 3_600_000
    for shard in range(SHARDS):
        key = stream_key(PREFIX, shard)
        client.xadd(key, {"v": "1"}, id=f"{old_ms}-0")
        client.xgroup_create(key, "aggregator", id="0")
        client.xreadgroup(
            "aggregator", "worker-1", {key: "0"}, count=1, block=1
        )  # registers, reads nothing new
    code, checks = _doctor(redis_server.url, server.url, db)
    assert code == 1
    assert checks["streams_receive"]["status"] == "fail"
    assert "telemetry tail" in checks["streams_receive"]["fix"]
    assert checks["lag"]["status"] == "fail"
    assert checks["lag"]["details"]["lag_s"] >= 3_500
    # worker-1 left its consumer entry but holds no lease: nobody is reading
    assert checks["consumer_live"]["status"] == "fail"
    assert "telemetry consume" in checks["lag"]["fix"]


def test_doctor_group_missing_then_no_consumer(
    redis_server: RedisServer, influx: tuple[InfluxServer, str]
) -> None:
    server, db = influx
    client = redis_server.client()
    for shard in range(SHARDS):
        client.xadd(stream_key(PREFIX, shard), {"v": "1"})
    code, checks = _doctor(redis_server.url, server.url, db)
    assert code == 1
    assert checks["group_exists"]["status"] == "fail"
    assert "telemetry consume" in checks["group_exists"]["fix"]
    for shard in range(SHARDS):
        client.xgroup_create(stream_key(PREFIX, shard), "aggregator", id="$")
    code, checks = _doctor(redis_server.url, server.url, db)
    assert (code, checks["group_exists"]["status"], checks["consumer_live"]["status"]) == (1, "ok", "fail")
    assert "telemetry consume" in checks["consumer_live"]["fix"]
    # a worker idle on empty streams holds its shard leases: that counts as live
    client.set(lease_key(PREFIX, 1), "worker-7:3", px=10_000)
    _code, checks = _doctor(redis_server.url, server.url, db)
    assert checks["consumer_live"]["status"] == "ok"
    assert checks["consumer_live"]["details"]["leases"] == {"1": "worker-7"}


def test_doctor_influx_stopped(redis_server: RedisServer, influx_server: InfluxServer) -> None:
    _healthy_redis(redis_server)
    influx_server.kill()
    assert not influx_server.is_running()
    code, checks = _doctor(redis_server.url, influx_server.url, "whisperengine")
    assert code == 1
    assert checks["influx"]["status"] == "fail"
    assert "TELEMETRY_INFLUX_URL" in checks["influx"]["fix"]
    assert checks["influx_auth"]["status"] == checks["points"]["status"] == "skip"


def test_doctor_dropped_database(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy_redis(redis_server)
    server.execute(f'DROP DATABASE "{db}"')
    code, checks = _doctor(redis_server.url, server.url, db)
    assert code == 1
    assert checks["influx_container"]["status"] == "fail"
    assert f'CREATE DATABASE \\"{db}\\"' in json.dumps(checks["influx_container"]["fix"])
    assert checks["points"]["status"] == "skip"
    server.create_database(db)  # the fixture drops it afterwards


def test_doctor_wrong_credentials(redis_server: RedisServer, auth_influx: InfluxServer) -> None:
    _healthy_redis(redis_server)
    env = {"TELEMETRY_INFLUX_USER": "admin", "TELEMETRY_INFLUX_PASSWORD": "wrong"}
    code, checks = _doctor(redis_server.url, auth_influx.url, "whisperengine", env=env)
    assert code == 1
    assert checks["influx_auth"]["status"] == "fail"
    assert "401" in checks["influx_auth"]["summary"]
    assert "TELEMETRY_INFLUX_PASSWORD" in checks["influx_auth"]["fix"]
    env["TELEMETRY_INFLUX_PASSWORD"] = "right"
    _code, checks = _doctor(redis_server.url, auth_influx.url, "whisperengine", env=env)
    assert checks["influx_auth"]["status"] == "ok"
    assert checks["influx_container"]["status"] == "ok"


class _Grafana(JsonHandler):
    """Answers the two Grafana endpoints doctor reads; ``datasources`` holds the provisioned uids."""

    datasources: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        if self.path == "/api/health":
            self.reply_json(200, {"database": "ok", "version": "11.3.0"})
        elif self.path.startswith("/api/datasources/uid/"):
            uid = self.path.rsplit("/", 1)[1]
            if self.headers.get("Authorization") != "Bearer tok":
                self.reply_json(401, {"message": "Unauthorized"})
            elif uid in self.datasources:
                self.reply_json(
                    200, {"uid": uid, "name": "InfluxDB", "type": "influxdb", "url": "http://influxdb:8086"}
                )
            else:
                self.reply_json(404, {"message": "Data source not found"})
        else:
            self.reply_json(404, {})


def test_doctor_grafana_datasource(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    _healthy_redis(redis_server)
    _write_points(server, db, [*CATALOGUE, PIPELINE_MEASUREMENT])
    with serving(_Grafana) as url:
        _Grafana.datasources = set()
        code, checks = _doctor(
            redis_server.url, server.url, db, env={"GRAFANA_URL": url, "GRAFANA_TOKEN": "tok"}
        )
        assert (code, checks["grafana"]["status"], checks["grafana_datasource"]["status"]) == (
            1,
            "ok",
            "fail",
        )
        assert "uid: influxdb" in checks["grafana_datasource"]["fix"]
        _Grafana.datasources = {"influxdb"}
        code, checks = _doctor(
            redis_server.url, server.url, db, env={"GRAFANA_URL": url, "GRAFANA_TOKEN": "tok"}
        )
        assert (code, checks["grafana_datasource"]["status"]) == (0, "ok")
        code, checks = _doctor(
            redis_server.url, server.url, db, env={"GRAFANA_URL": url, "GRAFANA_TOKEN": "bad"}
        )
        assert code == 1 and "GRAFANA_TOKEN" in checks["grafana_datasource"]["fix"]
    code, checks = _doctor(redis_server.url, server.url, db, env={"GRAFANA_URL": url})
    assert code == 1 and checks["grafana"]["status"] == "fail"


def test_doctor_human_output_has_marks_and_fixes(
    redis_server: RedisServer, influx: tuple[InfluxServer, str]
) -> None:
    server, db = influx
    result = CliRunner().invoke(
        make_app("consumer.cli.doctor"),
        [
            "doctor",
            *stream_flags(redis_server.url, PREFIX, SHARDS),
            "--influx-url",
            server.url,
            "--influx-api",
            "v1",
            "--influx-db",
            db,
        ],
        env={"GRAFANA_URL": ""},
    )
    assert result.exit_code == 1
    assert "✓ Redis reachable" in result.stdout
    assert "✗ streams exist" in result.stdout
    assert "fix:" in result.stdout
