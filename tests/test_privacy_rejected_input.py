"""Privacy at rest for input that is not a point (kind 5): a raw user id in an unparsable line.

Lines carrying a known raw id, some of them unparsable, go through a real ``telemetry listen``
and through ``tel.write`` (a producer that pseudonymises and one that leaves it to the worker),
with pseudonymisation on, while ``telemetry tail`` watches; a worker drains them into InfluxDB
and the dead letters. The raw id must be in no Redis key (``SCAN``, every value dumped), no
InfluxDB point or series, no CLI output and no log: already before the worker runs for the
senders that pseudonymise, and after it for all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from consumer.core.config import WorkerConfig
from consumer.pipeline.worker import Worker
from producers import ProducerConfig, Telemetry
from producers.pseudonyms import WITHHELD
from tests import chaos_harness as ch
from tests.cli_harness import child_argv, stream_flags
from tests.listen_process import telemetry_script, wait_listening
from tests.services import InfluxServer, RedisServer, free_port
from tests.test_privacy_at_rest import PSEUDONYM, RAW, ROOT, _cli, _env, _influx_contents, _raw_in_redis

MEASUREMENT = "attachment_monitoring"
LISTENED_EVENTS = 3          # one point, two unparsable lines
WRITTEN_EVENTS = 2           # per tel.write: one point, one unparsable line


def _lines(ts_ns: int) -> list[str]:
    """A valid point and two unparsable lines, each naming RAW."""
    return [f"{MEASUREMENT},user_id={RAW},bot_name=elena emotional_intensity=0.5 {ts_ns}",
            f"{MEASUREMENT},user_id={RAW},bot_name=elena emotional_intensity= {ts_ns}",
            f"{MEASUREMENT},user_id={RAW} emotional_intensity=0.25 half-past-ten"]


def _post(port: int, body: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/write?precision=ns", data=body.encode(),
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _write(env: dict[str, str], ts_ns: int) -> None:
    """``tel.write`` of a point and an unparsable line, both naming RAW, with this producer's settings."""
    tel = Telemetry(config=ProducerConfig.from_env(env))
    lines = _lines(ts_ns)
    tel.write("\n".join((lines[0], lines[1])))
    assert tel.flush(10.0)
    tel.close()


def test_a_raw_id_in_rejected_input_is_stored_and_shown_nowhere(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, db = influx
    env = _env(redis_server, influx)
    flags = stream_flags(redis_server.url, env["TELEMETRY_STREAM_PREFIX"], int(env["TELEMETRY_SHARDS"]))
    expected_events = LISTENED_EVENTS + 2 * WRITTEN_EVENTS
    tail = subprocess.Popen([*child_argv("consumer.cli.tail"), "tail", "--json", "--limit",
                             str(expected_events), *flags], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert tail.stderr is not None and "tailing" in tail.stderr.readline()

    port = free_port()
    listener_log = tmp_path / "listener.log"
    listener = ch.WorkerProcess({**ch.worker_env(redis_server.url, server.url, db), **env,
                                 "TELEMETRY_LISTEN_PORT": str(port)},
                                listener_log, ["listen"], command=[telemetry_script()]).start()
    ts_ns = time.time_ns() - 30 * 10**9
    try:
        assert wait_listening(port, listener.alive), listener.log_tail()
        status, answer = _post(port, "\n".join(_lines(ts_ns)))
    finally:
        listener.terminate()
    assert status == 400 and "line(s) 2, 3" in answer       # the valid line went through
    _write(env, ts_ns)                                       # pseudonymises in the producer
    before_worker = _raw_in_redis(redis_server.client())     # senders that pseudonymise: nothing raw yet

    _write({k: v for k, v in env.items() if "PSEUDONYM" not in k}, ts_ns)   # leaves it to the worker
    tail_out, tail_err = tail.communicate(timeout=60)
    assert Worker(WorkerConfig.from_env(env).with_overrides(drain=True)).run() == 0

    outputs = [tail_out, tail_err, _cli(env, "dlq", "list", "--json", *flags),
               _cli(env, "dlq", "list", *flags), _cli(env, "inspect", "--json", *flags),
               _cli(env, "inspect", *flags), answer]                  # answer: what HTTP clients log
    listed = json.loads(outputs[2])
    assert listed["by_reason"] == {"unparsable_line": 4}
    assert all(WITHHELD in json.dumps(letter) for letter in listed["dead_letters"])
    rows = server.query(f'SELECT "event_count", "user_id" FROM "{MEASUREMENT}"', db=db)
    assert {r["user_id"] for r in rows} == {PSEUDONYM}
    assert sum(r["event_count"] for r in rows) == 3           # the listener's point and each write's
    shown = [json.loads(line) for line in tail_out.splitlines()]
    assert len(shown) == expected_events

    found = [f"before the worker: {where}" for where in before_worker]
    found += _raw_in_redis(redis_server.client())
    found += [f"influxdb: {text[:200]}" for text in _influx_contents(server, db) if RAW in text]
    found += [f"CLI output {i}: {text[:200]}" for i, text in enumerate(outputs) if RAW in text]
    found += ["listener log"] if RAW in listener_log.read_text() else []
    assert found == []
    assert PSEUDONYM in "".join(outputs)                      # the search looked at the right things
