"""Privacy at rest: with pseudonymisation on, a known user id is found nowhere.

Valid and invalid events carrying the id go through a pseudonymising producer and one that
leaves it to the worker, the worker (dead letters included), a replay and a second worker run.
Then every key in Redis (``SCAN``, each value read by type and ``DUMP``ed, compressed blobs
opened), every point and series in InfluxDB and every CLI output are searched for the raw id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from typer.testing import CliRunner

from consumer.core.config import WorkerConfig
from consumer.pipeline.worker import Worker
from producers import ProducerConfig, Telemetry
from producers.pseudonyms import pseudonym
from tests.cli_harness import child_argv, make_app, stream_flags
from tests.services import InfluxServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "private"
SHARDS = 2
RAW = "raw-user-5c1e7a"
KEY = "at-rest-test-key"
PSEUDONYM = pseudonym(KEY.encode(), RAW)
CLI_MODULES = ("consumer.cli.dlq", "consumer.cli.inspect")
TAIL_EVENTS = 12


def _env(redis_server: RedisServer, influx: tuple[InfluxServer, str], **more: str) -> dict[str, str]:
    server, db = influx
    return {"TELEMETRY_REDIS_URL": redis_server.url, "TELEMETRY_STREAM_PREFIX": PREFIX,
            "TELEMETRY_SHARDS": str(SHARDS), "TELEMETRY_INFLUX_URL": server.url, "TELEMETRY_INFLUX_API": "v1",
            "TELEMETRY_INFLUX_DB": db, "TELEMETRY_PSEUDONYMIZE": "user_id", "TELEMETRY_PSEUDONYM_KEY": KEY,
            "TELEMETRY_GRACE": "0s", "TELEMETRY_BLOCK_MS": "50", **more}


def _emit_all(tel: Telemetry, now: float, *, future_s: float) -> None:
    """3 valid, 3 invalid events for RAW (6 per producer)."""
    tags = {"user_id": RAW, "bot_name": "elena", "risk_level": "HIGH"}
    tel.emit("attachment_monitoring", {"emotional_intensity": 0.8, "intervention_provided": True},
             tags=dict(tags), ts=now - 30)
    tel.count("engagement_engine_telemetry", "interventions_generated", tags=dict(tags), ts=now - 30)
    bound = tel.bind("attachment_monitoring", user_id=RAW)
    bound.emit({"emotional_intensity": 0.2}, tags={"risk_level": "LOW"}, ts=now - 29)
    tel.emit("attachment_monitoring", {"emotional_intensity": float("nan")}, tags=dict(tags), ts=now - 30)
    tel.gauge("attachment_monitoring", "consecutive_days", "six", tags=dict(tags), ts=now - 30)  # type: ignore[arg-type]
    tel.emit("attachment_monitoring", {"emotional_intensity": 0.5}, tags=dict(tags), ts=now + future_s)


def _expanded(value: Any, depth: int = 0) -> Iterator[bytes]:
    """``value`` and whatever it holds: msgpack contents, zlib-compressed blobs, nested bytes."""
    if depth > 6:
        return
    if isinstance(value, str):
        yield value.encode("utf-8", "surrogatepass")
        return
    if isinstance(value, (bytes, bytearray)):
        blob = bytes(value)
        yield blob
        with contextlib.suppress(zlib.error):
            yield from _expanded(zlib.decompress(blob), depth + 1)
        try:
            inner = msgpack.unpackb(blob, raw=True, strict_map_key=False)
        except Exception:  # not msgpack: the bytes themselves were searched
            return
        if not isinstance(inner, (bytes, int, float, bool)) and inner is not None:
            yield from _expanded(inner, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _expanded(key, depth + 1)
            yield from _expanded(item, depth + 1)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _expanded(item, depth + 1)
    elif value is not None:
        yield repr(value).encode()


def _redis_contents(client: redis.Redis[bytes]) -> dict[bytes, list[bytes]]:
    """Every key's value, read by type and DUMPed (uncompressed), each expanded."""
    client.config_set("rdbcompression", "no")  # DUMP would hide long strings in LZF otherwise
    contents: dict[bytes, list[bytes]] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        read: Any = {
            "string": lambda k: client.get(k),
            "hash": lambda k: client.hgetall(k),
            "list": lambda k: client.lrange(k, 0, -1),
            "set": lambda k: client.smembers(k),
            "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
            "stream": lambda k: client.xrange(k),
        }[kind](key)
        contents[key] = [key, *_expanded(read), client.dump(key) or b""]
    return contents


def _raw_in_redis(client: redis.Redis[bytes]) -> list[str]:
    return [f"redis key {key!r}" for key, blobs in _redis_contents(client).items()
            if any(RAW.encode() in blob for blob in blobs)]


def _influx_contents(server: InfluxServer, db: str) -> list[str]:
    rows = server.query('SELECT * FROM /.*/', db=db)
    series = server.query("SHOW SERIES", db=db)
    values = server.query('SHOW TAG VALUES WITH KEY =~ /.*/', db=db)
    return [json.dumps(rows), json.dumps(series), json.dumps(values)]


def _cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(make_app(*CLI_MODULES), list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_no_raw_user_id_is_stored_or_shown_anywhere(
        redis_server: RedisServer, influx: tuple[InfluxServer, str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server, db = influx
    env = _env(redis_server, influx)
    flags = stream_flags(redis_server.url, PREFIX, SHARDS)
    tail = subprocess.Popen([*child_argv("consumer.cli.tail"), "tail", "--json", "--limit", str(TAIL_EVENTS),
                             *flags], cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert tail.stderr is not None and "tailing" in tail.stderr.readline()

    now = time.time()
    private = Telemetry(config=ProducerConfig.from_env(env))            # pseudonymises itself
    plain_env = {k: v for k, v in env.items() if "PSEUDONYM" not in k}
    plain = Telemetry(config=ProducerConfig.from_env(plain_env))        # leaves it to the worker
    for tel in (private, plain):
        _emit_all(tel, now, future_s=30)
        assert tel.flush(10.0)
        tel.close()
    tail_out, tail_err = tail.communicate(timeout=60)

    first = WorkerConfig.from_env({**env, "TELEMETRY_MAX_FUTURE": "5s"}).with_overrides(drain=True)
    assert Worker(first).run() == 0
    outputs = [tail_out, tail_err,
               _cli(env, "dlq", "list", "--json", *flags), _cli(env, "dlq", "list", *flags),
               _cli(env, "inspect", "--json", *flags), _cli(env, "inspect", *flags)]
    listed = json.loads(outputs[2])
    assert listed["by_reason"] == {"from_future": 2, "invalid_value": 4}
    assert {d["event"]["tags"]["user_id"] for d in listed["dead_letters"]} == {PSEUDONYM}

    stored_before_replay = _raw_in_redis(redis_server.client())
    outputs.append(_cli(env, "dlq", "replay", "--json", *flags))
    assert json.loads(outputs[-1])["replayed"] == 6
    second = WorkerConfig.from_env({**env, "TELEMETRY_MAX_FUTURE": "5m"}).with_overrides(drain=True)
    assert Worker(second).run() == 0
    outputs += [_cli(env, "dlq", "list", "--json", *flags), _cli(env, "dlq", "list", *flags)]
    assert json.loads(outputs[-2])["by_reason"] == {"invalid_value": 4}  # the fixed ones went through

    # what was written: once-hashed pseudonyms only, from both producers and the replay
    rows = server.query('SELECT "event_count", "user_id" FROM "attachment_monitoring"', db=db)
    assert {r["user_id"] for r in rows} == {PSEUDONYM}
    assert sum(r["event_count"] for r in rows) == 6  # 2 x (emit, bound emit, replayed future emit)
    shown = [json.loads(line) for line in tail_out.splitlines()]
    assert len(shown) == TAIL_EVENTS and {e["tags"]["user_id"] for e in shown} == {PSEUDONYM}

    found = [f"before the replay: {where}" for where in stored_before_replay]
    found += _raw_in_redis(redis_server.client())
    found += [f"influxdb: {text[:200]}" for text in _influx_contents(server, db) if RAW in text]
    found += [f"CLI output {i}: {text[:200]}" for i, text in enumerate(outputs) if RAW in text]
    found += ["worker log"] if RAW in caplog.text else []
    assert found == []
    assert PSEUDONYM in "".join(outputs)  # the search looked at the right things
