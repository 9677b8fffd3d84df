"""The measurement catalogue: the seed's measurements, their tags, fields and field semantics.

One place lists what the bot's components record, so the worker (per-field aggregation), the
dashboards (which fields exist after aggregation) and ``doctor`` (which measurements should be
receiving data) all agree. A measurement that is not in the catalogue follows the defaults of
``docs/semantics.md``: the aggregation is chosen by how a value was recorded.

Semantics of a field (what an ``emit`` of it aggregates to; ``count``/``gauge``/``observe``
calls always use their own semantics):

    MEAN      numbers: F = mean (float), F_min, F_max, F_sum
    TRUE      bools: F = number of True (int)
    LAST      F = value with the greatest event time (gauges, strings)
    SUM       ints: F = integer sum (counters)
    SUMMARY   F_count, F_sum, F_min, F_max, F_mean, F_p50, F_p90, F_p99

Mode of a measurement: ``aggregate`` (the default: one point per series per window, fields as
above) or ``raw`` (event-like data whose every point matters: each input point is written as
itself, same tags, fields and timestamp). A measurement that is not catalogued is raw when it
matches ``TELEMETRY_RAW_MEASUREMENTS`` (names or globs); a catalogued one takes its entry's mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Final


class Semantics(StrEnum):
    """How a field's values in one series-window become the written fields."""

    MEAN = "mean"
    TRUE = "true_count"
    LAST = "last"
    SUM = "sum"
    SUMMARY = "summary"


class Mode(StrEnum):
    """What the worker writes for a measurement's input points."""

    AGGREGATE = "aggregate"
    RAW = "raw"


MEAN_SUFFIXES: Final = ("", "_min", "_max", "_sum")
SUMMARY_SUFFIXES: Final = ("_count", "_sum", "_min", "_max", "_mean", "_p50", "_p90", "_p99")


def output_fields(name: str, semantics: Semantics) -> tuple[str, ...]:
    """The field keys written for a recorded field ``name`` with ``semantics``."""
    if semantics is Semantics.MEAN:
        return tuple(name + suffix for suffix in MEAN_SUFFIXES)
    if semantics is Semantics.SUMMARY:
        return tuple(name + suffix for suffix in SUMMARY_SUFFIXES)
    return (name,)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A catalogued field: how it is recorded and aggregated, and what it means."""

    name: str
    semantics: Semantics
    unit: str = ""
    description: str = ""

    @property
    def outputs(self) -> tuple[str, ...]:
        """Field keys this field produces in InfluxDB."""
        return output_fields(self.name, self.semantics)


@dataclass(frozen=True, slots=True)
class MeasurementSpec:
    """A catalogued measurement: who emits it, its tags and fields."""

    name: str
    emitted_by: str
    tags: tuple[str, ...]
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    optional_tags: tuple[str, ...] = ()
    mode: Mode = Mode.AGGREGATE

    def semantics_of(self, field_name: str) -> Semantics | None:
        """Declared semantics of ``field_name``, or ``None`` (use the default)."""
        spec = self.fields.get(field_name)
        return spec.semantics if spec else None


def _fields(*specs: FieldSpec) -> dict[str, FieldSpec]:
    return {spec.name: spec for spec in specs}


def _counts(*names: str) -> tuple[FieldSpec, ...]:
    return tuple(FieldSpec(name, Semantics.SUM, "count") for name in names)


def _ratios(*names: str) -> tuple[FieldSpec, ...]:
    return tuple(FieldSpec(name, Semantics.MEAN, "0-1") for name in names)


_COMPONENT_TAGS: Final = ("bot_name", "component")

_EMOTIONS: Final = (
    "joy", "anger", "sadness", "fear", "love", "trust", "optimism",
    "pessimism", "anticipation", "surprise", "disgust",
)

CATALOGUE: Final[dict[str, MeasurementSpec]] = {
    spec.name: spec
    for spec in (
        MeasurementSpec(
            "attachment_monitoring",
            "AttachmentMonitor, each attachment-risk check of a user message",
            ("user_id", "bot_name", "risk_level"),
            _fields(
                FieldSpec("emotional_intensity", Semantics.MEAN, "0-1"),
                FieldSpec("interaction_frequency", Semantics.MEAN, "msgs/day over 7 days"),
                FieldSpec("dependency_count", Semantics.MEAN, "dependency phrases 0-14"),
                FieldSpec("consecutive_days", Semantics.LAST, "days 0-30", "streak: last value"),
                FieldSpec("intervention_provided", Semantics.TRUE, "count of true"),
            ),
        ),
        MeasurementSpec(
            "vector_classification",
            "memory search routing, about one per message",
            ("bot_name", "query_type", "primary_vector", "strategy"),
            _fields(
                *_ratios("confidence", "content_weight", "emotion_weight", "semantic_weight",
                         "results_quality"),
                FieldSpec("emotional_indicators_count", Semantics.MEAN, "count"),
                FieldSpec("semantic_indicators_count", Semantics.MEAN, "count"),
                FieldSpec("content_indicators_count", Semantics.MEAN, "count"),
                FieldSpec("query_length", Semantics.MEAN, "chars"),
                FieldSpec("classification_accurate", Semantics.TRUE, "count of true"),
            ),
            optional_tags=("user_id",),
        ),
        MeasurementSpec(
            "character_emotional_evolution",
            "per bot reply, the character's emotional state",
            ("bot_name", "user_id", "dominant_state"),
            _fields(
                *_ratios(*_EMOTIONS, "emotional_intensity"),
                FieldSpec("emotional_valence", Semantics.MEAN, "-1..1"),
            ),
        ),
        MeasurementSpec(
            "engagement_engine_telemetry",
            "ProactiveConversationEngagementEngine",
            _COMPONENT_TAGS,
            _fields(*_counts("analyze_engagement_potential_count", "analyze_conversation_engagement_count",
                             "interventions_generated", "total_recommendations")),
        ),
        MeasurementSpec(
            "trust_recovery_telemetry",
            "TrustRecoverySystem",
            (*_COMPONENT_TAGS, "severity"),
            _fields(
                *_counts("detect_trust_decline_count", "activate_recovery_count",
                         "assess_recovery_progress_count", "declines_detected", "recoveries_activated"),
                FieldSpec("trust_value", Semantics.MEAN, "0-1"),
            ),
        ),
        MeasurementSpec(
            "character_graph_builder_telemetry",
            "CharacterGraphKnowledgeBuilder and CharacterGraphKnowledgeIntelligence",
            _COMPONENT_TAGS,
            _fields(*_counts("build_count", "facts_extracted", "graph_updates", "query_count",
                             "results_found")),
        ),
        MeasurementSpec(
            "character_insight_storage_telemetry",
            "CharacterInsightStorage",
            _COMPONENT_TAGS,
            _fields(*_counts("store_count", "retrieve_count", "insights_stored")),
        ),
        MeasurementSpec(
            "learning_moment_detector_telemetry",
            "CharacterLearningMomentDetector",
            _COMPONENT_TAGS,
            _fields(*_counts("detect_count", "moments_detected", "learning_opportunities")),
        ),
        MeasurementSpec(
            "self_knowledge_extractor_telemetry",
            "CharacterSelfKnowledgeExtractor",
            _COMPONENT_TAGS,
            _fields(*_counts("extract_count", "facts_extracted", "self_knowledge_stored")),
        ),
        MeasurementSpec(
            "temporal_evolution_telemetry",
            "CharacterTemporalEvolutionAnalyzer",
            _COMPONENT_TAGS,
            _fields(*_counts("analyze_count", "evolutions_detected")),
        ),
        MeasurementSpec(
            "episodic_intelligence_telemetry",
            "CharacterVectorEpisodicIntelligence",
            _COMPONENT_TAGS,
            _fields(*_counts("store_count", "retrieve_count", "episodes_stored")),
        ),
    )
}

PIPELINE_MEASUREMENT: Final = "telemetry_pipeline"
"""The worker's own measurement (tags ``worker``, ``shard``); written directly, not aggregated."""

LEARNING_COMPONENT_MEASUREMENTS: Final = (
    "character_graph_builder_telemetry",
    "character_insight_storage_telemetry",
    "learning_moment_detector_telemetry",
    "self_knowledge_extractor_telemetry",
    "temporal_evolution_telemetry",
    "episodic_intelligence_telemetry",
)


def lookup(measurement: str) -> MeasurementSpec | None:
    """The catalogue entry for ``measurement``, or ``None`` for an uncatalogued one."""
    return CATALOGUE.get(measurement)


def mode_of(measurement: str, raw_patterns: Iterable[str] = ()) -> Mode:
    """The mode of ``measurement``: its catalogue entry's, else raw when a pattern matches it.

    ``raw_patterns`` are ``TELEMETRY_RAW_MEASUREMENTS``' names or globs (``*``, ``?``, ``[...]``,
    case-sensitive, like measurement names in InfluxDB).
    """
    spec = CATALOGUE.get(measurement)
    if spec is not None:
        return spec.mode
    return Mode.RAW if any(fnmatchcase(measurement, pattern) for pattern in raw_patterns) else Mode.AGGREGATE


def has_raw_entries() -> bool:
    """True when some catalogue entry is in raw mode (else only the patterns can make one raw)."""
    return any(spec.mode is Mode.RAW for spec in CATALOGUE.values())
