"""The instrumented seed components: what they record, through the real producer and Redis."""

from __future__ import annotations

from typing import Any

import pytest

from examples import (
    AttachmentMonitor,
    LearningComponents,
    ProactiveConversationEngagementEngine,
    TrustRecoverySystem,
    UserActivity,
    score_risk,
)
from examples.attachment_monitor import risk_level
from producers import Telemetry
from producers.keys import stream_key
from producers.wire import decode_entry
from tests.services import RedisServer

PREFIX = "ex"
SHARDS = 2


@pytest.mark.parametrize(
    ("activity", "score"),
    [
        (UserActivity(5.0, 0.2, 0, 0, 0), 0),
        (UserActivity(10.0, 0.2, 0, 0, 0), 1),
        (UserActivity(20.0, 0.2, 0, 0, 0), 2),
        (UserActivity(40.0, 0.2, 0, 0, 0), 3),
        (UserActivity(39.9, 0.75, 0, 0, 0), 3),
        (UserActivity(0.0, 0.74, 1, 0, 13), 1),
        (UserActivity(0.0, 0.0, 3, 0, 14), 3),
        (UserActivity(45.0, 0.9, 5, 30, 30), 7),
    ],
)
def test_risk_score_follows_the_original_rules(activity: UserActivity, score: int) -> None:
    assert score_risk(activity) == score


def test_risk_levels() -> None:
    assert [risk_level(s) for s in range(8)] == [
        "LOW",
        "LOW",
        "LOW",
        "MEDIUM",
        "MEDIUM",
        "HIGH",
        "HIGH",
        "HIGH",
    ]


def _events(server: RedisServer) -> list[Any]:
    client = server.client()
    events: list[Any] = []
    for shard in range(SHARDS):
        for _id, fields in client.xrange(stream_key(PREFIX, shard)):
            events.extend(decode_entry(fields).events)
    return sorted(events, key=lambda e: (e[1], sorted(e[4])))


def test_components_record_one_line_per_event(redis_server: RedisServer) -> None:
    tel = Telemetry(redis_url=redis_server.url, prefix=PREFIX, shards=SHARDS)
    try:
        monitor = AttachmentMonitor(tel, bot_name="elena")
        assessment = monitor.check("u42", UserActivity(45.0, 0.82, 3, 6, 16))
        engine = ProactiveConversationEngagementEngine(tel, bot_name="elena")
        assert engine.analyze_conversation_engagement("u42", engagement=0.1) is True
        trust = TrustRecoverySystem(tel, bot_name="elena")
        assert trust.detect_trust_decline("u42", trust_value=0.2) == "severe"
        assert tel.flush(timeout=10)
    finally:
        tel.close()
    assert (assessment.score, assessment.risk_level, assessment.intervention_provided) == (7, "HIGH", True)
    events = _events(redis_server)
    summary = [(kind, name, tags, fields) for kind, name, _ts, tags, fields in events]
    assert summary == [
        (
            0,
            "attachment_monitoring",
            {"bot_name": "elena", "user_id": "u42", "risk_level": "HIGH"},
            {
                "emotional_intensity": 0.82,
                "interaction_frequency": 45.0,
                "dependency_count": 3,
                "consecutive_days": 6,
                "intervention_provided": True,
            },
        ),
        (
            1,
            "engagement_engine_telemetry",
            {"bot_name": "elena", "component": "ProactiveConversationEngagementEngine"},
            {"analyze_conversation_engagement_count": 1},
        ),
        (
            1,
            "engagement_engine_telemetry",
            {"bot_name": "elena", "component": "ProactiveConversationEngagementEngine"},
            {"interventions_generated": 1},
        ),
        (
            0,
            "trust_recovery_telemetry",
            {"bot_name": "elena", "component": "TrustRecoverySystem", "severity": "severe"},
            {"detect_trust_decline_count": 1, "trust_value": 0.2, "declines_detected": 1},
        ),
    ]


def test_learning_components_cover_every_learning_measurement(redis_server: RedisServer) -> None:
    from consumer.aggregation.catalogue import CATALOGUE, LEARNING_COMPONENT_MEASUREMENTS

    tel = Telemetry(redis_url=redis_server.url, prefix=PREFIX, shards=SHARDS)
    try:
        learning = LearningComponents(tel, bot_name="marcus")
        learning.learn_from_message("u1", facts=2, moments=1, insights=0)
        learning.recall("u1", results=4)
        learning.reflect(facts=1, evolutions=1)
        assert tel.flush(timeout=10)
    finally:
        tel.close()
    events = _events(redis_server)
    assert {e[1] for e in events} == set(LEARNING_COMPONENT_MEASUREMENTS)
    for _kind, measurement, _ts, tags, fields in events:
        assert tags["bot_name"] == "marcus" and tags["component"]
        (field,) = fields
        assert field in CATALOGUE[measurement].fields, (measurement, field)  # only catalogued counts
    totals: dict[tuple[str, str], int] = {}
    for _kind, measurement, _ts, _tags, fields in events:
        for field, value in fields.items():
            totals[(measurement, field)] = totals.get((measurement, field), 0) + value
    assert totals[("character_graph_builder_telemetry", "facts_extracted")] == 2
    assert totals[("character_graph_builder_telemetry", "results_found")] == 4
    assert totals[("learning_moment_detector_telemetry", "learning_opportunities")] == 1
    assert totals[("episodic_intelligence_telemetry", "retrieve_count")] == 1
    assert totals[("temporal_evolution_telemetry", "evolutions_detected")] == 1
