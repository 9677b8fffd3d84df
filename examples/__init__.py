"""The seed's bot components instrumented as a bot author would: one line per event.

Each class takes a :class:`producers.Telemetry` and binds a handle per measurement once
(``tel.bind(measurement, bot_name=...)``); the hot path is then a single call that appends to an
in-process buffer and never blocks. ``telemetry demo`` drives these classes. Before/after:
``docs/examples.md``.
"""

from examples.attachment_monitor import AttachmentMonitor, RiskAssessment, UserActivity, score_risk
from examples.conversation_signals import EmotionalStateTracker, VectorRouter
from examples.engagement_engine import ProactiveConversationEngagementEngine
from examples.learning_component import LearningComponents
from examples.trust_recovery import TrustRecoverySystem

__all__ = [
    "AttachmentMonitor",
    "EmotionalStateTracker",
    "LearningComponents",
    "ProactiveConversationEngagementEngine",
    "RiskAssessment",
    "TrustRecoverySystem",
    "UserActivity",
    "VectorRouter",
    "score_risk",
]
