"""The producer library imported into bot code: record events, a background flusher ships them.

Usage::

    from producers import Telemetry
    tel = Telemetry.from_env()
    tel.emit("attachment_monitoring", {"emotional_intensity": 0.82}, tags={"bot_name": "elena"})

    import producers                       # or the module-level default, a no-op until configured
    producers.configure()                  # from TELEMETRY_* variables
    producers.count("engagement_engine_telemetry", "interventions_generated")

Depends on ``redis`` and ``msgpack`` only; never imports ``consumer``.
"""

from producers._default import close, configure, count, current, emit, flush, gauge, observe, stats, timer
from producers.config import ProducerConfig
from producers.durations import ConfigError
from producers.telemetry import BoundTelemetry, Telemetry, Timer

__all__ = [
    "BoundTelemetry",
    "ConfigError",
    "ProducerConfig",
    "Telemetry",
    "Timer",
    "close",
    "configure",
    "count",
    "current",
    "emit",
    "flush",
    "gauge",
    "observe",
    "stats",
    "timer",
]
