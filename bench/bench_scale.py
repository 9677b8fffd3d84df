"""End-to-end throughput with one and two workers, on one Redis and on a Redis Cluster.

What a user deciding how many workers to run wants to know: how fast a backlog goes from the
streams to InfluxDB. Each run starts private servers (``tests/services.py``,
``tests/cluster.py``), starts N worker processes (``python -m consumer``, v1 sink), waits until
the shards are spread over them, then XADDs a prepared backlog of realistic events (the seed's
measurements, 5,000 users, as a busy producer batches them) as fast as Redis takes it, and times
until every entry is acknowledged (covered by a checkpoint) and until InfluxDB holds every event
(the sum of ``event_count`` over all points equals the events sent). Encoding the backlog is not
timed; the producer's own cost is in the producer section.

On this shared two-core machine redis-server, influxd and the workers compete for the same
cores, so two workers cannot double one worker's rate here; the figures show the per-worker cost
and that nothing is lost or double counted, not the scaling a larger machine would show.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.bench_redis_memory import _event
from consumer.pipeline.lease import rendezvous_owner
from producers.keys import shard_of_series, stream_key
from producers.wire import WireEvent, encode_entry, encode_events
from tests import chaos_harness as ch
from tests.cluster import LocalCluster, caught_up, wait_running
from tests.services import InfluxServer, RedisServer

EVENTS = 100_000
SHARDS = 8
BATCH_EVENTS = 500
WINDOWS = 20
WINDOW_S = 10.0
PIPELINE_ENTRIES = 200
TIMEOUT_S = 120.0
SHORT_READ = "4"          # entries per shard per read: 8 shards x 4 x 500 = 16,000 events per iteration
LEASE_LOSS_MARKS = ("FENCED", "lease on shard")

Entry = tuple[str, dict[bytes, bytes]]


def _backlog(seed: int) -> list[Entry]:
    """``EVENTS`` events over ``WINDOWS`` recent windows, encoded as wire entries per shard."""
    rng = random.Random(seed)
    start = ch.first_window_for(time.time(), WINDOW_S, WINDOWS)
    events = sorted((_event(rng, start + rng.uniform(0.1, WINDOWS * WINDOW_S - 0.1)) for _ in range(EVENTS)),
                    key=lambda e: e[2])
    by_shard: dict[int, list[WireEvent]] = {}
    for event in events:
        by_shard.setdefault(shard_of_series(event[1], event[3], SHARDS), []).append(event)
    entries: list[Entry] = []
    for shard, shard_events in sorted(by_shard.items()):
        for number, begin in enumerate(range(0, len(shard_events), BATCH_EVENTS), start=1):
            batch = shard_events[begin:begin + BATCH_EVENTS]
            entries.append((stream_key(ch.PREFIX, shard),
                            encode_entry("be4c4be4c4be4c4b", number, encode_events(batch), len(batch))))
    return entries


def _fill(client: Any, entries: Sequence[Entry]) -> None:
    for begin in range(0, len(entries), PIPELINE_ENTRIES):
        pipe = client.pipeline(transaction=False)
        for stream, fields in entries[begin:begin + PIPELINE_ENTRIES]:
            pipe.xadd(stream, fields)
        pipe.execute()


def _written(influx: InfluxServer, db: str) -> tuple[int, int]:
    """(sum of event_count, number of points) over every data measurement."""
    events = points = 0
    for row in influx.query('SELECT sum("event_count"), count("event_count") FROM /.*/', db=db):
        if row["_measurement"] != ch.SELF_MEASUREMENT:
            events += int(row["sum"] or 0)
            points += int(row["count"] or 0)
    return events, points


def _lease_losses(procs: Sequence[ch.WorkerProcess]) -> int:
    """Leases a worker found lapsed (renewal refused or checkpoint fenced), from the worker logs."""
    lines = 0
    for proc in procs:
        text = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
        lines += sum(1 for line in text.splitlines() if any(mark in line for mark in LEASE_LOSS_MARKS))
    return lines


def _run(label: str, redis_url: str, client: Any, influx: InfluxServer, workers: int,
         entries: Sequence[Entry], tmp: Path, read_count: str | None) -> str:
    db = f"scale_{len(list(tmp.iterdir()))}"
    influx.create_database(db)
    env = ch.worker_env(redis_url, influx.url, db, TELEMETRY_SHARDS=str(SHARDS))
    if read_count:
        env["TELEMETRY_READ_COUNT"] = read_count
    reads = f"{read_count or 500} entries"
    names = [f"bench-{index}" for index in range(workers)]
    procs = [ch.WorkerProcess({**env, "TELEMETRY_CONSUMER": name}, tmp / f"{db}-{name}.log").start()
             for name in names]
    try:
        owners = [rendezvous_owner(shard, sorted(names)) for shard in range(SHARDS)]
        wait_running(lambda: ch.lease_owners(client, SHARDS) == owners, "the shards to spread", procs,
                     TIMEOUT_S)
        started = time.perf_counter()
        _fill(client, entries)
        filled = time.perf_counter() - started
        wait_running(lambda: caught_up(client, SHARDS), "every entry acknowledged", procs, TIMEOUT_S)
        acked = time.perf_counter() - started
        wait_running(lambda: _written(influx, db)[0] >= EVENTS, "every event in InfluxDB", procs, TIMEOUT_S)
        done = time.perf_counter() - started
    except AssertionError as exc:
        first = str(exc).splitlines()[-1][:160].replace("|", "/")
        return f"| {label} | {workers} | {reads} | – | – | – | – | – | – | did not run: {first} |"
    finally:
        for proc in procs:
            if proc.alive():
                proc.terminate()
    events, points = _written(influx, db)
    note = "exact" if events == EVENTS else f"**{events:,} events written, expected {EVENTS:,}**"
    return (f"| {label} | {workers} | {reads} | {filled:.2f} | {acked:.2f} | {done:.2f} | "
            f"{EVENTS / done:,.0f} | {points:,} | {_lease_losses(procs)} | {note} |")


def run() -> str:
    entries = _backlog(20251125)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        influx = InfluxServer(tmp / "influxd").start()
        try:
            for workers, read_count in ((1, None), (2, None), (1, SHORT_READ), (2, SHORT_READ)):
                server = RedisServer(tmp / f"redis{len(rows)}", appendonly=False).start()
                client = server.client()
                try:
                    rows.append(_run("one redis-server", server.url, client, influx, workers, entries, tmp,
                                     read_count))
                finally:
                    client.close()
                    server.kill()
            for workers in (1, 2):
                cluster = LocalCluster(tmp / f"cluster{workers}", masters=3).start()
                client = cluster.client()
                try:
                    rows.append(_run("Redis Cluster, 3 masters", cluster.url, client, influx, workers,
                                     entries, tmp, SHORT_READ))
                finally:
                    client.close()
                    cluster.stop()
        finally:
            influx.kill()
    header = (
        "## Scale-out: end-to-end throughput with one and two workers, one Redis and a cluster\n\n"
        f"A backlog of {EVENTS:,} realistic events ({len(entries):,} stream entries of up to {BATCH_EVENTS} "
        f"events, {SHARDS} shards, {WINDOWS} windows of {WINDOW_S:.0f} s in the recent past) XADDed once the "
        "workers own their shards; timed from the first XADD. *acknowledged*: every entry covered by a "
        "checkpoint; *in InfluxDB*: the sum of `event_count` over all points equals the events sent "
        "(private influxd 1.x, v1 `/write`); *lease losses*: leases a worker found lapsed (from its log). "
        "Default settings (lease 10 s) except *read*: `TELEMETRY_READ_COUNT`, entries per shard per "
        f"read (default 500; {SHORT_READ} keeps one loop iteration at about "
        f"{SHARDS * int(SHORT_READ) * BATCH_EVENTS:,} events). redis-server without persistence. "
        "redis-server, influxd and the workers share the same two cores (and other jobs), so a second "
        "worker cannot add much here: compare rows for per-worker cost, lease behaviour and exact "
        "totals, not for the scaling of a larger machine.\n\n"
        "| Redis | workers | read | fill s | acknowledged s | in InfluxDB s | events/s end-to-end | points | "
        "lease losses | result |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
    )
    return header + "\n" + "\n".join(rows) + "\n"
