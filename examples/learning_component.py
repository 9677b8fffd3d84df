"""The character learning components, instrumented: one count per call, one per thing found.

The seed listed these as "logging-based, pending InfluxDB integration"; each would have needed
its own counters and flush task. Here each component binds its measurement once.

Usage::

    learning = LearningComponents(Telemetry.from_env(), bot_name="elena")
    learning.learn_from_message("u42", facts=2, moments=1, insights=1)
"""

from __future__ import annotations

from producers import BoundTelemetry, Telemetry

COMPONENTS: dict[str, tuple[str, str]] = {
    # attribute: (measurement, component tag)
    "graph_builder": ("character_graph_builder_telemetry", "CharacterGraphKnowledgeBuilder"),
    "graph_intelligence": ("character_graph_builder_telemetry", "CharacterGraphKnowledgeIntelligence"),
    "insight_storage": ("character_insight_storage_telemetry", "CharacterInsightStorage"),
    "moment_detector": ("learning_moment_detector_telemetry", "CharacterLearningMomentDetector"),
    "self_knowledge": ("self_knowledge_extractor_telemetry", "CharacterSelfKnowledgeExtractor"),
    "temporal_evolution": ("temporal_evolution_telemetry", "CharacterTemporalEvolutionAnalyzer"),
    "episodic": ("episodic_intelligence_telemetry", "CharacterVectorEpisodicIntelligence"),
}


class LearningComponents:
    """The seven learning components of one bot, each with its bound telemetry handle."""

    def __init__(self, tel: Telemetry, *, bot_name: str) -> None:
        self._handles: dict[str, BoundTelemetry] = {
            name: tel.bind(measurement, bot_name=bot_name, component=component)
            for name, (measurement, component) in COMPONENTS.items()
        }

    def learn_from_message(self, user_id: str, *, facts: int, moments: int, insights: int) -> None:
        """One message's learning pass: graph, moments, insights and an episode."""
        graph = self._handles["graph_builder"]
        graph.count("build_count")
        graph.count("facts_extracted", facts)
        graph.count("graph_updates", 1 if facts else 0)
        moment = self._handles["moment_detector"]
        moment.count("detect_count")
        moment.count("moments_detected", moments)
        moment.count("learning_opportunities", moments + insights)
        storage = self._handles["insight_storage"]
        storage.count("store_count")
        storage.count("insights_stored", insights)
        self._handles["episodic"].count("store_count")
        self._handles["episodic"].count("episodes_stored")

    def recall(self, user_id: str, *, results: int) -> None:
        """A memory lookup: graph query, stored insights and episodes read back."""
        query = self._handles["graph_intelligence"]
        query.count("query_count")
        query.count("results_found", results)
        self._handles["insight_storage"].count("retrieve_count")
        self._handles["episodic"].count("retrieve_count")

    def reflect(self, *, facts: int, evolutions: int) -> None:
        """A periodic self-reflection: self-knowledge and trait evolution."""
        knowledge = self._handles["self_knowledge"]
        knowledge.count("extract_count")
        knowledge.count("facts_extracted", facts)
        knowledge.count("self_knowledge_stored", 1 if facts else 0)
        evolution = self._handles["temporal_evolution"]
        evolution.count("analyze_count")
        evolution.count("evolutions_detected", evolutions)
