"""``telemetry dlq`` against a real Redis: list, replay (round trip to the shard streams), purge."""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
import pytest
from typer.testing import CliRunner

from consumer.core.config import WorkerConfig
from consumer.pipeline.worker import Worker
from producers.keys import dlq_key, shard_of_series, stream_key
from producers.wire import decode_entry
from tests.cli_harness import make_app, stream_flags
from tests.services import InfluxServer, RedisServer

PREFIX = "t"
SHARDS = 4
EVENTS = [
    [0, "attachment_monitoring", 1_700_000_000.25, {"user_id": "u1", "bot_name": "elena"}, {"x": 1.5}],
    [
        2,
        "attachment_monitoring",
        1_700_000_001.0,
        {"user_id": "u2", "bot_name": "elena"},
        {"consecutive_days": 3},
    ],
    [0, "vector_classification", 1_700_000_002.0, {"bot_name": "marcus"}, {"confidence": 0.25}],
]


def _run(server: RedisServer, *args: str) -> Any:
    return CliRunner().invoke(
        make_app("consumer.cli.dlq"),
        ["dlq", *args, *stream_flags(server.url, PREFIX, SHARDS)],
    )


@pytest.fixture
def letters(redis_server: RedisServer) -> RedisServer:
    client = redis_server.client()
    reasons = ["type_conflict", "too_late", "type_conflict"]
    for i, (event, reason) in enumerate(zip(EVENTS, reasons, strict=True)):
        client.xadd(
            dlq_key(PREFIX),
            {
                "reason": reason,
                "detail": f"detail {i}",
                "source": stream_key(PREFIX, shard_of_series(event[1], event[3], SHARDS)),  # as a worker
                "entry_id": f"1700000000000-{i}",
                "index": str(i),
                "payload": msgpack.packb(event),
            },
        )
    client.xadd(
        dlq_key(PREFIX),
        {
            "reason": "undecodable",
            "detail": "bad msgpack",
            "source": stream_key(PREFIX, 1),
            "entry_id": "1-1",
            "index": "",
            "payload": b"\xc1\xc1",
        },
    )
    return redis_server


def test_dlq_list_json(letters: RedisServer) -> None:
    result = _run(letters, "list", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["total"] == 4
    assert doc["by_reason"] == {"too_late": 1, "type_conflict": 2, "undecodable": 1}
    listed = doc["dead_letters"]
    assert [d["reason"] for d in listed] == ["type_conflict", "too_late", "type_conflict", "undecodable"]
    assert [d["event"]["measurement"] for d in listed[:3]] == [e[1] for e in EVENTS]
    assert listed[0]["event"]["tags"] == EVENTS[0][3] and listed[0]["index"] == 0
    assert listed[3]["replayable"] is False and listed[3]["payload_hex"] == "c1c1"
    only = json.loads(_run(letters, "list", "--json", "--reason", "too_late").stdout)["dead_letters"]
    assert [d["detail"] for d in only] == ["detail 1"]


def test_dlq_list_table(letters: RedisServer) -> None:
    result = _run(letters, "list")
    assert result.exit_code == 0
    assert "type_conflict" in result.stdout and "undecodable" in result.stdout


def test_dlq_replay_dry_run_changes_nothing(letters: RedisServer) -> None:
    client = letters.client()
    result = _run(letters, "replay", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["replayed"], report["skipped"], report["entries"]) == (3, {"undecodable": 1}, [])
    assert client.xlen(dlq_key(PREFIX)) == 4
    assert all(client.exists(stream_key(PREFIX, s)) == 0 for s in range(SHARDS))


def test_dlq_replay_round_trip(letters: RedisServer) -> None:
    client = letters.client()
    result = _run(letters, "replay", "--reason", "type_conflict", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["replayed"] == 2
    replayed: list[Any] = []
    producers = set()
    for shard in range(SHARDS):
        for _entry_id, fields in client.xrange(stream_key(PREFIX, shard)):
            batch = decode_entry(fields)
            producers.add(batch.producer_id)
            for event in batch.events:
                assert shard == shard_of_series(event[1], event[3], SHARDS)
                replayed.append(event)
    assert sorted(replayed, key=lambda e: e[2]) == [EVENTS[0], EVENTS[2]]
    assert producers == {report["producer_id"]} and len(report["producer_id"]) == 16
    remaining = [f[b"reason"] for _, f in client.xrange(dlq_key(PREFIX))]
    assert remaining == [b"too_late", b"undecodable"]
    # a second replay gets a fresh producer id, so the worker cannot mistake it for a retry
    again = json.loads(_run(letters, "replay", "--json").stdout)
    assert again["replayed"] == 1 and again["producer_id"] != report["producer_id"]
    assert [f[b"reason"] for _, f in client.xrange(dlq_key(PREFIX))] == [b"undecodable"]


def test_replay_sends_an_event_back_to_the_shard_it_came_from(redis_server: RedisServer) -> None:
    """A pseudonymised letter's series no longer hashes to its shard; a foreign source does not count."""
    client = redis_server.client()
    event = [0, "m", 1_700_000_000.0, {"user_id": "p_0123456789abcdef"}, {"x": 1.0}]
    by_series = shard_of_series("m", event[3], SHARDS)
    sources = {stream_key(PREFIX, (by_series + 1) % SHARDS): (by_series + 1) % SHARDS,
               stream_key("other", 0): by_series, stream_key(PREFIX, SHARDS + 3): by_series}
    for source in sources:
        client.xadd(dlq_key(PREFIX), {"reason": "type_conflict", "detail": "d", "source": source,
                                      "entry_id": "1-0", "index": "0", "payload": msgpack.packb(event)})
    report = json.loads(_run(redis_server, "replay", "--json").stdout)
    expected: dict[int, int] = {}
    for shard in sources.values():
        expected[shard] = expected.get(shard, 0) + 1
    assert {int(k): v for k, v in report["by_shard"].items()} == expected


def test_dlq_purge_older_than(letters: RedisServer) -> None:
    client = letters.client()
    now_ms = int(client.time()[0]) * 1000
    old_id = f"{now_ms - 10 * 86_400_000}-0"
    client.xadd(dlq_key(PREFIX) + "x", {"a": "b"})  # another key is untouched
    # old letters must carry old ids: write them into a fresh stream in id order
    client.delete(dlq_key(PREFIX))
    client.xadd(dlq_key(PREFIX), {"reason": "too_late", "payload": b""}, id=old_id)
    client.xadd(dlq_key(PREFIX), {"reason": "too_late", "payload": b""}, id=f"{now_ms - 8 * 86_400_000}-0")
    client.xadd(dlq_key(PREFIX), {"reason": "too_late", "payload": b""})
    result = _run(letters, "purge", "--older-than", "7d", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"removed": 2}
    assert client.xlen(dlq_key(PREFIX)) == 1
    assert client.xlen(dlq_key(PREFIX) + "x") == 1


def test_dlq_purge_bad_duration_is_usage_error(letters: RedisServer) -> None:
    result = _run(letters, "purge", "--older-than", "soon")
    assert result.exit_code == 2
    assert "duration" in result.stderr
    assert letters.client().xlen(dlq_key(PREFIX)) == 4


def test_dlq_replay_round_trip_through_the_worker(
    redis_server: RedisServer, influx: tuple[InfluxServer, str]
) -> None:
    """A fixed dead letter becomes a point; one that fails again is back in the dead letters, not lost."""
    server, db = influx
    client = redis_server.client()
    now = time.time()
    good = msgpack.packb(
        [
            0,
            "trust_recovery_telemetry",
            now - 30,
            {"bot_name": "elena", "component": "T", "severity": "minor"},
            {"trust_value": 0.4},
        ]
    )
    future = msgpack.packb(
        [0, "trust_recovery_telemetry", now + 7200, {"bot_name": "elena"}, {"trust_value": 0.9}]
    )
    for reason, payload in (("type_conflict", good), ("from_future", future)):
        client.xadd(
            dlq_key(PREFIX),
            {
                "reason": reason,
                "detail": "d",
                "source": stream_key(PREFIX, 0),
                "entry_id": "1-0",
                "index": "0",
                "payload": payload,
            },
        )
    result = _run(redis_server, "replay", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["replayed"] == 2
    assert client.xlen(dlq_key(PREFIX)) == 0
    config = WorkerConfig(
        redis_url=redis_server.url,
        stream_prefix=PREFIX,
        shards=SHARDS,
        influx_url=server.url,
        influx_api="v1",
        influx_db=db,
        consumer="w1",
        drain=True,
        grace_s=0.0,
        block_ms=50,
    )
    worker = Worker(config)
    assert worker.run() == 0
    rows = server.query(
        'SELECT "event_count", "trust_value", "severity" FROM "trust_recovery_telemetry"', db=db
    )
    assert [(r["event_count"], r["trust_value"], r["severity"]) for r in rows] == [(1, 0.4, "minor")]
    back = client.xrange(dlq_key(PREFIX))
    assert [(f[b"reason"], f[b"payload"]) for _, f in back] == [(b"from_future", future)]
