"""Raw mode on the real servers: a private redis-server, the suite's influxd, the worker as a process.

Points given to ``tel.write`` (influxdb-client ``Point`` builder chains with explicit ns times) and
``tel.emit`` calls of a raw measurement land in InfluxDB one-for-one, with exact timestamps and
their field types; and a worker SIGKILLed between an InfluxDB write of raw points and its
checkpoint, again and again while the stream goes on, loses none and doubles none.
"""

from __future__ import annotations

import time
from pathlib import Path

from influxdb_client import Point as ClientPoint

from consumer.core.config import WorkerConfig
from consumer.pipeline.worker import Worker
from producers import Telemetry
from tests import chaos_harness as ch
from tests.chaos_gateway import RecordingGateway, WriteRecord, parse_write
from tests.services import InfluxServer, RedisServer

PREFIX = "rawm"


def _t0_ns() -> int:
    """A minute-aligned time ten minutes ago, in ns: a window start, never in the future."""
    return int((time.time() // 60) * 60 - 600) * 1_000_000_000


def test_written_and_emitted_raw_points_arrive_one_for_one_with_exact_times_and_types(
        redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    t0 = _t0_ns()
    tel = Telemetry(redis_url=redis_server.url, prefix=PREFIX, shards=2)
    try:
        write_api = tel.write_api()
        for i in range(12):                       # three points share each series' window
            point = (ClientPoint("audit_logins").tag("user_id", f"u{i % 4}").tag("result", "ok")
                     .field("attempt", i).field("latency", i / 8).field("mfa", i % 2 == 0)
                     .field("agent", f"client {i}, \"v2\"").time(t0 + i * 123_456_789 + 7))
            write_api.write(bucket="whisperengine", record=point)
        write_api.write(bucket="whisperengine", record=f"audit_logins,user_id=u9 attempt=99i {t0 + 1}")
        for i in range(3):
            tel.emit("audit_flags", {"level": i, "on": True}, tags={"bot_name": "elena"},
                     ts=t0 / 1e9 + i + 0.25)
            tel.emit("plain", {"x": float(i)}, tags={"bot_name": "elena"}, ts=t0 / 1e9 + i + 0.25)
        assert tel.flush(timeout=10)
    finally:
        tel.close()
    config = WorkerConfig(redis_url=redis_server.url, stream_prefix=PREFIX, shards=2, window_s=10,
                          grace_s=0, influx_url=server.url, influx_api="v1", influx_db=db, drain=True,
                          block_ms=100, raw_measurements=("audit_*",))
    assert Worker(config).run() == 0

    rows = server.query('SELECT * FROM "audit_logins" GROUP BY *', db=db, epoch="ns")
    got = {(row["user_id"], row["time"]): row for row in rows}
    want = {(f"u{i % 4}", t0 + i * 123_456_789 + 7): i for i in range(12)}
    assert set(got) == set(want) | {("u9", t0 + 1)}
    for key, i in want.items():
        row = got[key]
        assert (row["attempt"], row["latency"], row["mfa"], row["agent"], row["result"]) == (
            i, i / 8, i % 2 == 0, f"client {i}, \"v2\"", "ok")
    assert got[("u9", t0 + 1)]["attempt"] == 99
    flags = server.query('SELECT * FROM "audit_flags"', db=db, epoch="ns")
    assert [(r["time"], r["level"], r["on"]) for r in flags] == [
        (t0 + i * 1_000_000_000 + 250_000_000, i, True) for i in range(3)]
    plain = server.query('SELECT * FROM "plain"', db=db, epoch="ns")
    assert [(r["time"], r["event_count"]) for r in plain] == [(t0, 3)]      # not raw: aggregated
    types = ch.field_types(server, db)
    assert {f: types[("audit_logins", f)] for f in ("attempt", "latency", "mfa", "agent")} == {
        "attempt": "integer", "latency": "float", "mfa": "boolean", "agent": "string"}
    assert (types[("audit_flags", "level")], types[("audit_flags", "on")]) == ("integer", "boolean")


CHUNKS = 5
PER_CHUNK = 400
RAW = "audit_stream"


def _line(t0: int, i: int) -> str:
    ok = "true" if i % 3 else "false"
    return f'{RAW},user_id=u{i % 16} seq={i}i,score={i / 16},ok={ok},note="n {i}" {t0 + i * 1_000_003}'


def _carries_raw(record: WriteRecord) -> bool:
    return any(key[0] == RAW for key, _fields in parse_write(record))


def _hold_a_raw_write(gateway: RecordingGateway) -> WriteRecord:
    """Wait for a write of raw points that InfluxDB applied and whose reply is withheld."""
    while True:
        held = gateway.wait_held(timeout_s=60)
        if _carries_raw(held):
            return held
        gateway.release()          # the worker's own telemetry: let it through, hold the next
        gateway.hold_after.set()


def test_sigkill_between_raw_writes_and_checkpoints_loses_none_and_doubles_none(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, db = influx
    t0 = _t0_ns()
    gateway = RecordingGateway(server.url, label="worker").start()
    env = ch.worker_env(redis_server.url, gateway.url, db, TELEMETRY_STREAM_PREFIX=PREFIX,
                        TELEMETRY_LEASE="2s", TELEMETRY_CHECKPOINT_INTERVAL="500ms",
                        TELEMETRY_READ_COUNT="1", TELEMETRY_RAW_MEASUREMENTS="audit_*")
    log = tmp_path / "worker.log"
    tel = Telemetry(redis_url=redis_server.url, prefix=PREFIX, shards=ch.SHARDS)
    kills: list[ch.KillRecord] = []
    held_writes: list[WriteRecord] = []
    try:
        worker = ch.WorkerProcess(env, log).start()
        for chunk in range(CHUNKS):
            gateway.hold_after.set()               # the next write is applied, its reply withheld
            tel.write([_line(t0, i) for i in range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK)])
            assert tel.flush(timeout=10)
            held = _hold_a_raw_write(gateway)
            kills.append(worker.kill(f"after raw write #{held.number}"))
            gateway.release()
            assert held.applied and not held.delivered, "InfluxDB had the points, the worker never knew"
            held_writes.append(held)
            worker = ch.WorkerProcess(env, log).start()
        worker.terminate()
        drain = ch.WorkerProcess(env, log, ["--drain"])
        assert drain.run(timeout_s=180) == 0, drain.log_tail()
    finally:
        tel.close()
        gateway.stop()

    assert [kill.returncode for kill in kills] == [-9] * CHUNKS            # each fault happened
    later = gateway.writes
    for held in held_writes:                   # and each held write was replayed by a successor
        keys = {key for key, _fields in parse_write(held) if key[0] == RAW}
        rewritten: set[tuple[object, ...]] = set()
        for record in later[held.number + 1:]:
            rewritten |= {key for key, _fields in parse_write(record)}
        assert keys & rewritten, f"write #{held.number} was not written again after the kill"
    sent = CHUNKS * PER_CHUNK
    raw_lines = sum(1 for record in later if record.applied
                    for key, _fields in parse_write(record) if key[0] == RAW)
    assert raw_lines > sent                    # points reached InfluxDB more than once...
    rows = server.query(f'SELECT * FROM "{RAW}" GROUP BY *', db=db, epoch="ns")
    assert len(rows) == sent                   # ...and are stored once each
    got = {(row["user_id"], row["time"]): (row["seq"], row["score"], row["ok"], row["note"])
           for row in rows}
    assert got == {(f"u{i % 16}", t0 + i * 1_000_003): (i, i / 16, i % 3 != 0, f"n {i}")
                   for i in range(sent)}
    count = server.query(f'SELECT count("seq") FROM "{RAW}"', db=db)
    assert count[0]["count"] == sent
