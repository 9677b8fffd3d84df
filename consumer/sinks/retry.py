"""Backoff for the worker's write loop: exponential with full jitter, capped, reset on success.

The delay before retry ``n`` (counting from 0) is uniform in ``[0, min(cap, base * 2**n)]``
("full jitter"): many workers that lost InfluxDB at the same moment do not come back in step.
When the server said how long to wait (``Retry-After`` on a 429/503, carried by
:class:`~consumer.sinks.base.SinkUnavailable`), the delay is at least that long.

:class:`Backoff` only computes delays; it never sleeps. The worker waits on its stop event in
small steps, renewing its shard leases, so that a long outage neither loses shards nor blocks
shutdown.
"""

from __future__ import annotations

import random
from typing import Final

from consumer.sinks.base import SinkUnavailable

DEFAULT_BASE_S: Final = 0.5
DEFAULT_CAP_S: Final = 30.0
DEFAULT_MAX_RETRY_AFTER_S: Final = 300.0


class Backoff:
    """Delays between retries of a failing write.

    Usage::

        backoff = Backoff()
        while True:
            try:
                result = sink.write(points)
            except SinkUnavailable as exc:
                wait_renewing_leases(backoff.next_delay(exc.retry_after_s))
                continue
            backoff.reset()
            break
    """

    def __init__(self, *, base_s: float = DEFAULT_BASE_S, cap_s: float = DEFAULT_CAP_S,
                 max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
                 rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base_s <= cap_s (got {base_s}, {cap_s})")
        self.base_s = base_s
        self.cap_s = cap_s
        self.max_retry_after_s = max_retry_after_s
        self._rng = rng or random.Random()
        self.attempts = 0
        """Failures since the last success."""

    def ceiling(self) -> float:
        """The upper bound of the next jittered delay."""
        # Bounding the exponent keeps 2**n finite however long the outage lasts.
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempts, 64))

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """Seconds to wait before the next attempt; counts one more failure."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempts += 1
        if retry_after_s is not None and retry_after_s > 0:
            delay = max(delay, min(retry_after_s, self.max_retry_after_s))
        return delay

    def delay_for(self, error: BaseException) -> float:
        """:meth:`next_delay` honouring the Retry-After an error carries, if any."""
        retry_after = error.retry_after_s if isinstance(error, SinkUnavailable) else None
        return self.next_delay(retry_after)

    def reset(self) -> None:
        """A write succeeded: the next failure starts from ``base_s`` again."""
        self.attempts = 0
