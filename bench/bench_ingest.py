"""Drop-in ingestion, side by side in one run: ``telemetry listen`` against influxd's own ``/write``,
and the caller's cost of ``tel.write(Point)`` against influxdb-client's synchronous and batching
``write``.

* **lines/s accepted**: the same bodies of 5,000 lines of ``attachment_monitoring`` (5,000 users,
  so 5,000 series per body; explicit ns timestamps) posted back to back over keep-alive
  connections by 1 and 4 client threads, to ``telemetry listen`` (a separate process, one core at
  most: asyncio, one thread) and to influxd's ``/write`` on the same machine (the reference). A
  204 from the listener means the lines are in Redis; from influxd, in its WAL.
* **the caller's cost per point**: the same ``Point`` objects given to ``tel.write_api().write``
  (fakeredis client: the flusher's sends cost nothing here, the caller's part is what is timed),
  to influxdb-client's batching write API (``WriteOptions(batch_size=5_000)``, pointed at the
  listener), and to its synchronous one (one HTTP request per point, to influxd's v2 gateway in
  front of the same influxd): median and p99 of each call, and the calling process's CPU per
  point.

Servers come from ``tests/services.py``; all figures are from one run on a shared machine.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.services import InfluxServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
LINES_PER_BODY = 5_000
USERS = 5_000
SECONDS_PER_RUN = 4.0
CLIENTS = (1, 4)
CALLER_POINTS = 20_000
SYNC_POINTS = 1_000
TARGET_LINES_S = 100_000


def body(batch: int) -> bytes:
    """One 5,000-line body; ``batch`` moves its timestamps so bodies do not overwrite each other."""
    base = 1_764_000_000_000_000_000 + batch * LINES_PER_BODY
    return "".join(
        f"attachment_monitoring,bot_name=elena,risk_level=LOW,user_id=u{i % USERS} "
        f"emotional_intensity={i % 100 / 100},dependency_count={i % 7}i,intervention_provided=false "
        f"{base + i}\n" for i in range(LINES_PER_BODY)).encode()


def _post_loop(port: int, path: str, bodies: list[bytes], deadline: float, counts: list[int],
               slot: int, errors: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = 0
    try:
        while time.monotonic() < deadline:
            connection.request("POST", path, body=bodies[sent % len(bodies)],
                               headers={"Content-Type": "text/plain"})
            response = connection.getresponse()
            response.read()
            if response.status != 204:
                errors.append(f"{response.status}")
                return
            sent += 1
    finally:
        connection.close()
    counts[slot] = sent * LINES_PER_BODY


def lines_per_s(port: int, path: str, clients: int) -> float:
    """Lines accepted per second by ``clients`` threads posting for :data:`SECONDS_PER_RUN`."""
    bodies = [body(b) for b in range(8)]
    counts = [0] * clients
    errors: list[str] = []
    started = time.monotonic()
    deadline = started + SECONDS_PER_RUN
    threads = [threading.Thread(target=_post_loop, args=(port, path, bodies, deadline, counts, c, errors))
               for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"writes to {path} answered {errors[0]}")
    return sum(counts) / (time.monotonic() - started)


@contextlib.contextmanager
def listening(redis_url: str, processes: int = 1) -> Iterator[int]:
    """``telemetry listen`` (``--processes``) on a free port."""
    port = free_port()
    env = {**os.environ, "TELEMETRY_REDIS_URL": redis_url, "TELEMETRY_STREAM_PREFIX": "ingest",
           "TELEMETRY_STREAM_MAXLEN": "100000000", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", "from consumer.cli.app import main; main()",
                                "listen", "--port", str(port), "--processes", str(processes)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/ping")
                break
            if time.monotonic() > deadline:
                raise RuntimeError("telemetry listen did not start")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _points(count: int) -> list[Any]:
    from influxdb_client import Point

    return [Point("attachment_monitoring").tag("bot_name", "elena").tag("user_id", f"u{i % USERS}")
            .field("emotional_intensity", i % 100 / 100).field("dependency_count", i % 7)
            .field("intervention_provided", False).time(1_764_000_000_000_000_000 + i) for i in range(count)]


def _timed_calls(call: Callable[[Any], None], points: list[Any]) -> tuple[float, float, float]:
    """Median and p99 of one call in µs, and the process's CPU per point in µs."""
    durations = []
    cpu = time.process_time()
    for point in points:
        started = time.perf_counter()
        call(point)
        durations.append(time.perf_counter() - started)
    cpu_us = (time.process_time() - cpu) / len(points) * 1e6
    durations.sort()
    return statistics.median(durations) * 1e6, durations[int(len(durations) * 0.99)] * 1e6, cpu_us


def caller_costs(listener_port: int, influx_v2_url: str, db: str) -> list[tuple[str, float, float, float]]:
    import fakeredis
    from influxdb_client import InfluxDBClient, WriteOptions
    from influxdb_client.client.write_api import SYNCHRONOUS

    from producers import Telemetry

    rows = []
    tel = Telemetry(client=fakeredis.FakeRedis(), buffer_events=10 * CALLER_POINTS)
    try:
        write_api = tel.write_api()
        rows.append(("`tel.write_api().write(record=point)`",
                     *_timed_calls(lambda p: write_api.write(bucket=db, record=p), _points(CALLER_POINTS))))
    finally:
        tel.close()
    with InfluxDBClient(url=f"http://127.0.0.1:{listener_port}", token="x", org="o") as client, \
            client.write_api(write_options=WriteOptions(batch_size=5_000, flush_interval=1_000)) as batching:
        rows.append(("influxdb-client batching `write` (`WriteOptions(batch_size=5_000)`)",
                     *_timed_calls(lambda p: batching.write(bucket=db, record=p), _points(CALLER_POINTS))))
    with InfluxDBClient(url=influx_v2_url, token="x", org="o") as client:
        sync = client.write_api(write_options=SYNCHRONOUS)
        rows.append(("influxdb-client synchronous `write` (one HTTP request per point)",
                     *_timed_calls(lambda p: sync.write(bucket=db, record=p), _points(SYNC_POINTS))))
    return rows


def run() -> str:
    from tests.influx_gateway import InfluxV2Gateway

    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp) / "redis", appendonly=True).start()
        influx = InfluxServer(Path(tmp) / "influxd").start()
        try:
            influx.create_database("ingest")
            rates: dict[tuple[str, int], float] = {}
            for clients in CLIENTS:
                rates[("influxd", clients)] = lines_per_s(influx.port, "/write?db=ingest&precision=ns",
                                                          clients)
            with listening(redis_server.url) as port:
                for clients in CLIENTS:
                    rates[("listen", clients)] = lines_per_s(port, "/write?precision=ns", clients)
            with listening(redis_server.url, processes=2) as port:
                rates[("listen x2", 4)] = lines_per_s(port, "/write?precision=ns", 4)
                gateway = InfluxV2Gateway(influx.url).start()
                try:
                    costs = caller_costs(port, gateway.url, "ingest")
                finally:
                    gateway.stop()
        finally:
            influx.stop()
            redis_server.stop()
    lines = [
        "## Drop-in ingestion: `telemetry listen` against influxd's `/write`, "
        "`tel.write` against influxdb-client",
        "",
        f"Bodies of {LINES_PER_BODY:,} lines ({USERS:,} series each, ns timestamps), posted back to back "
        f"for {SECONDS_PER_RUN:g} s per row over keep-alive connections. A 204 from the listener means the "
        "lines are in Redis (appendonly); from influxd, in its WAL.",
        "",
        "| clients | `telemetry listen` lines/s | influxd `/write` lines/s | listen / influxd |",
        "|---:|---:|---:|---:|",
    ]
    for clients in CLIENTS:
        ours, reference = rates[("listen", clients)], rates[("influxd", clients)]
        lines.append(f"| {clients} | {ours:,.0f} | {reference:,.0f} | {ours / reference:.2f} |")
    both = rates[("listen x2", 4)]
    lines.append(f"| 4, `--processes 2` | {both:,.0f} | {rates[('influxd', 4)]:,.0f} | "
                 f"{both / rates[('influxd', 4)]:.2f} |")
    one = rates[("listen", 1)]
    lines += ["", f"Target ≥ {TARGET_LINES_S:,} lines/s on one core (one client): "
              f"{'met' if one >= TARGET_LINES_S else 'not met'} ({one:,.0f}).",
              "Target at least influxd's own rate: " + "; ".join(
                  f"{clients} client{'s' * (clients > 1)} "
                  f"{'met' if rates[('listen', clients)] >= rates[('influxd', clients)] else 'not met'}"
                  for clients in CLIENTS) + ".", "",
              "The caller's cost per point, the same `Point` objects:", "",
              "| write call | median µs | p99 µs | caller CPU µs/point |", "|---|---:|---:|---:|"]
    for name, median, p99, cpu in costs:
        lines.append(f"| {name} | {median:.1f} | {p99:.1f} | {cpu:.1f} |")
    return "\n".join(lines) + "\n"
