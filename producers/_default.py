"""The module-level default producer: a no-op until :func:`configure` installs a real one.

Library code may call ``producers.emit(...)`` (or decorate with ``producers.timer(...)``) at
import time, before the application has decided where telemetry goes: until then every call is
a cheap no-op. ``configure`` swaps the real :class:`~producers.Telemetry` in, and every earlier
reference (including timers created before) starts recording, because the module functions look
the current producer up on each call — the proxy pattern of OpenTelemetry's global providers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from producers.telemetry import Tags, Telemetry, Timer

_ZERO_STATS = {"emitted": 0, "sent": 0, "dropped": 0, "buffered": 0, "errors": 0, "send_failures": 0}


class _NoopTelemetry:
    """Stands in before :func:`configure`: accepts everything, records nothing."""

    def emit(self, measurement: str, fields: Mapping[str, Any], tags: Tags = None, ts: Any = None) -> None:
        return None

    def count(self, measurement: str, field: str, value: int = 1, tags: Tags = None, ts: Any = None) -> None:
        return None

    def gauge(self, measurement: str, field: str, value: float, tags: Tags = None, ts: Any = None) -> None:
        return None

    def observe(self, measurement: str, field: str, value: float, tags: Tags = None, ts: Any = None) -> None:
        return None

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def close(self, timeout: float = 5.0) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return dict(_ZERO_STATS)


_NOOP = _NoopTelemetry()
_current: Telemetry | _NoopTelemetry = _NOOP
_lock = threading.Lock()


def configure(telemetry: Telemetry | None = None, /, **settings: Any) -> Telemetry:
    """Install the default producer and return it.

    ``configure()`` reads the TELEMETRY_* environment; ``configure(redis_url=..., shards=...)``
    takes :class:`~producers.Telemetry` keywords; ``configure(tel)`` installs a ready producer.
    A previously configured default is closed.

    Raises:
        ConfigError: a setting or variable is invalid.
    """
    global _current
    if telemetry is None:
        telemetry = Telemetry(**settings) if settings else Telemetry.from_env()
    with _lock:
        previous, _current = _current, telemetry
    if previous is not telemetry:
        previous.close()
    return telemetry


def current() -> Telemetry | None:
    """The configured default producer, or None while unconfigured."""
    value = _current
    return value if isinstance(value, Telemetry) else None


def emit(measurement: str, fields: Mapping[str, Any], tags: Tags = None, ts: Any = None) -> None:
    """:meth:`Telemetry.emit` on the default producer (no-op until configured)."""
    _current.emit(measurement, fields, tags, ts)


def count(measurement: str, field: str, value: int = 1, tags: Tags = None, ts: Any = None) -> None:
    """:meth:`Telemetry.count` on the default producer."""
    _current.count(measurement, field, value, tags, ts)


def gauge(measurement: str, field: str, value: float, tags: Tags = None, ts: Any = None) -> None:
    """:meth:`Telemetry.gauge` on the default producer."""
    _current.gauge(measurement, field, value, tags, ts)


def observe(measurement: str, field: str, value: float, tags: Tags = None, ts: Any = None) -> None:
    """:meth:`Telemetry.observe` on the default producer."""
    _current.observe(measurement, field, value, tags, ts)


def timer(measurement: str, field: str, tags: Tags = None) -> Timer:
    """A timer that observes into whichever default producer is installed when it fires."""
    return Timer(observe, measurement, field, tags)


def flush(timeout: float = 5.0) -> bool:
    """:meth:`Telemetry.flush` on the default producer (True while unconfigured)."""
    return _current.flush(timeout)


def close(timeout: float = 5.0) -> bool:
    """Close the default producer and go back to the no-op."""
    global _current
    with _lock:
        previous, _current = _current, _NOOP
    return previous.close(timeout)


def stats() -> dict[str, int]:
    """:meth:`Telemetry.stats` of the default producer (zeros while unconfigured)."""
    return _current.stats()


def _new_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()   # another thread may have held it at the moment of fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)
