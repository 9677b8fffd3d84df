"""Every InfluxQL panel query, run against a real InfluxDB 1.6 holding data that went through the whole
pipeline: producer library -> redis-server -> worker (``--drain``) -> InfluxDB v1 ``/write``.

The workload is deterministic; the expected values are computed here from the raw events, so a
query that averages per-window means, forgets to divide, or reads a field the worker does not
write gives a wrong number or no rows.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.core.config import WorkerConfig
from consumer.dashboards.build import ALERTS_INFLUXQL_FILE
from consumer.dashboards.fluxcheck import interpolate
from consumer.dashboards.validate import InfluxQLTarget, dashboard_queries, validate
from consumer.pipeline.worker import Worker
from producers import Telemetry
from tests.services import InfluxServer, RedisServer

COMMITTED = Path(__file__).resolve().parents[1] / "grafana_dashboards"
PREFIX = "dash"
WINDOW_S = 10
BUCKET_S = 60          # what $__interval becomes in these tests
BOTS = ("elena", "marcus")
USERS = ("u1", "u2", "u3", "u4", "u5")
VECTORS = ("content", "emotion", "semantic")
QUERY_TYPES = ("content_semantic", "emotional_context", "hybrid_multi")


@dataclass(frozen=True)
class Check:
    """One attachment check as the bot recorded it."""

    ts: float
    bot: str
    user: str
    risk: str
    intensity: float
    frequency: float
    dependency: int
    days: int
    intervention: bool


def _risk(frequency: float, intensity: float, dependency: int, days: int) -> str:
    """The seed's scoring, for a realistic distribution of risk levels."""
    score = (3 if frequency >= 40 else 2 if frequency >= 20 else 1 if frequency >= 10 else 0)
    score += (intensity >= 0.75) + (2 if dependency >= 3 else 1 if dependency > 0 else 0) + (days >= 14)
    return "HIGH" if score >= 5 else "MEDIUM" if score >= 3 else "LOW"


def _workload(t0: float) -> tuple[list[Check], list[dict[str, Any]], list[tuple[float, str, int, int]]]:
    """Uneven bursts: some windows hold one check, others many, so weighting matters."""
    checks, classifications, detections = [], [], []
    for i in range(300):
        ts = t0 + (i * 7 % 600) + (0.5 if i % 5 else 0.25) * (i % 3)
        if i % 11 == 0:
            ts = t0 + 300.5           # a burst into one window
        frequency = float((i * 13) % 50)
        intensity = round(((i * 37) % 100) / 100, 2)
        dependency = (i * 7) % 5
        days = (i * 3) % 31
        risk = _risk(frequency, intensity, dependency, days)
        checks.append(Check(ts, BOTS[i % 2], USERS[i % 5], risk, intensity, frequency, dependency, days,
                            (risk == "HIGH" and i % 2 == 0) or (risk == "MEDIUM" and i % 7 == 0)))
        classifications.append({"ts": ts, "bot": BOTS[i % 2], "vector": VECTORS[i % 3],
                                "query_type": QUERY_TYPES[(i // 2) % 3], "confidence": ((i * 29) % 100) / 100,
                                "accurate": i % 4 != 0, "quality": ((i * 17) % 100) / 100})
        detections.append((ts, BOTS[i % 2], 1, 1 if i % 3 == 0 else 0))
    return checks, classifications, detections


def _emit(tel: Telemetry, checks: list[Check], classifications: list[dict[str, Any]],
          detections: list[tuple[float, str, int, int]]) -> None:
    for c in checks:
        tel.emit("attachment_monitoring",
                 {"emotional_intensity": c.intensity, "interaction_frequency": c.frequency,
                  "dependency_count": c.dependency, "consecutive_days": c.days,
                  "intervention_provided": c.intervention},
                 tags={"bot_name": c.bot, "user_id": c.user, "risk_level": c.risk}, ts=c.ts)
    for k in classifications:
        tel.emit("vector_classification",
                 {"confidence": k["confidence"], "content_weight": 0.3, "emotion_weight": 0.3,
                  "semantic_weight": 0.4, "emotional_indicators_count": 2, "semantic_indicators_count": 1,
                  "content_indicators_count": 3, "query_length": 40, "results_quality": k["quality"],
                  "classification_accurate": k["accurate"]},
                 tags={"bot_name": k["bot"], "query_type": k["query_type"], "primary_vector": k["vector"],
                       "strategy": "balanced"}, ts=k["ts"])
    for n, (ts, bot, runs, moments) in enumerate(detections):
        tags = {"bot_name": bot, "component": "CharacterLearningMomentDetector"}
        tel.count("learning_moment_detector_telemetry", "detect_count", runs, tags=tags, ts=ts)
        if moments:
            tel.count("learning_moment_detector_telemetry", "moments_detected", moments, tags=tags, ts=ts)
        _emit_components(tel, n, ts, bot)


def _emit_components(tel: Telemetry, n: int, ts: float, bot: str) -> None:
    """One event of every other measurement now and then, so every panel has data."""
    if n % 10:
        return
    emotions = {e: ((n * 7 + i * 11) % 100) / 100 for i, e in enumerate(
        ("joy", "anger", "sadness", "fear", "love", "trust", "optimism", "pessimism", "anticipation",
         "surprise", "disgust", "emotional_intensity"))}
    state = "joy" if n % 20 else "trust"
    tel.emit("character_emotional_evolution", {**emotions, "emotional_valence": 0.2},
             tags={"bot_name": bot, "user_id": USERS[n % 5], "dominant_state": state}, ts=ts)
    simple = {
        "engagement_engine_telemetry": ("analyze_engagement_potential_count",
                                        "analyze_conversation_engagement_count",
                                        "interventions_generated", "total_recommendations"),
        "character_graph_builder_telemetry": ("build_count", "facts_extracted", "graph_updates",
                                              "query_count", "results_found"),
        "character_insight_storage_telemetry": ("store_count", "retrieve_count", "insights_stored"),
        "self_knowledge_extractor_telemetry": ("extract_count", "facts_extracted", "self_knowledge_stored"),
        "temporal_evolution_telemetry": ("analyze_count", "evolutions_detected"),
        "episodic_intelligence_telemetry": ("store_count", "retrieve_count", "episodes_stored"),
    }
    for measurement, fields in simple.items():
        for field in fields:
            tel.count(measurement, field, 1 + n % 3, tags={"bot_name": bot, "component": measurement}, ts=ts)
    tel.emit("trust_recovery_telemetry", {"detect_trust_decline_count": 1, "activate_recovery_count": 1,
                                          "assess_recovery_progress_count": 1, "declines_detected": 1,
                                          "recoveries_activated": 1, "trust_value": 0.5},
             tags={"bot_name": bot, "component": "TrustRecoverySystem", "severity": "minor"}, ts=ts)


@dataclass
class Loaded:
    influx: InfluxServer
    db: str
    t0: float
    checks: list[Check]
    classifications: list[dict[str, Any]]
    detections: list[tuple[float, str, int, int]]
    time_filter: str

    def run(self, query: str, **values: str) -> list[dict[str, Any]]:
        text = query.replace("$timeFilter", self.time_filter).replace("$__interval", f"{BUCKET_S}s")
        return self.influx.query(interpolate(text, values), db=self.db, epoch="s")


@pytest.fixture
def loaded(redis_server: RedisServer, influx: tuple[InfluxServer, str]) -> Iterator[Loaded]:
    server, db = influx
    now = time.time()
    t0 = math.floor((now - 1800) / 3600) * 3600 + 600   # past, hour-aligned + 10 min: minute buckets align
    if t0 + 700 > now - 120:
        t0 -= 3600
    checks, classifications, detections = _workload(t0)
    tel = Telemetry(redis_url=redis_server.url, prefix=PREFIX, shards=2)
    try:
        _emit(tel, checks, classifications, detections)
        assert tel.flush(timeout=30)
    finally:
        tel.close()
    config = WorkerConfig(redis_url=redis_server.url, stream_prefix=PREFIX, shards=2, window_s=WINDOW_S,
                          grace_s=0.0, allowed_lateness_s=7200.0, max_future_s=60.0, influx_url=server.url,
                          influx_api="v1", influx_db=db, consumer="dash-w1", block_ms=50, drain=True)
    assert Worker(config).run() == 0
    # Up to now: the worker stamps its own telemetry_pipeline points with the current window.
    until = max(int(t0) + 3600, int(time.time()) + 120)
    time_filter = f"time >= {int(t0) - 60}s AND time <= {until}s"
    yield Loaded(server, db, t0, checks, classifications, detections, time_filter)


def _panel_query(file: str, title: str, ref_id: str = "A") -> str:
    document = json.loads((COMMITTED / file).read_text())
    panel = next(p for p in document["panels"] if p.get("title") == title)
    return str(next(t for t in panel["targets"] if t["refId"] == ref_id)["query"])


LEARNING = "learning_system_telemetry_influxql.json"
VECTOR = "vector_classification_intelligence_influxql.json"


def test_every_influxql_query_runs_and_finds_data(loaded: Loaded) -> None:
    empty = []
    count = 0
    for path in sorted(COMMITTED.glob("*_influxql.json")):
        for query in dashboard_queries(path):
            rows = loaded.run(query.text)   # raises on any InfluxDB error
            count += 1
            if not rows:
                empty.append(query.where)
    assert count > 60
    assert empty == []


def test_interventions_stat_is_the_number_of_true_emitted(loaded: Loaded) -> None:
    query = _panel_query(LEARNING, "Interventions provided")
    [row] = loaded.run(query)
    assert row["interventions"] == sum(c.intervention for c in loaded.checks) > 0
    [row] = loaded.run(query, bot_name="elena")
    assert row["interventions"] == sum(c.intervention for c in loaded.checks if c.bot == "elena")
    rate = loaded.run(_panel_query(LEARNING, "Intervention rate"))[0]["intervention_rate"]
    assert rate == pytest.approx(sum(c.intervention for c in loaded.checks) / len(loaded.checks), rel=1e-12)


def test_risk_distribution_counts_checks(loaded: Loaded) -> None:
    rows = loaded.run(_panel_query(LEARNING, "Risk level distribution"))
    expected: dict[str, int] = defaultdict(int)
    for c in loaded.checks:
        expected[c.risk] += 1
    assert {r["risk_level"]: r["checks"] for r in rows} == expected
    assert set(expected) == {"LOW", "MEDIUM", "HIGH"}


def test_accuracy_is_accurate_over_total(loaded: Loaded) -> None:
    [row] = loaded.run(_panel_query(VECTOR, "Classification accuracy"))
    expected = sum(k["accurate"] for k in loaded.classifications) / len(loaded.classifications)
    assert row["accuracy"] == pytest.approx(expected, rel=1e-12)
    assert 0 < expected < 1


def test_weighted_mean_equals_the_mean_of_the_raw_values(loaded: Loaded) -> None:
    rows = loaded.run(_panel_query(LEARNING, "Emotional intensity by risk level"))
    sums: dict[tuple[str, int], list[float]] = defaultdict(list)
    for c in loaded.checks:
        sums[(c.risk, int(c.ts // BUCKET_S * BUCKET_S))].append(c.intensity)
    expected = {key: sum(v) / len(v) for key, v in sums.items()}
    got = {(r["risk_level"], r["time"]): r["emotional_intensity"] for r in rows}
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(expected[k], rel=1e-9) for k in expected)
    # The naive mean of the per-window means differs somewhere: the weighting is what is tested.
    naive = loaded.run(
        "SELECT mean(\"emotional_intensity\") AS m FROM \"attachment_monitoring\" WHERE $timeFilter "
        "GROUP BY time($__interval), \"risk_level\" fill(none)")
    assert any(abs(r["m"] - expected[(r["risk_level"], r["time"])]) > 1e-6 for r in naive)


def test_learning_efficiency_and_consecutive_days(loaded: Loaded) -> None:
    query = _panel_query(LEARNING, "Learning efficiency").replace("$__interval", "3600s")
    rows = loaded.run(query)
    runs = sum(d[2] for d in loaded.detections)
    moments = sum(d[3] for d in loaded.detections)
    assert len(rows) == 1 and rows[0]["learning_efficiency"] == pytest.approx(moments / runs, rel=1e-12)
    rows = loaded.run(_panel_query(LEARNING, "Consecutive days streak"))
    streaks = {r["user_id"]: r["consecutive_days"] for r in rows}
    # Each series' window point holds its latest check; the panel takes the latest window of the
    # user. Several series (bots, risk levels) can share that window: any of their values is right.
    latest_window = {c.user: max(int(x.ts // WINDOW_S) for x in loaded.checks if x.user == c.user)
                     for c in loaded.checks}
    per_series: dict[tuple[str, str, str], Check] = {}
    for c in loaded.checks:   # emission order: a tie in time goes to the later-emitted check
        if int(c.ts // WINDOW_S) == latest_window[c.user]:
            key = (c.user, c.bot, c.risk)
            if key not in per_series or c.ts >= per_series[key].ts:
                per_series[key] = c
    assert streaks.keys() == set(USERS)
    for user, days in streaks.items():
        assert days in {c.days for key, c in per_series.items() if key[0] == user}


def test_validate_runs_influxql_against_the_server(loaded: Loaded, tmp_path: Path) -> None:
    target = InfluxQLTarget(loaded.influx.url, loaded.db)
    report = validate(COMMITTED, influx=target)
    assert report.problems == [] and not any("syntax only" in n for n in report.notes)
    broken = tmp_path / "dash"
    broken.mkdir()
    for path in COMMITTED.rglob("*"):
        if path.is_file():
            (broken / path.relative_to(COMMITTED)).parent.mkdir(parents=True, exist_ok=True)
            text = path.read_text()
            if path.name == VECTOR:
                text = re.sub(r'SELECT sum\(\\"event_count\\"\)', r'SELECT summ(\\"event_count\\")',
                              text, count=1)
            (broken / path.relative_to(COMMITTED)).write_text(text)
    problems = validate(broken, influx=target).problems
    assert len(problems) == 1 and "summ" in problems[0]


def test_feature_adoption_sides_divide_to_runs_per_message(loaded: Loaded) -> None:
    runs = loaded.run(_panel_query(LEARNING, "Feature adoption", "learning_moments_runs"))
    messages = loaded.run(_panel_query(LEARNING, "Feature adoption", "messages"))
    by_time = {r["time"]: r["messages"] for r in messages}
    ratios = {r["time"]: r["runs"] / by_time[r["time"]] for r in runs}   # what $A / $B computes
    expected_runs: dict[int, int] = defaultdict(int)
    expected_messages: dict[int, int] = defaultdict(int)
    for ts, _, count, _ in loaded.detections:
        expected_runs[int(ts // BUCKET_S * BUCKET_S)] += count
    for c in loaded.checks:
        expected_messages[int(c.ts // BUCKET_S * BUCKET_S)] += 1
    assert ratios == {t: expected_runs[t] / expected_messages[t] for t in expected_runs}


def test_influxql_alert_rules_compute_what_they_alert_on(loaded: Loaded) -> None:
    """The InfluxDB 1.x alert rules, run on pipeline data: the numbers their thresholds judge."""
    rules = yaml.safe_load((COMMITTED / ALERTS_INFLUXQL_FILE).read_text())["groups"][0]["rules"]
    queries = {rule["title"]: rule["data"][0]["model"]["query"] for rule in rules}
    high = loaded.run(queries["HIGH attachment risk checks per bot"])
    expected_high = {bot: sum(c.risk == "HIGH" and c.bot == bot for c in loaded.checks) for bot in BOTS}
    assert {row["bot_name"]: row["sum"] for row in high} == expected_high
    assert sum(expected_high.values()) > 0
    surge = loaded.run(queries["Attachment intervention surge"])
    expected_surge = {bot: sum(c.intervention and c.bot == bot for c in loaded.checks) for bot in BOTS}
    assert {row["bot_name"]: row["sum"] for row in surge} == expected_surge
    lag = loaded.run(queries["Telemetry pipeline lag"])
    assert lag and all(row["max"] >= 0 for row in lag)
    dead = loaded.run(queries["Telemetry dead letters rising"])
    assert dead and sum(row["sum"] for row in dead) == 0      # a clean workload: nothing dead-lettered
    silent = {title: query for title, query in queries.items() if title.startswith("No data from ")}
    assert len(silent) == 4
    for title, query in silent.items():
        rows = loaded.run(query)
        assert rows and rows[0]["count"] > 0, title          # data present: the silence alert stays quiet
