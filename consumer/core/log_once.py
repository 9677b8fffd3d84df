"""Log a lasting condition once (an outage, a loss), not on every retry, until it is over."""

from __future__ import annotations

import logging


class LogOnce:
    """Remembers which conditions have been logged; :meth:`over` forgets one when it ends."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._logged: set[str] = set()

    def once(self, key: str, level: int, message: str, *args: object) -> None:
        """Log ``message`` unless ``key`` was logged and is not over yet."""
        if key not in self._logged:
            self._logged.add(key)
            self._logger.log(level, message, *args)

    def over(self, key: str) -> bool:
        """Mark ``key`` over; True when it had been logged (so the end is worth a line too)."""
        if key in self._logged:
            self._logged.discard(key)
            return True
        return False
