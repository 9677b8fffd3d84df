"""``telemetry doctor``'s InfluxDB 2 checks (buckets API, Flux) against a real server.

The suite's influxd is 1.6, so its v2 API is ``tests/influx_gateway.py``: writes forwarded to
``/write``, buckets listed from its databases, and the doctor's Flux queries answered from it by
InfluxQL in InfluxDB 2's annotated CSV (a query shape the gateway does not know is a 400, so a
change to the doctor's queries fails here). The worker writes through the same gateway with the
v2 sink (influxdb-client), as it would into InfluxDB 2.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.pipeline.worker import Worker
from tests.influx_gateway import InfluxV2Gateway
from tests.services import InfluxServer, RedisServer
from tests.test_doctor_pipeline import _config, _doctor, _emit, _first_failure, _fix_setting, _statuses

TOKEN = "doctor-v2-token"
ORG = "whisperengine"


@pytest.fixture
def v2(influx: tuple[InfluxServer, str]) -> Iterator[tuple[InfluxV2Gateway, str]]:
    """The v2 gateway requiring ``TOKEN`` in front of the shared influxd, and this test's bucket."""
    server, db = influx
    gateway = InfluxV2Gateway(server.url, token=TOKEN).start()
    try:
        yield gateway, db
    finally:
        gateway.stop()


def _v2_doctor(redis_server: RedisServer, gateway: InfluxV2Gateway, bucket: str, *args: str,
               token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    flags = ["--influx-api", "v2", "--influx-bucket", bucket, "--influx-org", ORG]
    return _doctor(redis_server.url, gateway.url, bucket, *args, influx_flags=flags,
                   env={"TELEMETRY_INFLUX_TOKEN": token})


def _drain_v2(redis_server: RedisServer, gateway: InfluxV2Gateway, bucket: str) -> Worker:
    worker = Worker(_config(redis_server.url, gateway.url, bucket, drain=True, influx_api="v2",
                            influx_token=TOKEN, influx_org=ORG, influx_bucket=bucket))
    assert worker.run() == 0
    return worker


def _flux_sent(gateway: InfluxV2Gateway) -> list[tuple[str, int]]:
    """Each Flux query the gateway received, with the status it answered."""
    return [(json.loads(r.body)["query"], r.status) for r in gateway.requests if r.path == "/api/v2/query"]


def test_a_healthy_v2_pipeline_passes_every_influx_check(
        redis_server: RedisServer, v2: tuple[InfluxV2Gateway, str]) -> None:
    gateway, bucket = v2
    _emit(redis_server.url, "clibar_m", {"x": 1}, tags={"user_id": "u1"})
    worker = _drain_v2(redis_server, gateway, bucket)
    assert worker.stats.totals["points_out"] == 1
    assert any(r.path == "/api/v2/write" and r.status == 204 for r in gateway.requests)

    code, checks = _v2_doctor(redis_server, gateway, bucket)
    assert code == 0, _statuses(checks)
    for name in ("influx", "influx_auth", "influx_container", "points", "self_telemetry"):
        assert checks[name]["status"] == "ok", (name, checks[name])
    assert checks["influx"]["summary"].endswith("(API v2)")
    assert checks["points"]["details"]["other"] == {"clibar_m": 1}
    assert "telemetry_pipeline points" in checks["self_telemetry"]["summary"]
    # the answers came from the doctor's Flux, through the buckets and query APIs
    sent = _flux_sent(gateway)
    assert len(sent) >= 2 and all(status == 200 for _, status in sent), sent
    assert any(r.path == "/api/v2/buckets" and r.params.get("name") == bucket for r in gateway.requests)


def test_points_only_outside_the_time_range_name_the_newest_from_flux(
        redis_server: RedisServer, v2: tuple[InfluxV2Gateway, str]) -> None:
    gateway, bucket = v2
    three_days_ago = time.time() - 3 * 86_400
    _emit(redis_server.url, "clibar_m", {"x": 1}, ts=three_days_ago)
    _drain_v2(redis_server, gateway, bucket)
    code, checks = _v2_doctor(redis_server, gateway, bucket)
    assert (code, _first_failure(checks)) == (1, "points")
    newest = checks["points"]["details"]["newest"]
    assert newest["measurement"] == "clibar_m"
    assert abs(newest["age_s"] - 3 * 86_400) < 60           # the window start, read back through last()
    assert "outside the dashboards' time range" in checks["points"]["summary"]
    code, checks = _v2_doctor(redis_server, gateway, bucket, "--since", "4d")
    assert (code, checks["points"]["status"]) == (0, "ok")


def test_a_wrong_bucket_is_the_first_failure_and_its_fix_names_the_bucket_there(
        redis_server: RedisServer, v2: tuple[InfluxV2Gateway, str]) -> None:
    gateway, bucket = v2
    _emit(redis_server.url, "clibar_m", {"x": 1})
    _drain_v2(redis_server, gateway, bucket)
    code, checks = _v2_doctor(redis_server, gateway, "no_such_bucket")
    assert (code, _first_failure(checks)) == (1, "influx_container")
    assert checks["influx_container"]["status"] == "fail"
    assert "no bucket 'no_such_bucket'" in checks["influx_container"]["summary"]
    fix = checks["influx_container"]["fix"]
    assert "influx bucket create --name no_such_bucket" in fix
    assert _fix_setting(fix, "TELEMETRY_INFLUX_BUCKET") == bucket
    code, checks = _v2_doctor(redis_server, gateway, _fix_setting(fix, "TELEMETRY_INFLUX_BUCKET"))
    assert code == 0, _statuses(checks)


def test_a_bad_token_is_the_first_failure_and_its_fix_names_the_token(
        redis_server: RedisServer, v2: tuple[InfluxV2Gateway, str]) -> None:
    gateway, bucket = v2
    _emit(redis_server.url, "clibar_m", {"x": 1})
    _drain_v2(redis_server, gateway, bucket)
    code, checks = _v2_doctor(redis_server, gateway, bucket, token="not-the-token")
    assert (code, _first_failure(checks)) == (1, "influx_auth")
    assert "401" in checks["influx_auth"]["summary"]
    assert "TELEMETRY_INFLUX_TOKEN" in checks["influx_auth"]["fix"]
    assert checks["influx"]["status"] == "ok"
    assert all(r.status == 401 for r in gateway.requests if r.path.startswith("/api/v2/buckets"))
    code, checks = _v2_doctor(redis_server, gateway, bucket)
    assert code == 0, _statuses(checks)
