"""What every sink shares: the :class:`Sink` protocol, :class:`WriteResult`, the errors, and the
bisection that isolates the points InfluxDB rejects.

Errors::

    SinkError                      a write did not happen and retrying will not help by itself
     ├── SinkUnavailable           retry later: connection refused, timeout, 5xx, 429, 408
     │                             (``retry_after_s`` from the server's Retry-After, else None)
     ├── SinkAuthError             401/403: wrong or missing token, user or password
     ├── SinkNotFound              404 / "database not found": the bucket or database is missing
     └── SinkRejected              400/413/422 for a whole body; never escapes :func:`write_bisecting`,
                                   which turns it into ``WriteResult.rejected``

The worker retries only :class:`SinkUnavailable` (with :class:`consumer.sinks.retry.Backoff`); the
others are configuration problems it reports with their message and keeps the data unacknowledged.

Rejections: InfluxDB refuses a whole request when one line is bad ("field type conflict",
"unable to parse", "invalid number"). :func:`write_bisecting` splits such a batch in halves,
recursively, until each bad point stands alone; the good points are written, the bad ones come
back with InfluxDB's message. InfluxDB 1.x may already have stored the good points of a
partially written batch; writing them again is harmless, as a point with the same measurement,
tags and time overwrites itself.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from consumer.core.model import Point

logger = logging.getLogger(__name__)

REJECT_STATUSES: Final = frozenset({400, 413, 422})
"""Statuses that condemn something in the body rather than the server: split and retry halves."""
MAX_BATCH_POINTS: Final = 5000
"""Points per request: InfluxDB's advice for line protocol batches; larger writes are sent in chunks."""
MAX_RETRY_AFTER_S: Final = 3600.0
"""A Retry-After beyond this is treated as this (a broken header must not park the worker)."""


class SinkError(Exception):
    """A write failed; see the module docstring for the tree."""


class SinkUnavailable(SinkError):
    """The sink cannot take writes right now; retry after a backoff.

    ``retry_after_s`` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SinkAuthError(SinkError):
    """Credentials were refused (401/403)."""


class SinkNotFound(SinkError):
    """The target bucket or database does not exist (404)."""


class SinkRejected(SinkError):
    """The server refused the body (400/413/422); ``status`` and InfluxDB's message are kept."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class WriteResult:
    """Outcome of :meth:`Sink.write`: how many points were stored, and which were refused and why."""

    written: int
    rejected: list[tuple[Point, str]] = field(default_factory=list)


@runtime_checkable
class Sink(Protocol):
    """Where the worker writes points.

    Usage::

        sink = make_sink(config)
        try:
            result = sink.write(points)       # raises SinkUnavailable when retryable
        finally:
            sink.close()
    """

    def write(self, points: Sequence[Point]) -> WriteResult:
        """Store ``points``; rejected points are returned, not raised."""
        ...

    def ping(self) -> bool:
        """Whether the sink answers right now (never raises)."""
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


def write_bisecting(post: Callable[[Sequence[Point]], None], points: Sequence[Point], *,
                    max_batch_points: int = MAX_BATCH_POINTS) -> WriteResult:
    """Write ``points`` with ``post``, splitting a rejected batch until the bad points are isolated.

    ``post`` sends one body of at most ``max_batch_points`` points and raises
    :class:`SinkRejected` when the server refuses it; every other error propagates unchanged (a
    :class:`SinkUnavailable` part-way leaves the whole write to be retried, which is idempotent).
    Cost: one request per chunk when all is well; about ``2 * log2(n)`` more per bad point.
    """
    result = WriteResult(written=0)
    # A stack popped from the end: chunks pushed last-first so that points go out in order.
    pending: list[Sequence[Point]] = [points[start:start + max_batch_points]
                                      for start in range(0, len(points), max_batch_points)][::-1]
    while pending:
        batch = pending.pop()
        try:
            post(batch)
        except SinkRejected as exc:
            if len(batch) == 1:
                result.rejected.append((batch[0], str(exc)))
                continue
            middle = len(batch) // 2
            # Popped last-in-first-out: push the second half first so points go in order.
            pending.append(batch[middle:])
            pending.append(batch[:middle])
            continue
        result.written += len(batch)
    if result.rejected:
        logger.debug("write of %d points: %d rejected, isolated by bisection", len(points),
                     len(result.rejected))
    return result


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def error_message(body: bytes | str | None, fallback: str) -> str:
    """InfluxDB's message from an error body: v1 ``{"error": ...}``, v2 ``{"message": ...}``, or text."""
    if body is None:
        return fallback
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text.strip()
    if not text:
        return fallback
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    if isinstance(parsed, dict):
        for key in ("error", "message"):
            if isinstance(parsed.get(key), str) and parsed[key]:
                return str(parsed[key])
    return text


def error_for_status(status: int, message: str, *, retry_after: str | None = None,
                     target: str = "") -> SinkError:
    """The error an HTTP status from a write endpoint means (the caller raises it)."""
    where = f" ({target})" if target else ""
    if status in REJECT_STATUSES:
        return SinkRejected(message, status=status)
    if status in (401, 403):
        return SinkAuthError(f"InfluxDB refused the credentials{where}: HTTP {status}: {message}")
    if status == 404:
        return SinkNotFound(f"InfluxDB bucket or database not found{where}: {message}")
    if status in (408, 429) or status >= 500:
        return SinkUnavailable(f"InfluxDB unavailable{where}: HTTP {status}: {message}",
                               retry_after_s=parse_retry_after(retry_after))
    return SinkError(f"InfluxDB write failed{where}: HTTP {status}: {message}")
