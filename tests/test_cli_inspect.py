"""``telemetry inspect`` against a real Redis: the numbers printed are the streams' real state."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from producers.keys import dlq_key, stream_key
from producers.wire import encode_entry, encode_events
from tests.cli_harness import make_app, stream_flags
from tests.services import RedisServer

PREFIX = "t"


def _entry(i: int) -> dict[bytes, bytes]:
    events = [
        (0, "attachment_monitoring", 1_700_000_000.0 + i, {"user_id": f"u{i}"}, {"emotional_intensity": 0.5})
    ]
    return encode_entry("ab" * 8, i, encode_events(events), 1)


def _run(server: RedisServer, *args: str) -> Any:
    result = CliRunner().invoke(
        make_app("consumer.cli.inspect"),
        ["inspect", *stream_flags(server.url, PREFIX, 2), *args],
    )
    return result


@pytest.fixture
def populated(redis_server: RedisServer) -> RedisServer:
    client = redis_server.client()
    s0, s1 = stream_key(PREFIX, 0), stream_key(PREFIX, 1)
    for i in range(5):
        client.xadd(s0, _entry(i))
    for i in range(3):
        client.xadd(s1, _entry(i))
    client.xgroup_create(s0, "aggregator", id="0")
    client.xgroup_create(s1, "aggregator", id="$")
    delivered = client.xreadgroup("aggregator", "w1", {s0: ">"}, count=3)
    first_id = delivered[0][1][0][0]
    client.xack(s0, "aggregator", first_id)
    for reason in ("too_late", "too_late", "invalid_name"):
        client.xadd(dlq_key(PREFIX), {"reason": reason, "detail": "x", "payload": b"\x90"})
    return redis_server


def test_inspect_reports_the_dead_letter_retention_and_letters_past_it(redis_server: RedisServer) -> None:
    client = redis_server.client()
    now_ms = int(client.time()[0]) * 1000
    client.xadd(dlq_key(PREFIX), {"reason": "too_late", "payload": b"\x90"}, id=f"{now_ms - 3 * 3_600_000}-0")
    result = CliRunner().invoke(make_app("consumer.cli.inspect"),
                                ["inspect", "--json", *stream_flags(redis_server.url, PREFIX, 2)],
                                env={"TELEMETRY_DLQ_RETENTION": "1h"})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dead_letters"]["retention_s"] == 3600.0
    assert doc["dead_letters"]["oldest_age_s"] == pytest.approx(3 * 3600, abs=60)
    assert any("older than their retention" in warning for warning in doc["warnings"])
    human = CliRunner().invoke(make_app("consumer.cli.inspect"),
                               ["inspect", *stream_flags(redis_server.url, PREFIX, 2)],
                               env={"TELEMETRY_DLQ_RETENTION": "1h"})
    assert "kept 1h" in human.stdout and "the oldest is 3h old" in human.stdout


def test_inspect_json_matches_stream_state(populated: RedisServer) -> None:
    result = _run(populated, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    client = populated.client()
    s0, s1 = doc["shards"]
    assert (s0["length"], s1["length"]) == (
        client.xlen(stream_key(PREFIX, 0)),
        client.xlen(stream_key(PREFIX, 1)),
    )
    assert (s0["length"], s1["length"]) == (5, 3)
    ids0 = [eid.decode() for eid, _ in client.xrange(stream_key(PREFIX, 0))]
    assert (s0["first_id"], s0["last_id"]) == (ids0[0], ids0[-1])
    group0 = s0["groups"][0]
    assert group0["name"] == "aggregator"
    assert group0["pending"] == 2 == client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"]
    assert group0["lag_entries"] == 2
    assert group0["oldest_pending_id"] == ids0[1]
    assert [c["name"] for c in group0["consumers"]] == ["w1"]
    assert group0["consumers"][0]["pending"] == 2
    assert s0["memory_bytes"] == pytest.approx(client.memory_usage(stream_key(PREFIX, 0)), rel=0.5)
    group1 = s1["groups"][0]
    assert (group1["pending"], group1["lag_entries"], group1["lag_s"], group1["consumers"]) == (0, 0, 0.0, [])
    assert doc["totals"] == {"length": 8, "pending": 2, "lag_entries": 2}
    oldest = client.xrange(dlq_key(PREFIX), count=1)[0][0].decode()
    assert doc["dead_letters"] == {
        "total": 3,
        "by_reason": {"invalid_name": 1, "too_late": 2},
        "complete": True,
        "oldest_id": oldest,
        "oldest_time": doc["dead_letters"]["oldest_time"],
        "oldest_age_s": doc["dead_letters"]["oldest_age_s"],
        "retention_s": 7 * 86_400.0,
    }
    assert doc["dead_letters"]["oldest_time"].startswith("20")
    assert 0 <= doc["dead_letters"]["oldest_age_s"] < 60
    assert any("no live consumer" in w and stream_key(PREFIX, 1) in w for w in doc["warnings"])


def test_inspect_table_shows_streams_and_dead_letters(populated: RedisServer) -> None:
    result = _run(populated)
    assert result.exit_code == 0, result.output
    assert stream_key(PREFIX, 0) in result.stdout and stream_key(PREFIX, 1) in result.stdout
    assert "dead letters: 3" in result.stdout
    assert "too_late 2" in result.stdout


def test_inspect_missing_streams_are_reported(redis_server: RedisServer) -> None:
    result = _run(redis_server, "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert [s["exists"] for s in doc["shards"]] == [False, False]
    assert len(doc["warnings"]) == 2


def test_inspect_unreachable_redis_is_one_line_exit_1(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.kill()
    assert not redis_server.is_running()
    result = CliRunner().invoke(make_app("consumer.cli.inspect"), ["inspect", "--redis-url", url])
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_inspect_bad_config_exit_2() -> None:
    result = CliRunner().invoke(make_app("consumer.cli.inspect"), ["inspect", "--shards", "zero"])
    assert result.exit_code == 2
    assert "shards" in result.stderr and "zero" in result.stderr
