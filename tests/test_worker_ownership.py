"""Shards spread over live workers, rebalance on join and leave, takeover after a death; /metrics."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from consumer.core.config import WorkerConfig
from consumer.core.metrics import Metrics
from consumer.core.selftelemetry import SelfTelemetry
from consumer.pipeline.lease import assign
from consumer.pipeline.worker import Worker
from consumer.sinks import MemorySink
from tests.services import RedisServer, free_port
from tests.test_worker import PREFIX, Producer, _now_based

SHARDS = 4


def _worker(server: RedisServer, name: str, sink: MemorySink, **overrides: Any) -> Worker:
    values: dict[str, Any] = {
        "redis_url": server.url, "stream_prefix": PREFIX, "shards": SHARDS, "window_s": 10.0, "grace_s": 0.0,
        "allowed_lateness_s": 3600.0, "influx_url": "memory://", "consumer": name, "lease_s": 1.0,
        "block_ms": 20, "checkpoint_interval_s": 0.01,
    }
    values.update(overrides)
    return Worker(WorkerConfig(**values), sink=sink)


def _poll(*workers: Worker, rounds: int = 3) -> None:
    for _ in range(rounds):
        for worker in workers:
            worker.ownership.next_maintenance = 0.0
            worker.poll_once()


def _send(server: RedisServer, t0: float, users: range) -> None:
    Producer(server.client(), pid=f"{users.start:016x}", shards=SHARDS).send(
        [(1, "c", t0 + 1, {"user": f"u{u}"}, {"n": 1}) for u in users])


def test_join_leave_and_death_move_shards_and_lose_nothing(redis_server: RedisServer) -> None:
    sink = MemorySink()
    t0 = _now_based(0)
    first = _worker(redis_server, "w-a", sink)
    _send(redis_server, t0, range(0, 20))
    _poll(first)
    assert sorted(first.shards) == list(range(SHARDS))
    second = _worker(redis_server, "w-b", sink)
    _poll(second, first, second)                    # join: first hands over second's share
    share_b = assign(range(SHARDS), ["w-a", "w-b"], "w-b")
    assert share_b and len(share_b) < SHARDS
    assert sorted(second.shards) == share_b
    assert sorted(first.shards) == sorted(set(range(SHARDS)) - set(share_b))
    _send(redis_server, t0, range(20, 40))
    _poll(first, second)
    # second dies: no more heartbeats or renewals; its leases expire and first takes everything
    time.sleep(first.config.lease_s * 1.5)
    _send(redis_server, t0, range(40, 60))
    _poll(first, rounds=5)
    assert sorted(first.shards) == list(range(SHARDS))
    points = sink.points("c")
    assert {dict(p.tags)["user"]: p.fields["n"] for p in points} == {f"u{u}": 1 for u in range(60)}
    assert all(p.fields["event_count"] == 1 for p in points)


def test_a_clean_stop_hands_shards_over_at_once(redis_server: RedisServer) -> None:
    sink = MemorySink()
    first, second = _worker(redis_server, "w-a", sink), _worker(redis_server, "w-b", sink)
    _poll(first, second, first, second)
    assert sorted([*first.shards, *second.shards]) == list(range(SHARDS))
    second.stop()
    second.run()                                     # stops at once: checkpoints, releases, leaves
    client = redis_server.client()
    assert not any((client.get(f"{PREFIX}:{{{s}}}:lease") or b"").startswith(b"w-b:") for s in range(SHARDS))
    assert client.hget(f"{PREFIX}:workers", "w-b") is None
    _poll(first)                                     # no lease to wait for
    assert sorted(first.shards) == list(range(SHARDS))


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_and_healthz() -> None:
    metrics = Metrics(stale_after_s=60)
    stats = SelfTelemetry(worker="w", window_s=10, listener=metrics.listen)
    stats.count(0, "events_in", 3)
    stats.dead_letter(1, "too_late")
    stats.gauge(0, "lag_entries", 7)
    stats.latency(0, 12.5)
    port = free_port()
    server = metrics.serve(port, host="127.0.0.1")
    try:
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert 'telemetry_worker_events_in_total{shard="0"} 3.0' in body
        assert 'telemetry_worker_dead_letters_by_reason_total{reason="too_late",shard="1"} 1.0' in body
        assert 'telemetry_worker_lag_entries{shard="0"} 7.0' in body
        assert 'telemetry_worker_write_latency_seconds_count{shard="0"} 1.0' in body
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        metrics.stale_after_s = -1.0                 # the loop stopped beating
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 503
    finally:
        server.shutdown()
