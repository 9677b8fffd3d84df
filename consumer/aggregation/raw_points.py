"""Raw mode: the input points of raw measurements, held until written, each written as itself.

A measurement in raw mode (catalogue entry ``mode=raw``, or ``TELEMETRY_RAW_MEASUREMENTS`` for
one that is not catalogued) is not aggregated: each validated input point becomes one InfluxDB
point with the same measurement, tags (pseudonymised when privacy is on), fields and timestamp.
A point given to ``tel.write`` keeps its exact integer nanoseconds; an ``emit`` (float seconds)
is written to the microsecond, which is all a float of seconds holds; ``gauge``/``observe``
values are floats and ``count`` values integers, as in aggregate mode.

Why the pending points live in the shard's window state (:class:`~consumer.aggregation.window.ShardWindows`
holds a :class:`RawPoints`): the worker's checkpoint acknowledges stream entries only together
with the state that contains their effects. A raw point is pending from the entry that carried it
until the sink has it; it is then dropped (:meth:`RawPoints.commit`) and the next checkpoint no
longer holds it. A crash after the write and before that checkpoint restores it as pending and
writes it again: the same series and timestamp, so InfluxDB overwrites it with identical fields
and nothing is doubled. Pending points count against the worker's memory budget
(``TELEMETRY_MAX_OPEN_SERIES``), so reading pauses while the sink cannot take them.

Types: per measurement, a field keeps the type it was first written with (bool, int, float,
string); another is ``type_conflict`` here rather than a write InfluxDB refuses.
"""

from __future__ import annotations

from typing import Any, Final

from consumer.aggregation.catalogue import CATALOGUE, Mode, has_raw_entries, mode_of
from consumer.core.model import REASON_TOO_MANY_FIELDS, REASON_TYPE_CONFLICT, Event, FieldValue, Point
from producers.wire import KIND_GAUGE, KIND_OBSERVE

MAX_RAW_FIELDS: Final = 1_000
"""Distinct field names per raw measurement (as in aggregate mode: a name made from data is a tag)."""
_TYPE_NAMES: Final = {bool: "bool", int: "int", float: "float", str: "string"}
_MEMO_LIMIT: Final = 65_536


class RawPoints:
    """Which measurements are raw, their pending points and their field types."""

    __slots__ = ("_base", "_memo", "_patterns", "_pending", "_types", "enabled")

    def __init__(self, patterns: tuple[str, ...] = ()) -> None:
        self._patterns = tuple(patterns)
        self.enabled = bool(self._patterns) or has_raw_entries()
        """False when nothing can be raw: the windows then never ask."""
        self._memo: dict[str, bool] = {}
        self._pending: list[Point] = []
        self._base = 0  # how many points were committed before ``_pending[0]`` (marks are absolute)
        self._types: dict[str, dict[str, str]] = {}  # measurement -> field -> type name

    def __len__(self) -> int:
        """Points accepted and not yet written."""
        return len(self._pending)

    def is_raw(self, measurement: str) -> bool:
        """Whether ``measurement`` is in raw mode (memoised: asked once per event)."""
        raw = self._memo.get(measurement)
        if raw is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            raw = self._memo[measurement] = mode_of(measurement, self._patterns) is Mode.RAW
        return raw

    def add(self, event: Event, time_ns: int) -> tuple[str, str] | None:
        """Hold ``event`` (validated) as a point at ``time_ns``; ``(reason, detail)`` when it cannot be.

        Reasons: ``type_conflict`` (a field written with another type before), ``too_many_fields``.
        A rejected event changes nothing.
        """
        fields: dict[str, FieldValue] = event.fields
        if event.kind in (KIND_GAUGE, KIND_OBSERVE):
            fields = {name: float(value) for name, value in fields.items()}
        known = self._types.get(event.measurement)
        new: dict[str, str] = {}
        for name, value in fields.items():
            type_name = _TYPE_NAMES[value.__class__]
            before = known.get(name) if known is not None else None
            if before is None:
                new[name] = type_name
            elif before != type_name:
                return REASON_TYPE_CONFLICT, (f"field {name!r} of {event.measurement!r} was written as "
                                              f"{before} before; this point has a {type_name}")
        if new:
            count = len(known) if known is not None else 0
            if count + len(new) > MAX_RAW_FIELDS:
                return REASON_TOO_MANY_FIELDS, (
                    f"{event.measurement!r} already has {count} distinct fields, the limit is "
                    f"{MAX_RAW_FIELDS} (a field name built from data, such as a user id, belongs in a tag)")
            self._types.setdefault(event.measurement, {}).update(new)
        tags = tuple(sorted(event.tags.items()))
        self._pending.append(Point(event.measurement, tags, dict(fields), time_ns))
        return None

    def collect(self) -> tuple[list[Point], int]:
        """The pending points, and the mark :meth:`commit` takes once the sink has them."""
        return list(self._pending), self._base + len(self._pending)

    def commit(self, mark: int) -> None:
        """The points up to ``mark`` are written: drop them (those added since stay pending)."""
        done = mark - self._base
        if done > 0:
            del self._pending[:done]
            self._base = mark

    # -- checkpointing ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Pending points and field types for a snapshot; empty when raw mode was never used."""
        if not self._pending and not self._types:
            return {}
        pending = [[p.measurement, [item for pair in p.tags for item in pair], p.fields, p.time_ns]
                   for p in self._pending]
        return {"raw": pending, "rawt": self._types}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state` stored (a snapshot without raw mode has neither key)."""
        self._types = {name: dict(types) for name, types in state.get("rawt", {}).items()}
        self._pending = [Point(m, tuple(zip(flat[0::2], flat[1::2], strict=True)), fields, time_ns)
                         for m, flat, fields, time_ns in state.get("raw", [])]
        self._base = 0


def catalogued_names(patterns: tuple[str, ...]) -> list[str]:
    """The patterns that name a catalogued measurement: its entry's mode wins, so they do nothing."""
    return [pattern for pattern in patterns if pattern in CATALOGUE]


__all__ = ["MAX_RAW_FIELDS", "RawPoints", "catalogued_names"]
