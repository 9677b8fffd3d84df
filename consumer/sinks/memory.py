"""An in-memory sink that behaves like InfluxDB where it matters, for tests (ours and users').

Points are kept by (measurement, tags, time): a later write of the same point replaces the
fields it carries and keeps the others, as InfluxDB does. A field keeps the type it was first
written with (per measurement); a point that changes it is rejected with InfluxDB's wording
("field type conflict"), so worker tests see the same rejections as production. The sink can be
told to fail (:meth:`MemorySink.fail_next`) or to be down (:attr:`MemorySink.down`) for fault
tests.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Final

from consumer.core.model import FieldValue, Point
from consumer.sinks.base import SinkError, SinkUnavailable, WriteResult

PointKey = tuple[str, tuple[tuple[str, str], ...], int]

_TYPE_NAMES: Final = {bool: "boolean", int: "integer", float: "float", str: "string"}


def _type_name(value: FieldValue) -> str:
    return _TYPE_NAMES[type(value)]


class MemorySink:
    """Points in a dict, with InfluxDB's overwrite and field-type rules.

    Usage::

        sink = MemorySink()
        worker = Worker(config, sink=sink)          # or any code that takes a Sink
        ...
        assert sink.fields("attachment_monitoring", user_id="u42") == {"event_count": 3, ...}
        sink.fail_next(2, retry_after_s=1.0)        # the next two writes raise SinkUnavailable
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._points: dict[PointKey, dict[str, FieldValue]] = {}
        self._field_types: dict[tuple[str, str], str] = {}
        self._failures: list[SinkError] = []
        self.down = False
        """While True, every write raises SinkUnavailable and ping() is False."""
        self.closed = False
        self.write_calls = 0
        """Calls to write(), including failed ones."""
        self.batches: list[list[Point]] = []
        """Every batch of which at least one point was stored, as given (rejected points too), in order."""

    # -- the Sink protocol ---------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> WriteResult:
        with self._lock:
            self.write_calls += 1
            if self.closed:
                raise SinkError("memory sink is closed")
            if self._failures:
                raise self._failures.pop(0)
            if self.down:
                raise SinkUnavailable("memory sink is down")
            result = WriteResult(written=0)
            for point in points:
                problem = self._type_problem(point)
                if problem:
                    result.rejected.append((point, problem))
                    continue
                for key, value in point.fields.items():
                    self._field_types.setdefault((point.measurement, key), _type_name(value))
                self._points.setdefault((point.measurement, point.tags, point.time_ns), {}).update(
                    point.fields)
                result.written += 1
            if result.written:
                self.batches.append(list(points))
            return result

    def ping(self) -> bool:
        return not (self.down or self.closed)

    def close(self) -> None:
        self.closed = True

    # -- fault injection -----------------------------------------------------------------------

    def fail_next(self, times: int = 1, *, retry_after_s: float | None = None,
                  error: SinkError | None = None) -> None:
        """Make the next ``times`` writes raise ``error`` (default SinkUnavailable) and store nothing."""
        with self._lock:
            for _ in range(times):
                self._failures.append(error or SinkUnavailable(
                    "memory sink: injected failure", retry_after_s=retry_after_s))

    # -- reading back --------------------------------------------------------------------------

    def points(self, measurement: str | None = None) -> list[Point]:
        """Stored points (merged as InfluxDB would), sorted by measurement, tags and time."""
        with self._lock:
            items = sorted(self._points.items(), key=lambda item: item[0])
        return [Point(m, tags, dict(fields), t) for (m, tags, t), fields in items
                if measurement is None or m == measurement]

    def get(self, measurement: str, tags: Mapping[str, str] | None, time_ns: int) -> dict[str, FieldValue]:
        """Fields of one point; KeyError when there is none."""
        key = (measurement, tuple(sorted((tags or {}).items())), time_ns)
        with self._lock:
            return dict(self._points[key])

    def fields(self, measurement: str, **tags: str) -> dict[str, FieldValue]:
        """Fields of the only point of one series (exact tag set); AssertionError unless exactly one."""
        wanted = tuple(sorted(tags.items()))
        found = [p.fields for p in self.points(measurement) if p.tags == wanted]
        if len(found) != 1:  # raised, not asserted: it must hold under ``python -O`` too
            raise AssertionError(f"{len(found)} points for {measurement} {dict(wanted)}")
        return found[0]

    def series(self, measurement: str | None = None) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        """Distinct (measurement, tags) written."""
        return {p.series for p in self.points(measurement)}

    def as_rows(self) -> dict[PointKey, dict[str, FieldValue]]:
        """Everything, as a plain dict to compare whole with ``==``."""
        with self._lock:
            return {key: dict(fields) for key, fields in self._points.items()}

    def clear(self) -> None:
        """Forget points and field types (the failure schedule is kept)."""
        with self._lock:
            self._points.clear()
            self._field_types.clear()
            self.batches.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._points)

    def _type_problem(self, point: Point) -> str | None:
        for key, value in point.fields.items():
            kind = _type_name(value)
            existing = self._field_types.get((point.measurement, key))
            if existing is not None and existing != kind:
                return (f'field type conflict: input field "{key}" on measurement '
                        f'"{point.measurement}" is type {kind}, already exists as type {existing}')
        return None
