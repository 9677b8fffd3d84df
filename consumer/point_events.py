"""Point events (kinds 4 and 5 of ``producers/wire.py``) as the worker reads them.

Why a step of its own: a point that arrived through ``tel.write`` (an ``influxdb_client.Point``,
line protocol or a dict) is an event like any ``emit``: its fields follow the same catalogue and
aggregation. Its time travels as exact integer nanoseconds, so it becomes an emit with float
seconds here, before validation; a rejected event (kind 5, input that was not a point) is
dead-lettered with the reason and detail the producer found, and its line as the payload.

Usage::

    events, rejected = as_emits(batch.events)   # rejected: [(index, reason, detail), ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from producers.points import REASON_UNPARSABLE
from producers.wire import KIND_EMIT, KIND_POINT, KIND_REJECTED

SKIPPED: Final = None
"""What stands in the returned events at the index of a rejected one (never recorded)."""


def has_points(events: Sequence[Any]) -> bool:
    """True when some event is a point or a rejected input (the common batch has neither)."""
    return any(event.__class__ is list and event and event[0] in (KIND_POINT, KIND_REJECTED)
               for event in events)


def _rejection(event: list[Any]) -> tuple[str, str]:
    tags = event[3] if len(event) > 3 and isinstance(event[3], dict) else {}
    reason = tags.get("reason")
    detail = tags.get("detail")
    return (reason if isinstance(reason, str) and reason else REASON_UNPARSABLE,
            detail if isinstance(detail, str) else "input that is not a point")


def as_emits(events: Sequence[Any]) -> tuple[list[Any], list[tuple[int, str, str]]]:
    """The events with points as emits (same indexes), and ``(index, reason, detail)`` per rejected.

    A point whose time is not an integer keeps it as it is: validation then says what is wrong.
    """
    converted: list[Any] = list(events)
    rejected: list[tuple[int, str, str]] = []
    for index, event in enumerate(events):
        if event.__class__ is not list or not event:
            continue
        kind = event[0]
        if kind == KIND_POINT and len(event) == 5:
            ts = event[2]
            seconds = ts / 1e9 if ts.__class__ is int else ts
            converted[index] = [KIND_EMIT, event[1], seconds, event[3], event[4]]
        elif kind == KIND_REJECTED:
            converted[index] = SKIPPED
            rejected.append((index, *_rejection(event)))
    return converted, rejected


def runs(events: Sequence[Any]) -> list[tuple[int, list[Any]]]:
    """Consecutive events that are not :data:`SKIPPED`, each run with the index it starts at."""
    found: list[tuple[int, list[Any]]] = []
    current: list[Any] = []
    start = 0
    for index, event in enumerate(events):
        if event is SKIPPED:
            if current:
                found.append((start, current))
            current = []
            continue
        if not current:
            start = index
        current.append(event)
    if current:
        found.append((start, current))
    return found


__all__ = ["SKIPPED", "as_emits", "has_points", "runs"]
