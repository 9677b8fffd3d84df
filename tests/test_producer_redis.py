"""Producer against a real redis-server: volume, crashes, a frozen server, overflow, fork."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from producers import Telemetry
from producers._sender import StreamSender, client_from_url
from producers.wire import encode_entry
from tests.services import RedisServer, free_port
from tests.test_producer_support import duplicates, read_batches, read_events


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Wait for a condition (a generous deadline only to avoid hanging; never a measured time)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat: 'T' while stopped by SIGSTOP."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_100k_events_from_threads_arrive_exactly_once(redis_server: RedisServer) -> None:
    tel = Telemetry(redis_url=redis_server.url, buffer_events=200_000)
    per_thread, threads = 25_000, 4

    def work(n: int) -> None:
        tags = {"thread": str(n), "bot_name": "elena"}
        for i in range(per_thread):
            tel.emit("load", {"i": i, "v": 0.5}, tags=tags)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert tel.flush(60)
    events = read_events(redis_server.client())
    ids = [(e[3]["thread"], e[4]["i"]) for e in events]
    assert len(ids) == per_thread * threads
    assert duplicates(ids) == {}
    assert set(ids) == {(str(n), i) for n in range(threads) for i in range(per_thread)}
    assert tel.stats() == {"emitted": 100_000, "sent": 100_000, "dropped": 0, "buffered": 0, "errors": 0,
                           "send_failures": 0}
    tel.close(5)


def test_entries_reach_redis_byte_for_byte(redis_server: RedisServer) -> None:
    """The sender writes XADD in the Redis protocol itself: binary payloads (CR LF inside, empty,
    large) arrive intact, one entry per shard, in order."""
    sender = StreamSender(lambda: client_from_url(redis_server.url), prefix="bytes", shards=2,
                          stream_maxlen=1_000, producer_id="p1")
    payloads = [b"\r\n$3\r\n*1\r\n", b"", os.urandom(300_000)]
    for shard, payload in enumerate(payloads):
        sender.add(shard % 2, payload, shard + 1)
    assert sender.send() and not sender.pending
    client = redis_server.client()
    stored = [fields for shard in (0, 1) for _id, fields in client.xrange(f"bytes:{{{shard}}}")]
    assert stored == [encode_entry("p1", 1, payloads[0], 1), encode_entry("p1", 2, payloads[2], 3),
                      encode_entry("p1", 1, payloads[1], 2)]
    sender.close()


def test_a_shard_redis_refuses_is_retried_alone_and_in_order(redis_server: RedisServer) -> None:
    """An error reply for one entry (here WRONGTYPE: the shard's key is not a stream) keeps that
    shard's entries pending with their sequence numbers; the other shards' entries are delivered.
    Once the key is fixed, the retry delivers the rest, each event exactly once."""
    client = redis_server.client()
    client.set("telemetry:{1}", "not a stream")
    tel = Telemetry(redis_url=redis_server.url, shards=2, flush_interval_ms=20)
    for i in range(200):
        tel.emit("refused", {"i": i}, tags={"bot_name": f"b{i % 7}"})
    wait_until(lambda: tel.stats()["send_failures"] > 0 and tel.stats()["sent"] > 0, "a partial send")
    stuck = tel.stats()
    assert stuck["buffered"] > 0 and stuck["sent"] + stuck["buffered"] == 200
    assert client.xlen("telemetry:{0}") > 0
    client.delete("telemetry:{1}")
    assert tel.flush(30)
    events = read_events(client, shards=2)
    assert sorted(e[4]["i"] for e in events) == list(range(200))
    for shard in (0, 1):
        sequences = [batch.sequence for s, batch in read_batches(client, shards=2) if s == shard]
        assert sequences == list(range(1, len(sequences) + 1))
    tel.close(5)


def test_redis_killed_and_restarted_loses_nothing_within_bound(redis_server: RedisServer) -> None:
    tel = Telemetry(redis_url=redis_server.url, flush_interval_ms=20, buffer_events=50_000)
    total = 0

    def emit(n: int) -> None:
        nonlocal total
        for _ in range(n):
            tel.count("restart", "c", total, tags={"bot_name": f"b{total % 5}"})
            total += 1

    emit(5_000)
    assert tel.flush(30)
    redis_server.kill()
    assert not redis_server.is_running()
    emit(10_000)
    wait_until(lambda: tel.stats()["send_failures"] > 0, "a failed write while Redis is down")
    assert tel.stats()["buffered"] > 0
    redis_server.start()
    emit(5_000)
    assert tel.flush(60)
    values = [e[4]["c"] for e in read_events(redis_server.client())]
    assert duplicates(values) == {}
    assert sorted(values) == list(range(20_000))
    stats = tel.stats()
    assert (stats["sent"], stats["dropped"], stats["buffered"]) == (20_000, 0, 0)
    tel.close(5)


def test_redis_killed_while_emitter_thread_runs_counts_each_event_once(redis_server: RedisServer) -> None:
    tel = Telemetry(redis_url=redis_server.url, flush_interval_ms=5, batch_max_events=500,
                    buffer_events=100_000)
    total = 60_000
    progress = threading.Event()

    def emitter() -> None:
        for i in range(total):
            tel.emit("midrun", {"i": i}, tags={"user_id": f"u{i % 97}"})
            if i % 1_000 == 999:
                time.sleep(0.002)   # keep the run long enough to span the crash
            if i == total // 4:
                progress.set()

    thread = threading.Thread(target=emitter)
    thread.start()
    progress.wait(60)
    wait_until(lambda: tel.stats()["sent"] > 0, "some events delivered before the crash")
    redis_server.kill()
    assert not redis_server.is_running()
    wait_until(lambda: tel.stats()["send_failures"] > 0, "a failed write while Redis is down")
    redis_server.start()
    thread.join()
    assert tel.flush(60)
    client = redis_server.client()
    values = [e[4]["i"] for e in read_events(client)]
    assert duplicates(values) == {}
    assert sorted(values) == list(range(total))
    stats = tel.stats()
    assert (stats["sent"], stats["dropped"], stats["buffered"], stats["errors"]) == (total, 0, 0, 0)
    tel.close(5)


def test_emit_loop_finishes_while_redis_is_stopped(redis_server: RedisServer) -> None:
    tel = Telemetry(redis_url=redis_server.url, flush_interval_ms=10, buffer_events=100_000)
    tel.emit("pause", {"i": -1})
    assert tel.flush(10)   # connected before the freeze
    redis_server.pause()
    try:
        for i in range(50_000):
            tel.emit("pause", {"i": i}, tags={"bot_name": "elena"})
        # Proof that no emit waited for Redis: the server is still frozen after the whole loop.
        assert process_state(redis_server.pid) == "T"
        assert tel.stats()["sent"] == 1
    finally:
        redis_server.resume()
    assert tel.flush(60)
    values = sorted(e[4]["i"] for e in read_events(redis_server.client()))
    assert values == list(range(-1, 50_000))
    tel.close(5)


def test_overflow_drops_oldest_and_counts_exactly(tmp_path: Path) -> None:
    port = free_port()
    server = RedisServer(tmp_path / "late", port=port)   # not started yet: Redis is down
    tel = Telemetry(redis_url=server.url, buffer_events=1_000, batch_max_events=100, flush_interval_ms=10)
    try:
        tel.emit("ovf", {"i": 0})
        wait_until(lambda: tel.stats()["send_failures"] > 0, "the first failed write")
        for i in range(1, 5_000):
            tel.emit("ovf", {"i": i})
        stats = tel.stats()
        assert stats["emitted"] == 5_000 and stats["dropped"] > 0
        server.start()
        assert tel.flush(60)
        delivered = sorted(e[4]["i"] for e in read_events(server.client()))
        stats = tel.stats()
        assert stats["dropped"] == stats["emitted"] - len(delivered)
        assert stats["sent"] == len(delivered) and stats["buffered"] == 0
        assert delivered[0] == 0                       # the batch in flight before the outage
        assert delivered[-1000:] == list(range(4_000, 5_000))   # the newest events survive
        assert len(delivered) <= 1_000 + 4 * 100   # the bound plus what can be in flight
    finally:
        tel.close(5)
        server.kill()


def test_fork_child_sends_own_events_and_not_the_parents(redis_server: RedisServer) -> None:
    tel = Telemetry(redis_url=redis_server.url, flush_interval_ms=60_000)
    for i in range(100):
        tel.emit("fork", {"i": i}, tags={"who": "parent"})
    assert tel.stats()["buffered"] == 100
    pid = os.fork()
    if pid == 0:   # child: its own flusher, empty buffer
        code = 1
        try:
            if tel.stats()["buffered"] == 0:
                for i in range(50):
                    tel.emit("fork", {"i": i}, tags={"who": "child"})
                code = 0 if tel.close(20) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tel.flush(30)
    client = redis_server.client()
    events = read_events(client)
    assert sorted((e[3]["who"], e[4]["i"]) for e in events) == sorted(
        [("parent", i) for i in range(100)] + [("child", i) for i in range(50)])
    producers_by_who = {(b.producer_id, b.events[0][3]["who"]) for _, b in read_batches(client)}
    assert len({p for p, _ in producers_by_who}) == 2
    tel.close(5)


def test_redis_cluster_url_uses_cluster_client(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "cluster", appendonly=False, extra_args=(
        "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "cluster" / "nodes.conf"),
        "--cluster-port", str(free_port())))   # the default bus port (port + 10000) may not exist
    server.start()
    try:
        client = server.client()
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_until(lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"), "cluster ok")
        tel = Telemetry(redis_url=f"redis+cluster://127.0.0.1:{server.port}/0", flush_interval_ms=10)
        for i in range(200):
            tel.emit("cl", {"i": i}, tags={"user_id": f"u{i}"})
        assert tel.flush(30)
        from redis.cluster import RedisCluster

        assert isinstance(tel._core._sender._client, RedisCluster)
        assert sorted(e[4]["i"] for e in read_events(client)) == list(range(200))
        tel.close(5)
    finally:
        server.kill()


@pytest.mark.chaos
def test_soak_repeated_restarts(redis_server: RedisServer) -> None:
    tel = Telemetry(redis_url=redis_server.url, flush_interval_ms=10, buffer_events=1_000_000)
    sent = 0
    for _round in range(10):
        for _ in range(20_000):
            tel.count("soak", "c", sent)
            sent += 1
        redis_server.kill()
        redis_server.start()
    assert tel.flush(120)
    values = [e[4]["c"] for e in read_events(redis_server.client())]
    assert sorted(values) == list(range(sent))
    tel.close(5)


def test_interpreter_exit_flushes_buffered_events(redis_server: RedisServer) -> None:
    script = (
        "from producers import Telemetry\n"
        f"tel = Telemetry(redis_url={redis_server.url!r}, flush_interval_ms=3_600_000)\n"
        "for i in range(1000):\n"
        "    tel.emit('exit', {'i': i})\n"
        "assert tel.stats()['buffered'] == 1000\n"   # nothing sent before exit
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(e[4]["i"] for e in read_events(redis_server.client())) == list(range(1000))


def test_buffer_full_is_logged_once_per_interval(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from producers import _buffer

    monkeypatch.setattr(_buffer, "DROP_LOG_INTERVAL_S", 3600.0)
    tel = Telemetry(redis_url=f"redis://127.0.0.1:{free_port()}/0", buffer_events=100, batch_max_events=10,
                    flush_interval_ms=5)
    with caplog.at_level(logging.WARNING, logger="producers"):
        for round_ in range(5):
            for i in range(1_000):
                tel.emit("full", {"i": i})
            target = (round_ + 1) * 1_000 - 100 - 4 * 10   # bound + batches in flight
            wait_until(lambda t=target: tel.stats()["dropped"] >= t, "drops to be noticed")   # type: ignore[misc]
            tel.flush(0.05)   # lets the flusher publish (and maybe log) after each round
    tel.close(0.1)
    full = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(full) == 1
    assert tel.stats()["dropped"] >= 5_000 - 100 - 4 * 10
