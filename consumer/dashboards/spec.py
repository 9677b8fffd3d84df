"""The dashboards, as one spec: every panel of every dashboard, in both query languages.

Read this as a table. Field names come from the measurement catalogue (``consumer/aggregation/catalogue.py``)
and follow the aggregation semantics of ``docs/semantics.md``; ``queries.py`` explains how each
metric re-aggregates window points. ``tests/test_dashboards_spec.py`` checks every field named here
exists in the catalogue (or in the worker's own measurement).
"""

from __future__ import annotations

from typing import Final

from consumer.aggregation.catalogue import LEARNING_COMPONENT_MEASUREMENTS, PIPELINE_MEASUREMENT
from consumer.dashboards.model import (
    Dashboard,
    Expression,
    Link,
    Panel,
    Row,
    Steps,
    Target,
    Variable,
)
from consumer.dashboards.queries import (
    EVENT_COUNT,
    CountBelow,
    Last,
    LastSeen,
    Peak,
    PrefixTotal,
    Ratio,
    Total,
    WeightedMean,
)

ATTACHMENT: Final = "attachment_monitoring"
VECTOR: Final = "vector_classification"
EMOTION: Final = "character_emotional_evolution"
ENGAGEMENT: Final = "engagement_engine_telemetry"
TRUST: Final = "trust_recovery_telemetry"

LEARNING_UID: Final = "learning-telemetry"
USER_UID: Final = "learning-telemetry-user"
USER_SLUG: Final = "user-detail"

ADOPTION_SLO: Final = 0.8
"""Feature adoption target: share of user messages on which each component should run."""

MESSAGES: Final = (ATTACHMENT, EVENT_COUNT)
"""What counts as one user message: one attachment-risk check is made per message."""

# (series name, measurement, field counting one run of the component)
ADOPTION: Final = (
    ("engagement_engine", ENGAGEMENT, "analyze_conversation_engagement_count"),
    ("trust_recovery", TRUST, "detect_trust_decline_count"),
    ("graph_builder", "character_graph_builder_telemetry", "build_count"),
    ("graph_intelligence", "character_graph_builder_telemetry", "query_count"),
    ("insight_storage", "character_insight_storage_telemetry", "store_count"),
    ("learning_moments", "learning_moment_detector_telemetry", "detect_count"),
    ("self_knowledge", "self_knowledge_extractor_telemetry", "extract_count"),
    ("temporal_evolution", "temporal_evolution_telemetry", "analyze_count"),
    ("episodic_memory", "episodic_intelligence_telemetry", "store_count"),
)

# The seven learning components (CharacterGraphKnowledgeIntelligence shares the builder's measurement).
LEARNING_PANELS: Final = (
    ("Graph knowledge builder", "character_graph_builder_telemetry",
     ("build_count", "facts_extracted", "graph_updates")),
    ("Graph knowledge intelligence", "character_graph_builder_telemetry", ("query_count", "results_found")),
    ("Insight storage", "character_insight_storage_telemetry",
     ("store_count", "retrieve_count", "insights_stored")),
    ("Learning moment detector", "learning_moment_detector_telemetry",
     ("detect_count", "moments_detected", "learning_opportunities")),
    ("Self-knowledge extractor", "self_knowledge_extractor_telemetry",
     ("extract_count", "facts_extracted", "self_knowledge_stored")),
    ("Temporal evolution analyzer", "temporal_evolution_telemetry", ("analyze_count", "evolutions_detected")),
    ("Episodic intelligence", "episodic_intelligence_telemetry",
     ("store_count", "retrieve_count", "episodes_stored")),
)
assert {m for _, m, _ in LEARNING_PANELS} == set(LEARNING_COMPONENT_MEASUREMENTS)

EMOTIONS: Final = ("joy", "love", "trust", "optimism", "anticipation", "surprise",
                   "anger", "sadness", "fear", "pessimism", "disgust")
STRESS_LIKE: Final = frozenset({"anger", "sadness", "fear", "pessimism", "disgust"})

BOT: Final = ("bot_name",)
BOT_USER: Final = ("bot_name", "user_id")

RISK_STEPS: Final[Steps] = ((None, "green"), (5, "yellow"), (10, "red"))
STREAK_STEPS: Final[Steps] = ((None, "green"), (7, "yellow"), (14, "orange"), (21, "red"))
GOOD_HIGH: Final[Steps] = ((None, "red"), (0.5, "yellow"), (0.75, "green"))
GOOD_LOW: Final[Steps] = ((None, "green"), (0.25, "yellow"), (0.5, "red"))

TO_USER: Final = Link("User detail", USER_UID, USER_SLUG,
                      (("bot_name", "${bot_name}"), ("user_id", "${__field.labels.user_id}")))
TO_RISK: Final = Link("Users at this risk level", USER_UID, USER_SLUG,
                      (("bot_name", "${bot_name}"), ("risk_level", "${__field.labels.risk_level}")))


def _one(metric: Total | WeightedMean | Ratio | Last | Peak | PrefixTotal | CountBelow | LastSeen,
         ) -> tuple[Target, ...]:
    return (Target("A", metric),)


def _attachment_panels() -> tuple[Panel | Row, ...]:
    return (
        Row("Attachment monitor"),
        Panel("Risk level distribution", "piechart",
              _one(Total(ATTACHMENT, (EVENT_COUNT,), ("risk_level",), BOT_USER, "range", "checks")),
              "Attachment-risk checks per risk level over the range. Click a slice for its users.",
              links=(TO_RISK,), width=8),
        Panel("Interventions provided", "stat",
              _one(Total(ATTACHMENT, ("intervention_provided",), (), BOT_USER, "range", "interventions")),
              "Checks that provided an intervention (count of true) over the range.",
              steps=RISK_STEPS, width=4),
        Panel("Intervention rate", "stat",
              _one(Ratio(ATTACHMENT, ("intervention_provided", EVENT_COUNT), (), BOT_USER, "range",
                         "intervention_rate")),
              "Interventions ÷ checks over the range.", unit="percentunit", decimals=1, width=4),
        Panel("Consecutive days streak", "bargauge",
              _one(Last(ATTACHMENT, ("consecutive_days",), ("user_id",), BOT_USER, "range",
                        "consecutive_days")),
              "Latest streak of active days per user. Click a bar for the user's detail.",
              unit="d", minimum=0, maximum=30, steps=STREAK_STEPS, links=(TO_USER,), width=8),
        Panel("Emotional intensity by risk level", "timeseries",
              _one(WeightedMean(ATTACHMENT, ("emotional_intensity",), ("risk_level",), BOT_USER)),
              "Mean emotional intensity per risk level, weighted by checks per window.",
              unit="percentunit", minimum=0, maximum=1),
        Panel("Interaction frequency per bot", "timeseries",
              _one(WeightedMean(ATTACHMENT, ("interaction_frequency",), ("bot_name",), BOT_USER)),
              "Mean messages per day over 7 days. Per user: open a user from the streak panel.",
              unit="short", minimum=0),
        Panel("Users by checks", "table",
              _one(Total(ATTACHMENT, (EVENT_COUNT,), ("user_id", "risk_level"), BOT_USER, "range", "checks")),
              "Checks per user and risk level over the range. Click a user for the detail view.",
              links=(TO_USER,), width=24, table_format=True),
    )


def _component_panels() -> tuple[Panel | Row, ...]:
    engagement = ("analyze_engagement_potential_count", "analyze_conversation_engagement_count",
                  "interventions_generated", "total_recommendations")
    trust = ("detect_trust_decline_count", "activate_recovery_count", "assess_recovery_progress_count",
             "declines_detected", "recoveries_activated")
    items: list[Panel | Row] = [
        Row("Engagement engine and trust recovery"),
        Panel("Engagement engine activity", "timeseries", _one(Total(ENGAGEMENT, engagement, (), BOT)),
              "ProactiveConversationEngagementEngine calls and results per interval."),
        Panel("Trust recovery activity", "timeseries", _one(Total(TRUST, trust, (), BOT)),
              "TrustRecoverySystem calls and results per interval."),
        Panel("Trust value by severity", "timeseries",
              _one(WeightedMean(TRUST, ("trust_value",), ("severity",), BOT)),
              "Mean trust value per decline severity, weighted by events per window.",
              unit="percentunit", minimum=0, maximum=1),
        Panel("Learning efficiency", "timeseries",
              _one(Ratio("learning_moment_detector_telemetry", ("moments_detected", "detect_count"), (), BOT,
                         alias="learning_efficiency")),
              "Learning moments detected ÷ detection runs.", unit="percentunit", minimum=0),
        Row("Learning components"),
    ]
    for title, measurement, fields in LEARNING_PANELS:
        items.append(Panel(title, "timeseries", _one(Total(measurement, fields, (), BOT)),
                           f"{title}: calls and results per interval.", width=8))
    items.append(_adoption_panel())
    return tuple(items)


def _adoption_panel() -> Panel:
    targets = [Target("messages", Total(MESSAGES[0], (MESSAGES[1],), (), BOT, alias="messages"), hidden=True)]
    expressions = []
    for name, measurement, field in ADOPTION:
        runs = Total(measurement, (field,), (), BOT, alias="runs")
        targets.append(Target(f"{name}_runs", runs, hidden=True))
        expressions.append(Expression(name, f"${name}_runs / $messages"))
    return Panel("Feature adoption", "timeseries", tuple(targets),
                 "Share of user messages (attachment checks) on which each component ran; the line is "
                 f"the adoption target ({ADOPTION_SLO:.0%}).",
                 unit="percentunit", minimum=0, steps=((None, "red"), (ADOPTION_SLO, "green")),
                 threshold_line=True, expressions=tuple(expressions), width=24, height=9)


def learning_dashboard() -> Dashboard:
    """The seed's "Learning System Telemetry", with data where it had "coming soon"."""
    return Dashboard(
        LEARNING_UID, "Learning System Telemetry", "learning_system_telemetry",
        "Attachment monitor, engagement engine, trust recovery and the learning components.",
        "30s", "now-24h", _attachment_panels() + _component_panels(),
        (Variable("bot_name", "Bot", ATTACHMENT, "bot_name"),
         Variable("user_id", "User", ATTACHMENT, "user_id", ("bot_name",))),
    )


def user_detail_dashboard() -> Dashboard:
    """The drill-down target: one user's (or one risk level's) attachment and emotional picture."""
    attach = ("bot_name", "risk_level", "user_id")
    return Dashboard(
        USER_UID, "Learning System Telemetry: user detail", "learning_user_detail",
        "Opened from the risk-level and user links of Learning System Telemetry.",
        "30s", "now-24h",
        (
            Panel("Users at this risk level", "table",
                  _one(Total(ATTACHMENT, (EVENT_COUNT,), ("user_id", "risk_level"), attach, "range",
                             "checks")),
                  "Checks per user over the range. Click a user to focus on them.",
                  links=(TO_USER,), width=24, table_format=True),
            Panel("Emotional intensity", "timeseries",
                  _one(WeightedMean(ATTACHMENT, ("emotional_intensity",), ("user_id",), attach)),
                  unit="percentunit", minimum=0, maximum=1),
            Panel("Interaction frequency", "timeseries",
                  _one(WeightedMean(ATTACHMENT, ("interaction_frequency",), ("user_id",), attach)),
                  "Mean messages per day over 7 days, per user.", minimum=0),
            Panel("Consecutive days", "timeseries",
                  _one(Last(ATTACHMENT, ("consecutive_days",), ("user_id",), attach)),
                  unit="d", minimum=0, maximum=30, steps=STREAK_STEPS),
            Panel("Interventions", "timeseries",
                  _one(Total(ATTACHMENT, ("intervention_provided",), ("user_id",), attach))),
            Panel("Character valence with this user", "timeseries",
                  _one(WeightedMean(EMOTION, ("emotional_valence",), ("user_id",), BOT_USER)),
                  minimum=-1, maximum=1),
            Panel("Dependency phrases", "timeseries",
                  _one(WeightedMean(ATTACHMENT, ("dependency_count",), ("user_id",), attach)), minimum=0),
        ),
        (Variable("bot_name", "Bot", ATTACHMENT, "bot_name"),
         Variable("risk_level", "Risk level", ATTACHMENT, "risk_level"),
         Variable("user_id", "User", ATTACHMENT, "user_id", ("bot_name", "risk_level"))),
    )


def vector_dashboard() -> Dashboard:
    """Memory-search routing: which vector, how confident, how accurate."""
    by_vector = ("primary_vector",)
    return Dashboard(
        "vector-classification", "Vector Classification Intelligence", "vector_classification_intelligence",
        "Multi-vector memory search routing.", "1m", "now-24h",
        (
            Panel("Usage per primary vector", "piechart",
                  _one(Total(VECTOR, (EVENT_COUNT,), by_vector, BOT, "range", "classifications")), width=8),
            Panel("Classification accuracy", "stat",
                  _one(Ratio(VECTOR, ("classification_accurate", EVENT_COUNT), (), BOT, "range", "accuracy")),
                  "Accurate classifications ÷ all classifications over the range.",
                  unit="percentunit", decimals=1, steps=GOOD_HIGH, width=4),
            Panel("Mean confidence per primary vector", "timeseries",
                  _one(WeightedMean(VECTOR, ("confidence",), by_vector, BOT)),
                  unit="percentunit", minimum=0, maximum=1),
            Panel("Accuracy over time", "timeseries",
                  _one(Ratio(VECTOR, ("classification_accurate", EVENT_COUNT), (), BOT, alias="accuracy")),
                  unit="percentunit", minimum=0, maximum=1, steps=GOOD_HIGH),
            Panel("Low-confidence classifications per query type", "timeseries",
                  _one(CountBelow(VECTOR, ("confidence",), ("query_type",), BOT, alias="low_confidence")),
                  "Classifications in windows whose mean confidence is below 0.5."),
            Panel("Emotional indicators per day", "timeseries",
                  _one(WeightedMean(VECTOR, ("emotional_indicators_count",), (), BOT, every="1d")),
                  "Mean emotional indicators per query, per day.", minimum=0),
            Panel("Results quality per primary vector", "timeseries",
                  _one(WeightedMean(VECTOR, ("results_quality",), by_vector, BOT)),
                  unit="percentunit", minimum=0, maximum=1),
            Panel("Volume per bot", "timeseries",
                  _one(Total(VECTOR, (EVENT_COUNT,), ("bot_name",), BOT, alias="classifications"))),
            Panel("Classifications per query type", "timeseries",
                  _one(Total(VECTOR, (EVENT_COUNT,), ("query_type",), BOT, alias="classifications")),
                  width=24),
        ),
        (Variable("bot_name", "Bot", VECTOR, "bot_name"),),
    )


def emotion_dashboard() -> Dashboard:
    """The character's emotional state per bot and user."""
    trend = tuple(Target(chr(ord("A") + i), WeightedMean(EMOTION, (e,), (), BOT_USER))
                  for i, e in enumerate(EMOTIONS))
    return Dashboard(
        "character-emotional-evolution", "Character Emotional Evolution", "character_emotional_evolution",
        "The character's emotional state per reply, by bot and user.", "30s", "now-24h",
        (
            Panel("Emotions over time", "timeseries", trend, unit="percentunit", minimum=0, maximum=1,
                  width=24, height=10),
            Panel("Current positive state", "gauge",
                  tuple(Target(chr(ord("A") + i), Last(EMOTION, (e,), (), BOT_USER, "range"))
                        for i, e in enumerate(e for e in EMOTIONS if e not in STRESS_LIKE)),
                  "Latest window's mean; higher is better.", unit="percentunit", minimum=0, maximum=1,
                  steps=GOOD_HIGH),
            Panel("Current stress-like state", "gauge",
                  tuple(Target(chr(ord("A") + i), Last(EMOTION, (e,), (), BOT_USER, "range"))
                        for i, e in enumerate(e for e in EMOTIONS if e in STRESS_LIKE)),
                  "Latest window's mean; inverted scale: lower is better.", unit="percentunit",
                  minimum=0, maximum=1, steps=GOOD_LOW),
            Panel("Dominant state", "piechart",
                  _one(Total(EMOTION, (EVENT_COUNT,), ("dominant_state",), BOT_USER, "range", "replies")),
                  width=8),
            Panel("Joy trend", "timeseries", _one(WeightedMean(EMOTION, ("joy",), ("bot_name",), BOT_USER)),
                  unit="percentunit", minimum=0, maximum=1, width=8),
            Panel("Valence and intensity", "timeseries",
                  (Target("A", WeightedMean(EMOTION, ("emotional_valence",), (), BOT_USER)),
                   Target("B", WeightedMean(EMOTION, ("emotional_intensity",), (), BOT_USER))),
                  minimum=-1, maximum=1, width=8),
        ),
        (Variable("bot_name", "Bot", EMOTION, "bot_name"),
         Variable("user_id", "User", EMOTION, "user_id", ("bot_name",))),
    )


def pipeline_dashboard() -> Dashboard:
    """The worker's own health: throughput, dead letters, lag, write latency, silent measurements."""
    pipe = PIPELINE_MEASUREMENT
    by_worker = ("worker",)
    return Dashboard(
        "pipeline-health", "Telemetry Pipeline Health", "pipeline_health",
        "The aggregation worker reporting on itself (measurement telemetry_pipeline).", "30s", "now-6h",
        (
            Panel("Events in per worker", "timeseries", _one(Total(pipe, ("events_in",), by_worker))),
            Panel("Points out per worker", "timeseries", _one(Total(pipe, ("points_out",), by_worker))),
            Panel("Dead letters", "stat",
                  _one(Total(pipe, ("dead_letters",), (), (), "range", "dead_letters")),
                  "Dead letters over the range (see `telemetry dlq list`).",
                  steps=((None, "green"), (1, "red")), width=6),
            Panel("Dead letters by reason", "timeseries", _one(PrefixTotal(pipe, ("dead_letters_",))),
                  width=18),
            Panel("Stream lag per shard", "timeseries", _one(Peak(pipe, ("lag_entries",), ("shard",))),
                  "Entries not yet read by the group (worst in each interval)."),
            Panel("Write latency", "timeseries", _one(Peak(pipe, ("write_latency_ms",), by_worker)),
                  "Mean InfluxDB write time per reporting interval (worst shard of each worker).", unit="ms"),
            Panel("Late rewrites, overflow, duplicates", "timeseries",
                  _one(Total(pipe, ("late_rewrites", "overflow", "duplicates"), ()))),
            Panel("Write errors and lost entries", "timeseries",
                  _one(Total(pipe, ("write_errors", "lost_entries"), ())),
                  "Failed sink writes (retried) and stream entries lost to the length cap (data loss)."),
            Panel("Open windows per shard", "timeseries", _one(Peak(pipe, ("open_windows",), ("shard",)))),
            Panel("Last data per measurement", "table", _one(LastSeen("*", (EVENT_COUNT,), over="range")),
                  "When each measurement last received a point: a silent one is a broken writer.",
                  table_format=True),
        ),
    )


def all_dashboards() -> tuple[Dashboard, ...]:
    """Every dashboard, in file order."""
    return (learning_dashboard(), user_detail_dashboard(), vector_dashboard(), emotion_dashboard(),
            pipeline_dashboard())
