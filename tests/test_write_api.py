"""``tel.write`` / ``tel.write_api()``: influxdb-client write sites, unchanged, into the pipeline.

Real-shaped write sites (``Point`` builder chains with int, float, bool and str fields and explicit
ns timestamps, line protocol, dicts) go through a real Redis and a worker into a real influxd; the
aggregated values are checked there. Unreadable input becomes a dead letter with its reason and
line, while its neighbours go through.
"""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import pytest
from influxdb_client import Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from consumer.core.config import WorkerConfig
from consumer.pipeline.worker import Worker
from producers import Telemetry
from producers.wire import KIND_POINT, KIND_REJECTED, decode_entry
from tests.services import InfluxServer, RedisServer

PREFIX = "wapi"
WINDOW_S = 10


def _origin_ns() -> int:
    """A window-aligned time ten minutes ago, in ns (inside allowed lateness, never from the future)."""
    return int((time.time() // 60) * 60 - 600) * 1_000_000_000


def _entries(client: Any) -> list[list[Any]]:
    events: list[list[Any]] = []
    for key in sorted(client.keys(f"{PREFIX}:*")):
        if client.type(key) == b"stream":
            for _id, fields in client.xrange(key):
                events.extend(decode_entry(fields).events)
    return events


def test_write_api_takes_what_influxdb_client_takes_and_keeps_exact_nanoseconds() -> None:
    client = fakeredis.FakeRedis()
    tel = Telemetry(client=client, prefix=PREFIX, shards=1)
    try:
        write_api = tel.write_api(write_options=SYNCHRONOUS)
        point = Point("m").tag("user_id", "u1").field("x", 1.5).field("n", 3).time(1_700_000_000_123_456_789)
        write_api.write(bucket="ignored", org="ignored", record=point)
        write_api.write("b", record=["m,user_id=u2 x=2.5 1700000000123", "not line protocol"],
                        write_precision=WritePrecision.MS)
        write_api.write("b", record={"measurement": "m", "tags": {"user_id": "u3"}, "fields": {"ok": True},
                                     "time": 1_700_000_000}, write_precision="s")
        write_api.write("b", record={"name": "m", "ts": 5, "uid": "u4", "v": 1.0}, write_precision="s",
                        record_measurement_key="name", record_time_key="ts", record_tag_keys=["uid"],
                        record_field_keys=["v"])
        write_api.write("b", record="m x=1", write_precision="fortnights")   # never raises
        assert tel.flush(timeout=5)
        stats = tel.stats()
    finally:
        tel.close()
    events = _entries(client)
    points = [e for e in events if e[0] == KIND_POINT]
    assert points == [
        [KIND_POINT, "m", 1_700_000_000_123_456_789, {"user_id": "u1"}, {"x": 1.5, "n": 3}],
        [KIND_POINT, "m", 1_700_000_000_123_000_000, {"user_id": "u2"}, {"x": 2.5}],
        [KIND_POINT, "m", 1_700_000_000_000_000_000, {"user_id": "u3"}, {"ok": True}],
        [KIND_POINT, "m", 5_000_000_000, {"uid": "u4"}, {"v": 1.0}],
    ]
    rejected = [e for e in events if e[0] == KIND_REJECTED]
    assert [e[3]["reason"] for e in rejected] == ["unparsable_line", "unparsable_line"]
    assert rejected[0][4] == {"line": "not line protocol"}
    # each str numbers its own lines
    assert rejected[0][3]["detail"] == "line 1: invalid timestamp 'protocol'"
    assert "fortnights" in rejected[1][3]["detail"]
    assert stats["emitted"] == stats["sent"] == 6


def _write_sites(write_api: Any, t0: int) -> None:
    """What the bot's components do today: builder chains, explicit ns times, one call per point."""
    for i in range(20):
        ts = t0 + i * 1_000_000_000          # two windows of 10 s
        point = (Point("attachment_monitoring").tag("bot_name", "elena").tag("user_id", f"u{i % 2}")
                 .field("emotional_intensity", i / 10).field("dependency_count", i)
                 .field("intervention_provided", i % 4 == 0).field("risk_level_text", f"r{i}").time(ts))
        write_api.write(bucket="whisperengine", record=point)
    write_api.write(bucket="whisperengine", record=(
        f"written_lines,bot_name=marcus depth=1i {t0}\n"
        f"written_lines,bot_name=marcus depth=oops {t0}\n"          # bad value: this line only
        f"written_lines,bot_name=marcus depth=3i {t0 + 1}\n").encode())


def test_point_write_sites_arrive_aggregated_in_influxdb(redis_server: RedisServer,
                                                        influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    t0 = _origin_ns()
    tel = Telemetry(redis_url=redis_server.url, prefix=PREFIX, shards=2)
    try:
        _write_sites(tel.write_api(), t0)
        assert tel.flush(timeout=10)
    finally:
        tel.close()
    config = WorkerConfig(redis_url=redis_server.url, stream_prefix=PREFIX, shards=2, window_s=WINDOW_S,
                          grace_s=0, influx_url=server.url, influx_api="v1", influx_db=db, drain=True,
                          block_ms=100)
    worker = Worker(config)
    assert worker.run() == 0
    rows = server.query('SELECT * FROM "attachment_monitoring" GROUP BY *', db=db, epoch="ns")
    got = {(row["time"], row["user_id"]): row for row in rows}
    assert set(got) == {(t0 + w * 10_000_000_000, f"u{u}") for w in (0, 1) for u in (0, 1)}
    for (time_ns, user), row in got.items():
        mine = [i for i in range(20) if i // 10 == (time_ns - t0) // 10_000_000_000 and f"u{i % 2}" == user]
        assert row["event_count"] == 5
        assert row["emotional_intensity"] == pytest.approx(sum(i / 10 for i in mine) / 5)
        assert row["dependency_count_sum"] == pytest.approx(sum(mine))
        assert row["intervention_provided"] == sum(1 for i in mine if i % 4 == 0)
        assert row["risk_level_text"] == f"r{max(mine)}"
    lines = server.query('SELECT * FROM "written_lines"', db=db, epoch="ns")
    assert [(r["time"], r["event_count"], r["depth_sum"]) for r in lines] == [(t0, 2, 4.0)]
    letters = redis_server.client().xrange(f"{PREFIX}:dlq")
    assert len(letters) == 1
    letter = letters[0][1]
    assert letter[b"reason"] == b"unparsable_line"
    assert b"line 2" in letter[b"detail"]
    assert worker.stats.totals["events_in"] == 22
