"""An obviously-correct model of the aggregation semantics, for property tests of ShardWindows.

It keeps every accepted event and, when asked, recomputes every point from scratch (sorting for
"last" and exact quantiles), with no incremental state, versions or sketches. Acceptance follows
the rules of ``docs/semantics.md`` in arrival order: from_future, too_late (against the watermark
of the events accepted so far), type_conflict/field_clash (against the fields registered so far),
and the cardinality guard (series admitted per measurement-window in arrival order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from consumer.aggregation.catalogue import lookup
from consumer.aggregation.validate import (
    EVENT_COUNT_FIELD,
    LAST_NUMBER,
    LAST_STRING,
    MEAN,
    SUM,
    SUMMARY,
    TRUE_COUNT,
    output_names,
    resolve_semantics,
)
from consumer.aggregation.window import OVERFLOW_VALUE
from consumer.core.model import Event

PointKey = tuple[str, tuple[tuple[str, str], ...], int]


@dataclass
class ReferenceModel:
    window_s: float
    grace_s: float
    allowed_lateness_s: float
    max_future_s: float
    max_series: int
    overflow_tags: tuple[str, ...] = ("user_id",)
    watermark: float | None = None
    accepted: list[tuple[int, tuple[str, tuple[tuple[str, str], ...]], Event]] = field(default_factory=list)
    registry: dict[str, dict[str, int]] = field(default_factory=dict)
    admitted: dict[tuple[int, str], list[tuple[tuple[str, str], ...]]] = field(default_factory=dict)

    def record(self, event: Event, now_s: float) -> tuple[str, str] | None:
        if event.ts > now_s + self.max_future_s:
            return ("from_future", "")
        index = math.floor(event.ts / self.window_s)
        horizon = None if self.watermark is None else self.watermark - self.allowed_lateness_s
        if horizon is not None and (index + 1) * self.window_s < horizon:
            return ("too_late", "")
        problem = self._check_types(event)
        if problem is not None:
            return problem
        registry = self.registry.setdefault(event.measurement, {})
        for name, value in event.fields.items():
            registry[name] = resolve_semantics(event.kind, lookup(event.measurement), name, value)  # type: ignore[assignment]
        tags = tuple(sorted(event.tags.items()))
        self.accepted.append((index, (event.measurement, self._admit(index, event.measurement, tags)), event))
        self.watermark = event.ts if self.watermark is None else max(self.watermark, event.ts)
        return None

    def _check_types(self, event: Event) -> tuple[str, str] | None:
        registry = self.registry.get(event.measurement, {})
        owners = {EVENT_COUNT_FIELD: EVENT_COUNT_FIELD}
        for name, code in registry.items():
            for output in output_names(name, code):
                owners[output] = name
        for name, value in event.fields.items():
            code = resolve_semantics(event.kind, lookup(event.measurement), name, value)
            if isinstance(code, str):
                return ("type_conflict", "")
            if name in registry:
                if registry[name] != code:
                    return ("type_conflict", "")
                continue
            for output in output_names(name, code):
                if owners.get(output, name) != name:
                    return ("field_clash", "")
                owners[output] = name
        return None

    def _admit(self, index: int, measurement: str,
               tags: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        seen = self.admitted.setdefault((index, measurement), [])
        if tags in seen:
            return tags
        if len(seen) >= self.max_series:
            has_overflow_tag = any(k in self.overflow_tags for k, _ in tags)
            if len(seen) < 2 * self.max_series and has_overflow_tag:
                tags = tuple((k, OVERFLOW_VALUE if k in self.overflow_tags else v) for k, v in tags)
            else:
                tags = tuple((k, OVERFLOW_VALUE) for k, _ in tags)
            if tags in seen:
                return tags
        seen.append(tags)
        return tags

    def points(self) -> dict[PointKey, dict[str, Any]]:
        """Every point, recomputed from all accepted events."""
        groups: dict[PointKey, list[Event]] = {}
        for index, (measurement, tags), event in self.accepted:
            time_ns = index * round(self.window_s * 1e9)
            groups.setdefault((measurement, tags, time_ns), []).append(event)
        return {key: self._fields(key[0], events) for key, events in groups.items()}

    def _fields(self, measurement: str, events: list[Event]) -> dict[str, Any]:
        out: dict[str, Any] = {EVENT_COUNT_FIELD: len(events)}
        names = {name for event in events for name in event.fields}
        for name in names:
            code = self.registry[measurement][name]
            carrying = [event for event in events if name in event.fields]
            values = [event.fields[name] for event in carrying]
            if code == MEAN:
                total = 0.0
                for value in values:
                    total += value  # type: ignore[operator]
                out[name] = total / len(values)
                out[name + "_min"] = float(min(values))  # type: ignore[type-var, arg-type]
                out[name + "_max"] = float(max(values))  # type: ignore[type-var, arg-type]
                out[name + "_sum"] = total
            elif code == TRUE_COUNT:
                out[name] = sum(1 for value in values if value)
            elif code == SUM:
                out[name] = sum(values)  # type: ignore[arg-type]
            elif code in (LAST_NUMBER, LAST_STRING):
                last = max(carrying, key=lambda event: (event.ts, event.position))
                value = last.fields[name]
                out[name] = float(value) if code == LAST_NUMBER else value
            else:
                assert code == SUMMARY
                ordered = sorted(float(v) for v in values)  # type: ignore[arg-type]
                total = 0.0
                for value in values:
                    total += value  # type: ignore[operator]
                out[name + "_count"] = len(values)
                out[name + "_sum"] = total
                out[name + "_min"] = ordered[0]
                out[name + "_max"] = ordered[-1]
                out[name + "_mean"] = total / len(values)
                for suffix, q in (("_p50", 0.5), ("_p90", 0.9), ("_p99", 0.99)):
                    out[name + suffix] = ordered[math.floor(q * (len(ordered) - 1))]
        return out
