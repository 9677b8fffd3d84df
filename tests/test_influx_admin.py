"""``telemetry influx setup`` against a real influxd: retention policies, continuous queries, downsampling."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from consumer.admin.influx_admin import (
    SetupPlan,
    _field_sets,
    continuous_query_name,
    downsample_select,
    downsampled_measurements,
)
from consumer.cli.app import app
from tests.fake_http import JsonHandler, serving
from tests.services import InfluxServer

HOUR_S = 3600
BASE_S = int(time.time()) // HOUR_S * HOUR_S - 3 * HOUR_S   # within the raw retention


def _setup(server: InfluxServer, db: str, *extra: str) -> Any:
    env = {"TELEMETRY_INFLUX_URL": server.url, "TELEMETRY_INFLUX_API": "v1", "TELEMETRY_INFLUX_DB": db}
    return CliRunner().invoke(app, ["influx", "setup", *extra], env=env)


def _policies(server: InfluxServer, db: str) -> dict[str, tuple[str, bool]]:
    rows = server.query(f'SHOW RETENTION POLICIES ON "{db}"', db=db)
    return {r["name"]: (r["duration"], r["default"]) for r in rows}


def _continuous_queries(server: InfluxServer, db: str) -> dict[str, str]:
    rows = server.query("SHOW CONTINUOUS QUERIES", db=db)
    return {r["name"]: r["query"] for r in rows if r["_measurement"] == db}


def test_setup_creates_retention_policies_and_continuous_queries(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    result = _setup(server, db)
    assert result.exit_code == 0, result.output
    assert _policies(server, db) == {"autogen": ("0s", False), "raw": ("720h0m0s", True),
                                     "downsampled_1h": ("9600h0m0s", False)}
    queries = _continuous_queries(server, db)
    plan = SetupPlan(database=db)
    assert set(queries) == {continuous_query_name(plan, m) for m in downsampled_measurements()}
    attachment = queries[continuous_query_name(plan, "attachment_monitoring")]
    assert f"INTO {db}.downsampled_1h.attachment_monitoring FROM {db}.raw.attachment_monitoring" in attachment
    assert "GROUP BY time(1h), *" in attachment


def test_setup_is_idempotent_and_corrects_a_changed_retention(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    assert _setup(server, db).exit_code == 0
    before = _continuous_queries(server, db)
    again = _setup(server, db)
    assert again.exit_code == 0, again.output
    assert "created" not in again.output and "already right" in again.output
    assert _continuous_queries(server, db) == before
    changed = _setup(server, db, "--retention", "7d", "--downsample-retention", "365d")
    assert changed.exit_code == 0, changed.output
    assert "updated retention policy raw (168h0m0s, default)" in changed.output
    assert _policies(server, db)["raw"] == ("168h0m0s", True)
    assert _policies(server, db)["downsampled_1h"] == ("8760h0m0s", False)


def test_the_downsampling_query_keeps_field_meanings(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    assert _setup(server, db).exit_code == 0
    ns = 1_000_000_000
    tags = "bot_name=elena,risk_level=HIGH,user_id=u1"
    # Two windows of one series: 3 checks (mean 0.2) and 1 check (0.9). Weighted mean = 1.5/4.
    server.write_lines("\n".join([
        f"attachment_monitoring,{tags} event_count=3i,emotional_intensity=0.2,emotional_intensity_sum=0.6,"
        f"emotional_intensity_min=0.1,emotional_intensity_max=0.3,consecutive_days=4,"
        f"intervention_provided=2i {(BASE_S + 10) * ns}",
        f"attachment_monitoring,{tags} event_count=1i,emotional_intensity=0.9,emotional_intensity_sum=0.9,"
        f"emotional_intensity_min=0.9,emotional_intensity_max=0.9,consecutive_days=5,"
        f"intervention_provided=1i {(BASE_S + 1200) * ns}",
    ]), db=db)
    plan = SetupPlan(database=db)
    backfill = downsample_select(plan, "attachment_monitoring").replace(
        " GROUP BY", f" WHERE time >= {BASE_S}s AND time < {BASE_S + HOUR_S}s GROUP BY")
    server.execute(backfill, db=db)
    [row] = server.query('SELECT * FROM "downsampled_1h"."attachment_monitoring"', db=db, epoch="s")
    assert row["time"] == BASE_S
    assert (row["bot_name"], row["risk_level"], row["user_id"]) == ("elena", "HIGH", "u1")
    assert (row["event_count"], row["intervention_provided"], row["consecutive_days"]) == (4, 3, 5)
    assert (row["emotional_intensity_min"], row["emotional_intensity_max"]) == (0.1, 0.9)
    assert row["emotional_intensity_sum"] == pytest.approx(1.5)
    assert row["emotional_intensity"] == pytest.approx(1.5 / 4)


def test_field_aggregations_do_not_conflict_across_measurements() -> None:
    sums, mins, maxes, lasts = _field_sets()
    assert not (sums & mins or sums & maxes or sums & lasts or mins & maxes or mins & lasts or maxes & lasts)
    assert {"event_count", "emotional_intensity_sum", "intervention_provided", "events_in"} <= sums
    assert "consecutive_days" in lasts and "lag_entries" in maxes


def test_unreachable_influxdb_is_one_line() -> None:
    env = {"TELEMETRY_INFLUX_URL": "http://127.0.0.1:9", "TELEMETRY_INFLUX_API": "v1"}
    result = CliRunner().invoke(app, ["influx", "setup"], env=env)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "cannot reach InfluxDB" in result.output


def test_a_bad_duration_is_a_usage_error(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    result = _setup(server, db, "--retention", "forever")
    assert result.exit_code == 2 and "--retention" in result.output
    assert "raw" not in _policies(server, db)


class FakeInfluxV2:
    """Just enough of InfluxDB 2's API (orgs, buckets, tasks) for setup, recording every call."""

    ORG_ID = "0123456789abcdef"

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self.calls.append((method, path))
        if path == "/api/v2/orgs":
            return 200, {"orgs": [{"id": self.ORG_ID, "name": "whisperengine"}]}
        if path == "/api/v2/buckets" and method == "GET":
            found = [b for b in self.buckets.values() if b["name"] == query.get("name")]
            return 200, {"buckets": found}
        if path == "/api/v2/buckets" and method == "POST":
            bucket = {**body, "id": f"b{len(self.buckets):015d}", "type": "user"}
            self.buckets[bucket["id"]] = bucket
            return 201, bucket
        if path.startswith("/api/v2/buckets/") and method == "PATCH":
            bucket = self.buckets[path.rsplit("/", 1)[1]]
            bucket["retentionRules"] = body["retentionRules"]
            return 200, bucket
        if path == "/api/v2/tasks" and method == "GET":
            return 200, {"tasks": [t for t in self.tasks.values() if t["name"] == query.get("name")]}
        if path == "/api/v2/tasks" and method == "POST":
            name = re.search(r'option task = \{name: "([^"]+)"', body["flux"]).group(1)  # type: ignore[union-attr]
            task = {"id": f"t{len(self.tasks):015d}", "name": name, "orgID": body["orgID"],
                    "flux": body["flux"], "status": body.get("status", "active")}
            self.tasks[task["id"]] = task
            return 201, task
        return 404, {"code": "not found", "message": f"{method} {path}"}


@pytest.fixture
def fake_v2() -> Iterator[tuple[FakeInfluxV2, str]]:
    fake = FakeInfluxV2()

    class Handler(JsonHandler):
        def _handle(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            self.reply_json(*fake.handle(self.command, parts.path, query, self.read_json()))

        do_GET = do_POST = do_PATCH = _handle

    with serving(Handler) as url:
        yield fake, url


def test_v2_setup_creates_buckets_with_retention_and_a_downsampling_task(
        fake_v2: tuple[FakeInfluxV2, str]) -> None:
    fake, url = fake_v2
    env = {"TELEMETRY_INFLUX_URL": url, "TELEMETRY_INFLUX_API": "v2", "TELEMETRY_INFLUX_TOKEN": "t0k",
           "TELEMETRY_INFLUX_BUCKET": "whisperengine"}
    result = CliRunner().invoke(app, ["influx", "setup"], env=env)
    assert result.exit_code == 0, result.output
    rules = {b["name"]: b["retentionRules"] for b in fake.buckets.values()}
    assert rules == {"whisperengine": [{"type": "expire", "everySeconds": 30 * 86400}],
                     "whisperengine_1h": [{"type": "expire", "everySeconds": 400 * 86400}]}
    [task] = fake.tasks.values()
    assert task["name"] == "downsample whisperengine 1h" and task["orgID"] == FakeInfluxV2.ORG_ID
    assert task["flux"].count("option task") == 1 and 'to(bucket: "whisperengine_1h"' in task["flux"]
    again = CliRunner().invoke(app, ["influx", "setup", "--retention", "7d"], env=env)
    assert again.exit_code == 0, again.output
    assert "updated bucket whisperengine" in again.output and "already right" in again.output
    assert len(fake.tasks) == 1 and len(fake.buckets) == 2
    assert fake.buckets["b000000000000000"]["retentionRules"][0]["everySeconds"] == 7 * 86400
