"""Redis memory per million buffered events: how big Redis must be to ride out an outage.

While the worker or InfluxDB is down, producers keep appending to the shard streams, and Redis
holds the backlog. This benchmark fills a private ``redis-server`` (from ``tests/services.py``)
with one million realistic events in real wire entries (``producers.wire``), at several batch
sizes, and reads ``INFO memory`` before and after. The producer packs up to
``batch_max_events`` (2,000) events per entry every ``flush_interval_ms`` (100 ms), so a quiet bot
sends small batches and a busy one large batches: both ends are measured.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

from producers.keys import shard_of_series, stream_key
from producers.wire import KIND_COUNT, KIND_EMIT, KIND_OBSERVE, WireEvent, encode_entry, encode_events
from tests.services import RedisServer

EVENTS = 1_000_000
BATCH_SIZES = (1, 10, 100, 2_000)
SHARDS = 4
PREFIX = "telemetry"
PIPELINE_ENTRIES = 1_000
_BOTS = ("elena", "marcus", "jake", "ryan", "dream", "aethys", "gabriel", "sophia")
_RISK = ("LOW", "LOW", "LOW", "MEDIUM", "HIGH")
_QUERY_TYPES = ("content_semantic", "emotional_context", "semantic_conceptual", "hybrid_multi",
                "temporal_chronological")
_VECTORS = ("content", "emotion", "semantic")
_COMPONENTS = (("engagement_engine_telemetry", "ProactiveConversationEngagementEngine",
                "analyze_engagement_potential_count"),
               ("learning_moment_detector_telemetry", "CharacterLearningMomentDetector", "detect_count"),
               ("character_insight_storage_telemetry", "CharacterInsightStorage", "store_count"))


def _event(rng: random.Random, ts: float) -> WireEvent:
    """One event as bot code records it: the seed's measurements, tags and fields."""
    bot = rng.choice(_BOTS)
    user = f"u{rng.randrange(5_000)}"
    roll = rng.random()
    if roll < 0.35:
        return (KIND_EMIT, "attachment_monitoring", ts,
                {"user_id": user, "bot_name": bot, "risk_level": rng.choice(_RISK)},
                {"emotional_intensity": rng.random(), "interaction_frequency": rng.uniform(0, 50),
                 "dependency_count": rng.randrange(15), "consecutive_days": rng.randrange(31),
                 "intervention_provided": rng.random() < 0.1})
    if roll < 0.65:
        return (KIND_EMIT, "vector_classification", ts,
                {"bot_name": bot, "query_type": rng.choice(_QUERY_TYPES),
                 "primary_vector": rng.choice(_VECTORS), "strategy": "adaptive"},
                {"confidence": rng.random(), "content_weight": rng.random(),
                 "emotion_weight": rng.random(), "semantic_weight": rng.random(),
                 "query_length": rng.randrange(400), "results_quality": rng.random(),
                 "classification_accurate": rng.random() < 0.8})
    if roll < 0.9:
        measurement, component, field = rng.choice(_COMPONENTS)
        return (KIND_COUNT, measurement, ts, {"bot_name": bot, "component": component}, {field: 1})
    return (KIND_OBSERVE, "vector_classification", ts, {"bot_name": bot}, {"search_ms": rng.uniform(2, 80)})


def _fill(client: Any, batch_size: int, rng: random.Random) -> tuple[int, int, float]:
    """XADD ``EVENTS`` events in entries of ``batch_size``; return (entries, payload bytes, seconds)."""
    pending: dict[int, list[WireEvent]] = {shard: [] for shard in range(SHARDS)}
    sequences = dict.fromkeys(range(SHARDS), 0)
    pipe = client.pipeline(transaction=False)
    totals = {"entries": 0, "payload": 0}

    def send(shard: int) -> None:
        payload = encode_events(pending[shard])
        sequences[shard] += 1
        fields = encode_entry("0123456789abcdef", sequences[shard], payload, len(pending[shard]))
        pipe.xadd(stream_key(PREFIX, shard), fields)
        totals["entries"] += 1
        totals["payload"] += len(payload)
        pending[shard] = []
        if len(pipe) >= PIPELINE_ENTRIES:
            pipe.execute()

    start = time.perf_counter()
    ts = time.time()
    for n in range(EVENTS):
        event = _event(rng, ts + n * 0.001)
        shard = shard_of_series(event[1], event[3], SHARDS)
        pending[shard].append(event)
        if len(pending[shard]) >= batch_size:
            send(shard)
    for shard in range(SHARDS):
        if pending[shard]:
            send(shard)
    pipe.execute()
    return totals["entries"], totals["payload"], time.perf_counter() - start


def _used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def run() -> str:
    """Fill a private redis-server at each batch size; a Markdown section with the figures."""
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory), appendonly=False).start()
        try:
            client = server.client()
            version = client.info("server")["redis_version"]
            for batch_size in BATCH_SIZES:
                client.flushall()
                before = _used_memory(client)
                entries, payload, seconds = _fill(client, batch_size, random.Random(batch_size))
                used = _used_memory(client) - before
                rows.append((batch_size, entries, payload, used, seconds))
            client.flushall()
            client.close()
        finally:
            server.stop()
    lines = [
        "## Redis memory per million buffered events",
        "",
        f"{EVENTS:,} realistic events (the seed's measurements: attachment checks, vector "
        f"classification, component counts, timings; 8 bots, 5,000 users) XADDed as real wire entries "
        f"to {SHARDS} shard streams of a private redis-server {version}; memory is the growth of "
        "`INFO memory` `used_memory`. The producer batches up to 2,000 events per entry every 100 ms: "
        "a quiet bot sends small batches, a busy one large batches.",
        "",
        "| events per entry | entries | msgpack payload | Redis memory | bytes / event "
        "| MiB per 1M events | fill rate (encode + XADD) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch_size, entries, payload, used, seconds in rows:
        lines.append(
            f"| {batch_size:,} | {entries:,} | {payload / 2**20:,.1f} MiB | {used / 2**20:,.1f} MiB "
            f"| {used / EVENTS:,.0f} | {used / 2**20 * 1_000_000 / EVENTS:,.0f} "
            f"| {EVENTS / seconds:,.0f} events/s |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
