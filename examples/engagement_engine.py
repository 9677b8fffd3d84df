"""ProactiveConversationEngagementEngine, instrumented: each call counts once.

The seed kept cumulative counters in ``self._telemetry`` and flushed them to InfluxDB every N
calls or every five minutes (so a quiet bot never flushed, and a restart reset them). Here each
call records an event; the worker sums them per window.

Usage::

    engine = ProactiveConversationEngagementEngine(Telemetry.from_env(), bot_name="elena")
    recommendations = engine.analyze_engagement_potential("u42", silence_minutes=90.0)
"""

from __future__ import annotations

from typing import Final

from producers import Telemetry

MEASUREMENT: Final = "engagement_engine_telemetry"
COMPONENT: Final = "ProactiveConversationEngagementEngine"


class ProactiveConversationEngagementEngine:
    """Decides when to re-engage a quiet user."""

    def __init__(self, tel: Telemetry, *, bot_name: str) -> None:
        self._tel = tel.bind(MEASUREMENT, bot_name=bot_name, component=COMPONENT)

    def analyze_engagement_potential(self, user_id: str, *, silence_minutes: float) -> int:
        """How many re-engagement recommendations a silence of this length deserves."""
        self._tel.count("analyze_engagement_potential_count")
        recommendations = 0 if silence_minutes < 30 else 1 if silence_minutes < 240 else 2
        if recommendations:
            self._tel.count("total_recommendations", recommendations)
        return recommendations

    def analyze_conversation_engagement(self, user_id: str, *, engagement: float) -> bool:
        """Whether the conversation needs an intervention (engagement below 0.3)."""
        self._tel.count("analyze_conversation_engagement_count")
        needs_intervention = engagement < 0.3
        if needs_intervention:
            self._tel.count("interventions_generated")
        return needs_intervention
