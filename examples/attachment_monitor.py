"""AttachmentMonitor: each attachment-risk check of a user message records one event.

The risk score follows the original component's rules:

    interaction frequency (messages/day over 7 days)  >= 40: +3, >= 20: +2, >= 10: +1
    emotional intensity                               >= 0.75: +1
    dependency phrases                                >= 3: +2, > 0: +1
    active days in the last 30                        >= 14: +1

and the level is HIGH from 5 points, MEDIUM from 3, else LOW; a HIGH check provides an
intervention. Telemetry is one line: the worker aggregates per window (mean, min, max and sum of
the numbers, last ``consecutive_days``, count of interventions), so nothing is kept or flushed here.

Usage::

    monitor = AttachmentMonitor(Telemetry.from_env(), bot_name="elena")
    assessment = monitor.check("u42", UserActivity(14.0, 0.82, 3, 6, 16))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from producers import Telemetry

MEASUREMENT: Final = "attachment_monitoring"
HIGH_FROM: Final = 5
MEDIUM_FROM: Final = 3


@dataclass(frozen=True, slots=True)
class UserActivity:
    """What the monitor knows about a user at one message."""

    interaction_frequency: float
    emotional_intensity: float
    dependency_count: int
    consecutive_days: int
    active_days_30: int


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    """The outcome of one check."""

    score: int
    risk_level: str
    intervention_provided: bool


def score_risk(activity: UserActivity) -> int:
    """The original component's attachment-risk score (0-7)."""
    score = 0
    if activity.interaction_frequency >= 40:
        score += 3
    elif activity.interaction_frequency >= 20:
        score += 2
    elif activity.interaction_frequency >= 10:
        score += 1
    if activity.emotional_intensity >= 0.75:
        score += 1
    if activity.dependency_count >= 3:
        score += 2
    elif activity.dependency_count > 0:
        score += 1
    if activity.active_days_30 >= 14:
        score += 1
    return score


def risk_level(score: int) -> str:
    """LOW, MEDIUM or HIGH for a score."""
    return "HIGH" if score >= HIGH_FROM else "MEDIUM" if score >= MEDIUM_FROM else "LOW"


class AttachmentMonitor:
    """Checks a user's attachment risk at each message and records the check."""

    def __init__(self, tel: Telemetry, *, bot_name: str) -> None:
        self._checks = tel.bind(MEASUREMENT, bot_name=bot_name)

    def check(self, user_id: str, activity: UserActivity) -> RiskAssessment:
        """Score the user's activity; HIGH risk gets an intervention."""
        score = score_risk(activity)
        level = risk_level(score)
        assessment = RiskAssessment(score, level, intervention_provided=level == "HIGH")
        self._checks.emit(
            {
                "emotional_intensity": activity.emotional_intensity,
                "interaction_frequency": activity.interaction_frequency,
                "dependency_count": activity.dependency_count,
                "consecutive_days": activity.consecutive_days,
                "intervention_provided": assessment.intervention_provided,
            },
            tags={"user_id": user_id, "risk_level": level},
        )
        return assessment
