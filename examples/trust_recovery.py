"""TrustRecoverySystem, instrumented: detections, activations and progress checks as events.

Usage::

    trust = TrustRecoverySystem(Telemetry.from_env(), bot_name="elena")
    severity = trust.detect_trust_decline("u42", trust_value=0.35)
    if severity:
        trust.activate_recovery("u42", severity)
"""

from __future__ import annotations

from typing import Final

from producers import Telemetry

MEASUREMENT: Final = "trust_recovery_telemetry"
COMPONENT: Final = "TrustRecoverySystem"


def severity_of(trust_value: float) -> str | None:
    """``None`` when trust is healthy, else minor, moderate or severe."""
    if trust_value >= 0.6:
        return None
    return "minor" if trust_value >= 0.45 else "moderate" if trust_value >= 0.3 else "severe"


class TrustRecoverySystem:
    """Watches a user's trust in the bot and repairs it when it declines."""

    def __init__(self, tel: Telemetry, *, bot_name: str) -> None:
        self._tel = tel.bind(MEASUREMENT, bot_name=bot_name, component=COMPONENT)

    def detect_trust_decline(self, user_id: str, *, trust_value: float) -> str | None:
        """The severity of a decline, or ``None``; records the check and the trust value."""
        severity = severity_of(trust_value)
        tags = {"severity": severity or "none"}
        self._tel.emit(
            {
                "detect_trust_decline_count": 1,
                "trust_value": trust_value,
                "declines_detected": 1 if severity else 0,
            },
            tags=tags,
        )
        return severity

    def activate_recovery(self, user_id: str, severity: str) -> None:
        """Start a recovery plan for a declined user."""
        self._tel.emit({"activate_recovery_count": 1, "recoveries_activated": 1}, tags={"severity": severity})

    def assess_recovery_progress(self, user_id: str, severity: str, *, trust_value: float) -> bool:
        """Whether the recovery is complete (trust back above 0.6)."""
        self._tel.emit(
            {"assess_recovery_progress_count": 1, "trust_value": trust_value}, tags={"severity": severity}
        )
        return trust_value >= 0.6
