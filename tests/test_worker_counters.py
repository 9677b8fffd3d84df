"""Counters are added once per batch, not per event: the totals, the per-shard points of
``telemetry_pipeline`` and Prometheus ``/metrics`` must still count every event exactly."""

from __future__ import annotations

import time

from consumer.core.selftelemetry import MEASUREMENT
from consumer.pipeline.worker import Worker
from consumer.sinks import MemorySink
from producers.keys import shard_of_series, stream_key
from producers.wire import encode_entry, encode_events
from tests.services import RedisServer
from tests.test_worker import PREFIX, Producer, _config, _now_based

SHARDS = 2
BATCHES = 6
PER_BATCH = 40          # of which every 8th has a bad field name


def _metric(body: str, line_start: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(line_start)]
    assert len(values) == 1, line_start
    return values[0]


def test_batched_counts_are_exact_per_shard_in_totals_points_and_prometheus(
        redis_server: RedisServer) -> None:
    client = redis_server.client()
    producer = Producer(client, shards=SHARDS)
    t0 = _now_based(0)
    accepted = dict.fromkeys(range(SHARDS), 0)
    rejected = dict.fromkeys(range(SHARDS), 0)
    for batch in range(BATCHES):
        events = []
        for i in range(PER_BATCH):
            tags = {"user": f"u{(batch * PER_BATCH + i) % 13}"}
            bad = i % 8 == 0
            events.append((1, "c", t0 + 1 + i % 20, tags, {"bad name\n" if bad else "n": 1}))
            shard = shard_of_series("c", tags, SHARDS)
            if bad:
                rejected[shard] += 1
            else:
                accepted[shard] += 1
        producer.send(events)
    repeated = encode_entry("feedfeedfeedfeed", 3, encode_events([(1, "c", t0 + 2, {}, {"n": 1})]), 1)
    for _ in range(3):                                 # one batch applied, two duplicates
        client.xadd(stream_key(PREFIX, 0), repeated)  # type: ignore[arg-type]
    accepted[0] += 1
    assert all(accepted.values()) and all(rejected.values())

    sink = MemorySink()
    worker = Worker(_config(redis_server, shards=SHARDS), sink=sink)
    assert worker.run() == 0

    totals = worker.stats.totals
    assert totals["events_in"] == sum(accepted.values())
    assert totals["dead_letters"] == totals["dead_letters_invalid_name"] == sum(rejected.values())
    assert totals["duplicates"] == 2
    assert sum(int(p.fields["event_count"]) for p in sink.points("c")) == sum(accepted.values())

    points = worker.stats.collect(time.time() + 3600)   # what is left of the interval, per shard
    reported = [p for p in sink.points(MEASUREMENT)] + points
    for shard in range(SHARDS):
        mine = [p for p in reported if dict(p.tags)["shard"] == str(shard)]
        assert sum(int(p.fields["events_in"]) for p in mine) == accepted[shard]
        assert sum(int(p.fields["dead_letters_invalid_name"]) for p in mine) == rejected[shard]

    body = worker.metrics.render().decode()
    for shard in range(SHARDS):
        label = f'{{shard="{shard}"}}'
        assert _metric(body, f"telemetry_worker_events_in_total{label}") == accepted[shard]
        by_reason = f'telemetry_worker_dead_letters_by_reason_total{{reason="invalid_name",shard="{shard}"}}'
        assert _metric(body, by_reason) == rejected[shard]
    assert _metric(body, 'telemetry_worker_duplicates_total{shard="0"}') == 2
    client.close()


def test_a_forced_report_does_not_overwrite_the_previous_windows_point() -> None:
    """The end of a long ``--drain`` run reports the running window, not the one reported already."""
    from consumer.core.selftelemetry import SelfTelemetry

    stats = SelfTelemetry(worker="w1", window_s=10)
    assert not stats.due(1005.0)                      # the first window ends at 1010
    stats.count(0, "events_in", 3)
    assert stats.due(1011.0)
    [due] = stats.collect(1011.0)                     # the interval that ended: stamped 1000
    stats.count(0, "events_in", 2)
    [forced] = stats.collect(1015.0)                  # before the next is due: stamped 1010
    assert (due.time_ns, due.fields["events_in"]) == (1000 * 10**9, 3)
    assert (forced.time_ns, forced.fields["events_in"]) == (1010 * 10**9, 2)
