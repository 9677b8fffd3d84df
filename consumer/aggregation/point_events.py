"""Point events (kinds 4 and 5 of ``producers/wire.py``) as the worker's windows read them.

Why a module of its own: a point that arrived through ``tel.write`` (an ``influxdb_client.Point``,
line protocol or a dict) is an event like any ``emit``: its fields follow the same catalogue and
aggregation. Its time travels as exact integer nanoseconds, so it is an emit with float seconds
to the windows; a rejected input (kind 5, input that was not a point) is dead-lettered with the
reason and detail the producer found, and its line as the payload. The windows look at each
event's kind anyway (:meth:`consumer.aggregation.window.ShardWindows.record_batch`): that is where these are
called, so a batch without points pays nothing for them.

Usage::

    if raw[0] == KIND_POINT and len(raw) == 5:
        raw = as_emit(raw)                 # [0, measurement, seconds, tags, fields]
    elif raw[0] == KIND_REJECTED:
        reason, detail = input_rejection(raw)
"""

from __future__ import annotations

from typing import Any

from producers.points import REASON_UNPARSABLE
from producers.wire import KIND_EMIT


def as_emit(event: list[Any]) -> list[Any]:
    """A 5-item point as the emit it stands for: its time in seconds when it is an integer (ns).

    A point whose time is not an integer keeps it as it is: validation then says what is wrong.
    """
    ts = event[2]
    return [KIND_EMIT, event[1], ts / 1e9 if ts.__class__ is int else ts, event[3], event[4]]


def input_rejection(event: list[Any]) -> tuple[str, str]:
    """The ``(reason, detail)`` a producer put in a rejected input's tags (with defaults)."""
    tags = event[3] if len(event) > 3 and isinstance(event[3], dict) else {}
    reason = tags.get("reason")
    detail = tags.get("detail")
    return (reason if isinstance(reason, str) and reason else REASON_UNPARSABLE,
            detail if isinstance(detail, str) else "input that is not a point")


__all__ = ["as_emit", "input_rejection"]
