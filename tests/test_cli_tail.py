"""``telemetry tail`` against a real Redis: sees what arrives after it starts, never joins the group."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from producers.keys import stream_key
from producers.wire import encode_entry, encode_events
from tests.cli_harness import child_argv, stream_flags
from tests.services import RedisServer

PREFIX = "t"
ROOT = Path(__file__).resolve().parent.parent


def _send(client: object, shard: int, seq: int, events: list[tuple]) -> None:  # type: ignore[type-arg]
    client.xadd(stream_key(PREFIX, shard), encode_entry("cd" * 8, seq, encode_events(events), len(events)))  # type: ignore[attr-defined]


def _start_tail(server: RedisServer, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            *child_argv("consumer.cli.tail"),
            "tail",
            "--json",
            *stream_flags(server.url, PREFIX, 2),
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # printed once the start positions are fixed
    assert "tailing" in line, line
    return proc


def test_tail_shows_new_events_and_creates_no_pending(redis_server: RedisServer) -> None:
    client = redis_server.client()
    _send(client, 0, 1, [(0, "old", 1.0, {}, {"x": 1})])
    for shard in (0, 1):
        client.xgroup_create(stream_key(PREFIX, shard), "aggregator", id="0", mkstream=True)
    proc = _start_tail(redis_server, "--limit", "3")
    _send(
        client,
        1,
        2,
        [(0, "attachment_monitoring", 1_700_000_000.5, {"user_id": "u1"}, {"emotional_intensity": 0.82})],
    )
    _send(
        client,
        0,
        3,
        [
            (
                1,
                "engagement_engine_telemetry",
                1_700_000_001.0,
                {"bot_name": "elena"},
                {"interventions_generated": 2},
            ),
            (2, "attachment_monitoring", 1_700_000_002.0, {}, {"consecutive_days": 6}),
        ],
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    # two streams written in the same millisecond have no defined order between them: sort by stream
    events = sorted((json.loads(line) for line in out.splitlines()), key=lambda e: (e["stream"], e["index"]))
    assert [(e["stream"], e["kind"], e["measurement"], e["tags"], e["fields"]) for e in events] == [
        (
            stream_key(PREFIX, 0),
            "count",
            "engagement_engine_telemetry",
            {"bot_name": "elena"},
            {"interventions_generated": 2},
        ),
        (stream_key(PREFIX, 0), "gauge", "attachment_monitoring", {}, {"consecutive_days": 6}),
        (
            stream_key(PREFIX, 1),
            "emit",
            "attachment_monitoring",
            {"user_id": "u1"},
            {"emotional_intensity": 0.82},
        ),
    ]
    assert events[2]["ts"] == 1_700_000_000.5
    for shard in (0, 1):
        key = stream_key(PREFIX, shard)
        assert client.xpending(key, "aggregator")["pending"] == 0
        assert client.xinfo_consumers(key, "aggregator") == []
        assert client.xinfo_groups(key)[0]["last-delivered-id"] == b"0-0"


def test_tail_filters_by_shard_measurement_and_tag(redis_server: RedisServer) -> None:
    client = redis_server.client()
    proc = _start_tail(
        redis_server, "--shard", "0", "--measurement", "m", "--tag", "bot_name=elena", "--limit", "1"
    )
    _send(client, 1, 1, [(0, "m", 1.0, {"bot_name": "elena"}, {"x": 1})])  # other shard
    _send(
        client,
        0,
        2,
        [
            (0, "other", 1.0, {"bot_name": "elena"}, {"x": 2}),  # other measurement
            (0, "m", 1.0, {"bot_name": "marcus"}, {"x": 3}),  # other tag
            (0, "m", 1.0, {"bot_name": "elena", "user_id": "u"}, {"x": 4}),
        ],
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert [json.loads(line)["fields"] for line in out.splitlines()] == [{"x": 4}]


def test_tail_reports_undecodable_entry(redis_server: RedisServer) -> None:
    client = redis_server.client()
    proc = _start_tail(redis_server, "--limit", "1")
    client.xadd(stream_key(PREFIX, 0), {"v": "9", "p": "x", "s": "1", "n": "0", "d": b""})
    out, _ = proc.communicate(timeout=30)
    assert json.loads(out)["error"] == "unknown_version"


def test_tail_bad_tag_is_usage_error(redis_server: RedisServer) -> None:
    proc = subprocess.run(
        [
            *child_argv("consumer.cli.tail"),
            "tail",
            "--tag",
            "novalue",
            "--redis-url",
            redis_server.url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "key=value" in proc.stderr and "Traceback" not in proc.stderr
