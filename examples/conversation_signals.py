"""Per-message signals: memory-search routing (``vector_classification``) and the character's
emotional state (``character_emotional_evolution``), each one event per call.

Usage::

    router = VectorRouter(Telemetry.from_env(), bot_name="elena")
    router.route("how did I feel last week?", user_id="u42")
"""

from __future__ import annotations

import random
from typing import Final

from producers import Telemetry

EMOTIONS: Final = (
    "joy",
    "anger",
    "sadness",
    "fear",
    "love",
    "trust",
    "optimism",
    "pessimism",
    "anticipation",
    "surprise",
    "disgust",
)
QUERY_TYPES: Final = {
    "content_semantic": "content",
    "emotional_context": "emotion",
    "semantic_conceptual": "semantic",
    "hybrid_multi": "content",
    "temporal_chronological": "content",
}
STRATEGIES: Final = (
    "single_vector",
    "weighted_fusion",
    "emotion_first",
    "semantic_first",
    "temporal_decay",
    "rerank",
)


class VectorRouter:
    """Chooses which memory vector answers a query; records the routing decision."""

    def __init__(self, tel: Telemetry, *, bot_name: str, rng: random.Random | None = None) -> None:
        self._tel = tel.bind("vector_classification", bot_name=bot_name)
        self._rng = rng or random.Random()

    def route(self, query: str, *, user_id: str | None = None) -> str:
        """The primary vector for ``query``."""
        rng = self._rng
        query_type = rng.choice(tuple(QUERY_TYPES))
        primary = QUERY_TYPES[query_type]
        weights = [rng.random() for _ in range(3)]
        total = sum(weights)
        confidence = min(1.0, max(0.0, rng.gauss(0.72, 0.15)))
        self._tel.emit(
            {
                "confidence": confidence,
                "content_weight": weights[0] / total,
                "emotion_weight": weights[1] / total,
                "semantic_weight": weights[2] / total,
                "emotional_indicators_count": rng.randint(0, 5),
                "semantic_indicators_count": rng.randint(0, 5),
                "content_indicators_count": rng.randint(0, 5),
                "query_length": len(query),
                "results_quality": min(1.0, max(0.0, confidence + rng.gauss(0, 0.1))),
                "classification_accurate": confidence >= 0.5 and rng.random() < 0.9,
            },
            tags={"query_type": query_type, "primary_vector": primary, "strategy": rng.choice(STRATEGIES)},
        )
        return primary


class EmotionalStateTracker:
    """The character's emotional state after each reply, drifting slowly."""

    def __init__(self, tel: Telemetry, *, bot_name: str, rng: random.Random | None = None) -> None:
        self._tel = tel.bind("character_emotional_evolution", bot_name=bot_name)
        self._rng = rng or random.Random()
        self._state = {emotion: self._rng.random() * 0.5 for emotion in EMOTIONS}

    def after_reply(self, user_id: str) -> str:
        """Update and record the state; returns the dominant emotion."""
        for emotion, value in self._state.items():
            self._state[emotion] = min(1.0, max(0.0, value + self._rng.gauss(0, 0.05)))
        dominant = max(self._state, key=self._state.__getitem__)
        positive = sum(self._state[e] for e in ("joy", "love", "trust", "optimism"))
        negative = sum(self._state[e] for e in ("anger", "sadness", "fear", "pessimism", "disgust"))
        self._tel.emit(
            {
                **self._state,
                "emotional_intensity": max(self._state.values()),
                "emotional_valence": max(-1.0, min(1.0, (positive - negative) / 4)),
            },
            tags={"user_id": user_id, "dominant_state": dominant},
        )
        return dominant
