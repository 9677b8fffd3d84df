"""The InfluxDB sinks against a real influxd 1.6 (v1 directly, v2 through the test gateway)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumer.core.model import FieldValue, Point
from consumer.sinks import Backoff
from consumer.sinks.base import Sink, SinkAuthError, SinkNotFound, SinkUnavailable
from consumer.sinks.influx_v1 import InfluxV1Sink
from consumer.sinks.influx_v2 import InfluxV2Sink
from tests.influx_gateway import InfluxV2Gateway
from tests.services import InfluxServer

T0 = 1_700_000_000_000_000_000
WINDOW_NS = 10_000_000_000


def _p(measurement: str, fields: dict[str, FieldValue], i: int = 0, **tags: str) -> Point:
    return Point(measurement, tuple(sorted(tags.items())), fields, T0 + i * WINDOW_NS)


def _rows(server: InfluxServer, db: str, query: str) -> list[dict[str, object]]:
    return server.query(query, db=db)


SinkMaker = Callable[[str], Sink]
V2 = tuple[InfluxV2Gateway, InfluxServer, str]
SinkFor = tuple[SinkMaker, InfluxServer, str]


@pytest.fixture(params=["v1", "v2"])
def sink_for(request: pytest.FixtureRequest, influx_v2: V2) -> Iterator[SinkFor]:
    """A v1 or v2 sink factory, the shared influxd and a fresh database; sinks closed afterwards."""
    gateway, server, db = influx_v2
    made: list[Sink] = []

    def make(db: str) -> Sink:
        sink: Sink
        if request.param == "v1":
            sink = InfluxV1Sink(server.url, db=db)
        else:
            sink = InfluxV2Sink(gateway.url, token="t0k", org="whisperengine", bucket=db)
        made.append(sink)
        return sink

    try:
        yield make, server, db
    finally:
        for sink in made:
            sink.close()


def test_v1_and_v2_store_the_same_points(influx_v2: V2) -> None:
    gateway, server, db_v2 = influx_v2
    db_v1 = f"{db_v2}_v1"
    server.create_database(db_v1)
    points = [_p("attachment_monitoring", {"event_count": 3, "emotional_intensity": 0.5 + i,
                                           "intervention_provided": i, "risk": "HIGH"},
                 i, user_id=f"u{i % 3}", bot_name="elena") for i in range(20)]
    v1 = InfluxV1Sink(server.url, db=db_v1)
    v2 = InfluxV2Sink(gateway.url, token="t", org="whisperengine", bucket=db_v2)
    try:
        assert v1.write(points).written == 20
        assert v2.write(points).written == 20
        query = "SELECT * FROM attachment_monitoring GROUP BY *"
        from_v1, from_v2 = _rows(server, db_v1, query), _rows(server, db_v2, query)
        assert len(from_v1) == 20
        assert from_v1 == from_v2
    finally:
        v1.close()
        v2.close()
        server.execute(f'DROP DATABASE "{db_v1}"')


def test_type_conflict_mid_batch_rejects_exactly_the_bad_point(
        sink_for: SinkFor) -> None:
    make, server, db = sink_for
    sink = make(db)
    assert sink.write([_p("m", {"f": 1.5}, 0, k="a")]).written == 1
    batch = [_p("m", {"f": float(i)}, i, k="b") for i in range(1, 12)]
    bad = _p("m", {"f": 7}, 100, k="bad")  # an integer where InfluxDB already has floats
    batch.insert(5, bad)
    result = sink.write(batch)
    assert result.written == 11
    assert [point for point, _ in result.rejected] == [bad]
    assert "field type conflict" in result.rejected[0][1]
    rows = _rows(server, db, "SELECT f, k FROM m")
    assert sorted((row["k"], row["f"]) for row in rows) == sorted(
        [("a", 1.5)] + [("b", float(i)) for i in range(1, 12)])


def test_several_bad_points_and_a_parse_error_are_isolated(
        sink_for: SinkFor) -> None:
    make, server, db = sink_for
    sink = make(db)
    sink.write([_p("m", {"f": 0.5}, 0)])
    unparsable = Point("m", (("k\\", "v"),), {"f": 1.0}, T0)  # a tag key ending in a backslash
    conflicts = [_p("m", {"f": "text"}, 3), _p("m", {"f": True}, 9)]
    good = [_p("m", {"f": float(i)}, i) for i in (1, 2, 4, 5, 6, 7, 8)]
    batch = [good[0], good[1], conflicts[0], unparsable, *good[2:], conflicts[1]]
    result = sink.write(batch)
    assert result.written == len(good)
    assert [point for point, _ in result.rejected] == [conflicts[0], unparsable, conflicts[1]]
    reasons = [reason for _, reason in result.rejected]
    assert "field type conflict" in reasons[0]
    assert "unable to parse" in reasons[1]
    assert "field type conflict" in reasons[2]
    rows = _rows(server, db, "SELECT f FROM m")
    assert sorted(row["f"] for row in rows) == sorted([0.5] + [float(i) for i in (1, 2, 4, 5, 6, 7, 8)])


def test_missing_database_is_sink_not_found(sink_for: SinkFor) -> None:
    make, _, _ = sink_for
    with pytest.raises(SinkNotFound, match="database not found"):
        make("no_such_db").write([_p("m", {"f": 1.0})])


def test_v2_write_answers_429_and_503_with_retry_after(
        influx_v2: V2) -> None:
    gateway, server, db = influx_v2
    sink = InfluxV2Sink(gateway.url, token="t", org="whisperengine", bucket=db)
    point = _p("m", {"f": 1.0})
    gateway.fail_next(429, retry_after="7")
    with pytest.raises(SinkUnavailable) as too_many:
        sink.write([point])
    assert too_many.value.retry_after_s == 7.0
    assert "429" in str(too_many.value)
    gateway.fail_next(503, retry_after="Wed, 21 Oct 2099 07:28:00 GMT")
    with pytest.raises(SinkUnavailable) as unavailable:
        sink.write([point])
    assert unavailable.value.retry_after_s == 3600.0  # far-future dates are capped
    gateway.fail_next(500)
    with pytest.raises(SinkUnavailable) as internal:
        sink.write([point])
    assert internal.value.retry_after_s is None
    # The client did not retry by itself: one request per write, and nothing reached influxd yet.
    assert [w.status for w in gateway.writes()] == [429, 503, 500]
    assert _rows(server, db, "SELECT f FROM m") == []
    backoff = Backoff(base_s=0.1, cap_s=1.0)
    assert backoff.delay_for(too_many.value) >= 7.0
    assert sink.write([point]).written == 1
    assert [w.status for w in gateway.writes()] == [429, 503, 500, 204]
    assert _rows(server, db, "SELECT f FROM m") == [{"time": T0, "f": 1.0, "_measurement": "m"}]
    sink.close()


def test_v2_wrong_token_is_auth_error(influx_v2: V2) -> None:
    gateway, _, db = influx_v2
    gateway.token = "right"
    wrong = InfluxV2Sink(gateway.url, token="wrong", org="whisperengine", bucket=db)
    right = InfluxV2Sink(gateway.url, token="right", org="whisperengine", bucket=db)
    try:
        with pytest.raises(SinkAuthError, match="401"):
            wrong.write([_p("m", {"f": 1.0})])
        assert right.write([_p("m", {"f": 1.0})]).written == 1
        assert [w.headers["authorization"] for w in gateway.writes()] == ["Token wrong", "Token right"]
    finally:
        wrong.close()
        right.close()


def test_v1_credentials_on_an_auth_enabled_influxd(tmp_path: Path) -> None:
    server = InfluxServer(tmp_path / "influxd", auth=True).start()
    try:
        # With no user yet, influxd accepts exactly this statement unauthenticated.
        server.execute("CREATE USER admin WITH PASSWORD 's3cret' WITH ALL PRIVILEGES")
        server.execute('CREATE DATABASE "secure"', auth=("admin", "s3cret"))
        anonymous = InfluxV1Sink(server.url, db="secure")
        wrong = InfluxV1Sink(server.url, db="secure", user="admin", password="nope")
        right = InfluxV1Sink(server.url, db="secure", user="admin", password="s3cret")
        with pytest.raises(SinkAuthError, match="401"):
            anonymous.write([_p("m", {"f": 1.0})])
        with pytest.raises(SinkAuthError, match="401"):
            wrong.write([_p("m", {"f": 2.0})])
        assert right.write([_p("m", {"f": 3.0})]).written == 1
        assert server.query("SELECT f FROM m", db="secure", auth=("admin", "s3cret")) == [
            {"time": T0, "f": 3.0, "_measurement": "m"}]
        for sink in (anonymous, wrong, right):
            sink.close()
    finally:
        server.kill()


def test_killed_influxd_is_unavailable_then_recovers(influx_server: InfluxServer,
                                                     tmp_path: Path) -> None:
    influx_server.create_database("db")
    v1 = InfluxV1Sink(influx_server.url, db="db", timeout_s=2.0)
    v2 = InfluxV2Sink(influx_server.url, token="x", org="o", bucket="db", timeout_ms=2000)
    assert v1.write([_p("m", {"f": 1.0}, 0)]).written == 1
    assert v1.ping() and v2.ping()
    pid = influx_server.pid
    influx_server.kill()
    assert not influx_server.is_running()
    assert influx_server.proc is not None and influx_server.proc.returncode == -9
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(SinkUnavailable, match="unreachable") as v1_error:
        v1.write([_p("m", {"f": 2.0}, 1)])
    assert v1_error.value.retry_after_s is None
    # v2 straight at the dead port: influxdb-client's connection error, mapped the same way.
    with pytest.raises(SinkUnavailable, match="unreachable"):
        v2.write([_p("m", {"f": 2.0}, 1)])
    assert not v1.ping()
    assert not v2.ping()
    influx_server.start()
    assert v1.write([_p("m", {"f": 2.0}, 1)]).written == 1  # the same sink reconnects
    assert [row["f"] for row in influx_server.query("SELECT f FROM m", db="db")] == [1.0, 2.0]
    v1.close()
    v2.close()


def test_paused_influxd_times_out_as_unavailable(influx_server: InfluxServer) -> None:
    influx_server.create_database("db")
    v1 = InfluxV1Sink(influx_server.url, db="db", timeout_s=0.5)
    v2 = InfluxV2Sink(influx_server.url, token="x", org="o", bucket="db", timeout_ms=500)
    influx_server.pause()
    try:
        assert influx_server.is_running()  # alive, but answers nothing
        with pytest.raises(SinkUnavailable):
            v1.write([_p("m", {"f": 1.0})])
        with pytest.raises(SinkUnavailable):
            v2.write([_p("m", {"f": 1.0})])
    finally:
        influx_server.resume()
    v1.close()
    v2.close()


def test_closed_sinks_refuse_writes_and_close_is_idempotent(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    for sink in (InfluxV1Sink(server.url, db=db),
                 InfluxV2Sink(server.url, token="t", org="o", bucket=db)):
        sink.close()
        sink.close()
        assert not sink.ping()
        with pytest.raises(Exception, match="closed"):
            sink.write([_p("m", {"f": 1.0})])
        assert sink.write([]).written == 0


def test_influxd_rejects_a_reserved_key_and_the_rest_is_written(sink_for: SinkFor) -> None:
    # (A field "time" beside other fields is dropped silently by influxd 1.6 with a 204: that is
    # why validation dead-letters reserved keys before they reach a sink.)
    make, server, db = sink_for
    tag_time, field_time = _p("m", {"f": 1.0}, 1, time="x"), _p("m", {"time": 1.0}, 3)
    result = make(db).write([_p("m", {"f": 0.0}, 0), tag_time, _p("m", {"f": 2.0}, 2), field_time])
    assert result.written == 2
    assert [point for point, _ in result.rejected] == [tag_time, field_time]
    assert 'invalid tag key: input tag "time"' in result.rejected[0][1]
    assert 'invalid field name: input field "time"' in result.rejected[1][1]
    assert [row["f"] for row in _rows(server, db, "SELECT f FROM m")] == [0.0, 2.0]


def test_gateway_ping_and_health(influx_v2: V2) -> None:
    gateway, _, db = influx_v2
    with urllib.request.urlopen(f"{gateway.url}/health", timeout=5) as response:
        assert (response.status, json.loads(response.read())["status"]) == (200, "pass")
    sink = InfluxV2Sink(gateway.url, token="t", org="o", bucket=db)
    assert sink.ping()
    assert [(r.method, r.path, r.status) for r in gateway.requests] == [
        ("GET", "/health", 200), ("GET", "/ping", 204)]
    gateway.stop()
    assert not sink.ping()
    sink.close()


def test_v1_write_answers_429_and_503_with_retry_after(influx_v2: V2) -> None:
    gateway, server, db = influx_v2
    sink = InfluxV1Sink(gateway.url, db=db)
    point = _p("m", {"f": 1.0})
    gateway.fail_next(429, retry_after="3")
    gateway.fail_next(503, retry_after="0.5")
    with pytest.raises(SinkUnavailable, match="429") as too_many:
        sink.write([point])
    with pytest.raises(SinkUnavailable, match="503") as unavailable:
        sink.write([point])
    assert (too_many.value.retry_after_s, unavailable.value.retry_after_s) == (3.0, 0.5)
    assert _rows(server, db, "SELECT f FROM m") == []
    assert sink.write([point]).written == 1
    assert [(w.path, w.params["db"], w.status) for w in gateway.writes()] == [
        ("/write", db, 429), ("/write", db, 503), ("/write", db, 204)]
    assert _rows(server, db, "SELECT f FROM m") == [{"time": T0, "f": 1.0, "_measurement": "m"}]
    sink.close()


def test_large_writes_go_in_chunks(influx_v2: V2) -> None:
    gateway, server, db = influx_v2
    sink = InfluxV2Sink(gateway.url, token="t", org="o", bucket=db, max_batch_points=40)
    points = [_p("m", {"f": float(i)}, i) for i in range(100)]
    assert sink.write(points).written == 100
    assert [w.body.count(b"\n") + 1 for w in gateway.writes()] == [40, 40, 20]
    assert len(_rows(server, db, "SELECT f FROM m")) == 100
    sink.close()


def test_v1_writes_into_the_named_retention_policy(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    server.execute(f'CREATE RETENTION POLICY "week" ON "{db}" DURATION 7d REPLICATION 1')
    sink = InfluxV1Sink(server.url, db=db, rp="week")
    now_ns = int(time.time()) * 1_000_000_000  # inside the 7-day policy
    assert sink.write([Point("m", (), {"f": 1.0}, now_ns)]).written == 1
    sink.close()
    assert [row["f"] for row in server.query('SELECT f FROM "week"."m"', db=db)] == [1.0]
    assert server.query('SELECT f FROM "autogen"."m"', db=db) == []
