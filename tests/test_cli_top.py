"""``telemetry top`` against a real Redis: driven in a pseudo-terminal for a few refreshes, then ``q``."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

from typer.testing import CliRunner

from producers.keys import dlq_key, stream_key
from producers.wire import encode_entry, encode_events
from tests.cli_harness import child_argv, make_app, stream_flags
from tests.services import RedisServer

PREFIX = "t"
ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _send(client: object, shard: int, seq: int, measurement: str, n: int) -> None:
    events = [(0, measurement, 1_700_000_000.0 + i, {"bot_name": "elena"}, {"x": i}) for i in range(n)]
    client.xadd(stream_key(PREFIX, shard), encode_entry("ef" * 8, seq, encode_events(events), n))  # type: ignore[attr-defined]


def _read_until(fd: int, needle: str, timeout_s: float) -> str:
    seen = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and ANSI.sub("", seen).count(needle) == 0:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536).decode("utf-8", "replace")
            except OSError:
                break
    return ANSI.sub("", seen)


def test_top_in_a_terminal_refreshes_and_quits_on_q(redis_server: RedisServer) -> None:
    client = redis_server.client()
    for shard in (0, 1):
        client.xgroup_create(stream_key(PREFIX, shard), "aggregator", id="0", mkstream=True)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            *child_argv("consumer.cli.top"),
            "top",
            "--interval",
            "300ms",
            *stream_flags(redis_server.url, PREFIX, 2),
        ],
        cwd=ROOT,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "120", "LINES": "40"},
    )
    os.close(slave)
    try:
        first = _read_until(master, "events/s per measurement", 30)
        assert "events/s per measurement" in first
        _send(client, 0, 1, "attachment_monitoring", 40)
        _send(client, 1, 2, "vector_classification", 7)
        client.xadd(dlq_key(PREFIX), {"reason": "too_late"})
        screen = _read_until(master, "events seen: 47", 30)
        assert "events seen: 47" in screen
        assert "attachment_monitoring" in screen and "vector_classification" in screen
        assert "dead letters: 1" in screen
        assert re.search(r"t:\{0\}\s+│\s+1\s+│\s+1\s+│", screen), screen[
            -3000:
        ]  # one entry, not yet delivered
        assert proc.poll() is None  # still refreshing
        os.write(master, b"q")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert client.xpending(stream_key(PREFIX, 0), "aggregator")["pending"] == 0  # watching took nothing


def test_top_once_prints_one_frame_with_worker_metrics(redis_server: RedisServer) -> None:
    from consumer.core.metrics import Metrics
    from tests.services import free_port

    metrics = Metrics()  # the worker's own /metrics endpoint
    metrics.listen("gauge", 0, "open_windows", 17)
    port = free_port()
    server = metrics.serve(port, host="127.0.0.1")
    client = redis_server.client()
    _send(client, 0, 1, "m", 3)
    original_render = metrics.render

    def render_then_write() -> bytes:
        """Two writes (40 ms, 60 ms) happen right after top's first scrape -> mean 50 ms in its frame."""
        body = original_render()
        if not getattr(render_then_write, "done", False):
            render_then_write.done = True  # type: ignore[attr-defined]
            metrics.listen("latency", 0, "write", 40.0)
            metrics.listen("latency", 0, "write", 60.0)
        return body

    metrics.render = render_then_write  # type: ignore[method-assign]
    try:
        result = CliRunner().invoke(
            make_app("consumer.cli.top"),
            [
                "top",
                "--once",
                "--interval",
                "1s",
                *stream_flags(redis_server.url, PREFIX, 1),
                "--metrics-url",
                f"http://127.0.0.1:{port}/metrics",
            ],
            env={"COLUMNS": "150"},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    assert "write latency: 50.0 ms" in result.stdout
    assert re.search(r"t:\{0\}.*│\s+17\s+│", result.stdout), result.stdout
    assert "events seen: 0" in result.stdout  # entries older than the start are not counted as new
