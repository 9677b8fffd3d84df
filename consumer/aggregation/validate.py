"""Validation: one raw wire event becomes an :class:`~consumer.core.model.Event` or a dead-letter reason.

The producer ships whatever it was given (if msgpack could encode it); this is where the worker
decides what can become part of a point. Everything that InfluxDB would refuse, or that would
make a whole write batch fail, is caught here, one event at a time, so a bad event never holds
back the rest of its batch:

    invalid_event   not ``[kind, measurement, ts, tags, fields]``; unknown kind; ``ts`` not a
                    finite number in InfluxDB's time range; tags/fields not maps; a
                    ``count``/``gauge``/``observe`` without exactly one field
    invalid_name    a measurement, tag key, tag value or field key line protocol cannot carry
                    (:func:`consumer.sinks.line_protocol.name_problem`), or the reserved key ``time``
    invalid_value   NaN, +-inf, an integer outside int64, an over-long string, an unsupported
                    type; a ``count`` that is not an integer; a ``gauge``/``observe`` that is not
                    a number (``bool`` is not a number here)
    field_clash     two fields of the event generate the same output name (``x`` as a mean
                    writes ``x_min``, so a field ``x_min`` beside it clashes), or a field would
                    write ``event_count``
    type_conflict   the catalogue declares a field's semantics and the value cannot have them
                    (a bool for a declared mean, a float for a declared integer sum)

A tag whose value is the empty string is dropped: InfluxDB cannot store one, and leaving it out
is what a user means by "no value".

Which aggregation a field gets (its *semantics*) is decided here by :func:`resolve_semantics`
and used again by :mod:`consumer.aggregation.window`, so validation and aggregation cannot disagree on
which output fields a field writes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from consumer.aggregation.catalogue import MeasurementSpec, Semantics, lookup
from consumer.core.model import (
    REASON_FIELD_CLASH,
    REASON_INVALID_EVENT,
    REASON_INVALID_NAME,
    REASON_INVALID_VALUE,
    REASON_TYPE_CONFLICT,
    Event,
    FieldValue,
    Position,
)
from consumer.sinks.line_protocol import (
    INT64_MAX,
    INT64_MIN,
    MAX_TAG_VALUE_BYTES,
    RESERVED_KEYS,
    name_problem,
    value_problem,
)
from producers.wire import KIND_COUNT, KIND_EMIT, KIND_GAUGE, KIND_NAMES, KIND_OBSERVE

# Semantics codes: small ints, because the window compares them once per field per event.
MEAN: Final = 0
TRUE_COUNT: Final = 1
LAST_NUMBER: Final = 2
LAST_STRING: Final = 3
SUM: Final = 4
SUMMARY: Final = 5
SEMANTICS_NAMES: Final = ("mean", "true_count", "last_number", "last_string", "sum", "summary")
_OUTPUT_SEMANTICS: Final = (Semantics.MEAN, Semantics.TRUE, Semantics.LAST, Semantics.LAST, Semantics.SUM,
                            Semantics.SUMMARY)

EVENT_COUNT_FIELD: Final = "event_count"
MIN_TS_S: Final = INT64_MIN / 1e9 + 1.0
MAX_TS_S: Final = INT64_MAX / 1e9 - 3600.0
"""Event times whose window start still fits InfluxDB's int64 nanosecond timestamps."""

_NAME_CACHE_LIMIT: Final = 65_536
_good_names: set[str] = set()
"""Tag and field keys found valid (one rule set for both roles)."""
_good_measurements: set[str] = set()
"""Measurement names found valid: kept apart, since a measurement has rules of its own (``#``)."""
_good_tag_values: set[str] = set()
_good_shapes: set[tuple[object, ...]] = set()
"""Bounded memos of names, tag values and event shapes (kind, measurement, field names and value
types) already found valid: most events repeat a few shapes, so the full checks run rarely."""


def output_names(name: str, code: int) -> tuple[str, ...]:
    """The field keys written for a field ``name`` aggregated with semantics ``code``."""
    from consumer.aggregation.catalogue import output_fields

    return output_fields(name, _OUTPUT_SEMANTICS[code])


def resolve_semantics(kind: int, spec: MeasurementSpec | None, name: str, value: object) -> int | str:
    """The semantics code of a field, or a ``type_conflict`` detail when the catalogue forbids it.

    ``count``/``gauge``/``observe`` always use their own semantics; an ``emit`` is aggregated by
    its value type unless the catalogue declares the field (``consecutive_days`` as a gauge).
    """
    if kind == KIND_COUNT:
        return SUM
    if kind == KIND_GAUGE:
        return LAST_NUMBER
    if kind == KIND_OBSERVE:
        return SUMMARY
    declared = spec.semantics_of(name) if spec is not None else None
    if isinstance(value, bool):
        code: int | None = TRUE_COUNT if declared in (None, Semantics.TRUE) else None
    elif isinstance(value, str):
        code = LAST_STRING if declared in (None, Semantics.LAST) else None
    elif declared is None or declared is Semantics.MEAN:
        code = MEAN
    else:
        code = {Semantics.LAST: LAST_NUMBER, Semantics.SUMMARY: SUMMARY}.get(declared)
        if declared is Semantics.SUM and isinstance(value, int):
            code = SUM
    if code is None:
        return (f"field {name!r} is declared {declared} in the catalogue; "
                f"a {type(value).__name__} value cannot be aggregated that way")
    return code


def _short(value: object) -> str:
    """A bounded repr for dead-letter details (the payload itself is kept beside them)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_name(name: object, what: str) -> str | None:
    is_measurement = what == "measurement"
    memo = _good_measurements if is_measurement else _good_names
    if name.__class__ is str and name in memo:
        return None
    problem = name_problem(name, what=what)
    if problem is None and not is_measurement and name in RESERVED_KEYS:
        problem = f"{what} {name!r} is reserved by InfluxDB"
    if problem is None and name not in RESERVED_KEYS:
        if len(memo) >= _NAME_CACHE_LIMIT:
            memo.clear()
        memo.add(name)  # type: ignore[arg-type]
    return problem


def tags_known_good(tags: dict[Any, Any]) -> bool:
    """Every tag key and value is one validation has passed before: the tags are valid as they are.

    For the fast paths here and in :meth:`consumer.aggregation.window.ShardWindows.record_batch`
    (a new series); ``False`` sends the event through the full checks, which decide.
    """
    good_names, good_values = _good_names, _good_tag_values
    for key, value in tags.items():
        if key not in good_names or value.__class__ is not str or value not in good_values:
            return False
    return True


def learn_tags(tags: dict[Any, Any]) -> bool:
    """Whether ``tags`` are valid as they are (no problem, no empty value to drop), checking the
    names and values not known good yet, which then are.

    For :meth:`consumer.aggregation.window.ShardWindows.record_batch`'s new series: at high
    cardinality many carry a value never seen (a new user), and the full checks of the tags are
    what the one-by-one path would run first anyway. ``False`` sends the event that way, which
    decides.
    """
    clean, problem = _check_tags(tags)
    return problem is None and len(clean) == len(tags)


def _check_tags(tags: dict[Any, Any]) -> tuple[dict[str, str], str | None]:
    """The tags as they are when every name is known good (the common case), else the slow path."""
    return (tags, None) if tags_known_good(tags) else _check_tags_slowly(tags)


def _check_tags_slowly(tags: Mapping[Any, Any]) -> tuple[dict[str, str], str | None]:
    clean: dict[str, str] = {}
    for key, value in tags.items():
        if key not in _good_names:
            problem = _check_name(key, "tag key")
            if problem is not None:
                return clean, problem
        if value == "":
            continue  # InfluxDB cannot store an empty tag value: leaving the tag out is the same
        if value.__class__ is not str or value not in _good_tag_values:
            problem = name_problem(value, what=f"value of tag {key!r}", max_bytes=MAX_TAG_VALUE_BYTES)
            if problem is not None:
                return clean, problem
            if len(_good_tag_values) >= _NAME_CACHE_LIMIT:
                _good_tag_values.clear()
            _good_tag_values.add(value)
        clean[key] = value
    return clean, None


def _value_problem(kind: int, name: str, value: object) -> str | None:
    """Slow path of the value check (the common float/int cases are inline in _check_fields)."""
    cls = value.__class__
    if cls is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return None if kind != KIND_COUNT else f"count {name!r} is a float, not an integer"
        return f"field {name!r}: {value!r} is not a finite number"
    if cls is int:
        if INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
            return None
        return f"field {name!r}: integer {value} is outside the 64-bit range"
    if kind != KIND_EMIT:
        return f"{KIND_NAMES[kind]} {name!r} is a {cls.__name__}, not a number"
    problem = value_problem(value)
    return None if problem is None else f"field {name!r}: {problem}"


def _check_fields(kind: int, measurement: str, fields: Mapping[Any, Any],
                  aggregate: bool = True) -> tuple[str, str] | None:
    if kind != KIND_EMIT and len(fields) != 1:
        return REASON_INVALID_EVENT, f"a {KIND_NAMES[kind]} carries exactly one field, not {len(fields)}"
    for name, value in fields.items():
        if name not in _good_names:
            problem = _check_name(name, "field key")
            if problem is not None:
                return REASON_INVALID_NAME, problem
        cls = value.__class__
        if cls is float and value - value == 0.0 and kind != KIND_COUNT:
            continue  # finite (NaN and infinities give NaN here)
        if cls is int and INT64_MIN <= value <= INT64_MAX:
            continue
        if cls is bool and kind == KIND_EMIT:
            continue
        problem = _value_problem(kind, name, value)
        if problem is not None:
            return REASON_INVALID_VALUE, problem
    # raw mode writes fields as given: no generated names to clash, no declared semantics
    return _check_shape(kind, measurement, fields) if aggregate else None


def _check_shape(kind: int, measurement: str, fields: Mapping[Any, Any]) -> tuple[str, str] | None:
    """The clash and catalogue checks, once per shape (kind, measurement, field names, value types)."""
    shape = (kind, measurement, *fields, *map(type, fields.values()))
    if shape in _good_shapes:
        return None
    failure = _clash(kind, measurement, fields)
    if failure is None:
        if len(_good_shapes) >= _NAME_CACHE_LIMIT:
            _good_shapes.clear()
        _good_shapes.add(shape)
    return failure


def _clash(kind: int, measurement: str, fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """Generated names must be distinct within the event (and never ``event_count``)."""
    spec = lookup(measurement)
    owner: dict[str, str] = {EVENT_COUNT_FIELD: EVENT_COUNT_FIELD}
    for name, value in fields.items():
        code = resolve_semantics(kind, spec, name, value)
        if isinstance(code, str):
            return REASON_TYPE_CONFLICT, code
        for output in output_names(name, code):
            other = owner.get(output)
            if other is not None:
                what = "the per-event count" if other == EVENT_COUNT_FIELD else f"field {other!r}"
                return REASON_FIELD_CLASH, f"field {name!r} writes {output!r}, as does {what}"
            owner[output] = name
    return None


def validate(raw: object, position: Position, *, aggregate: bool = True) -> Event | tuple[str, str]:
    """Turn one wire event ``[kind, measurement, ts, tags, fields]`` into an Event, or say why not.

    ``aggregate=False`` is for a measurement in raw mode, whose fields are written as given: the
    checks of generated names (``field_clash``) and of the catalogue's semantics do not apply.

    Returns:
        The :class:`Event` (tags with empty values dropped), or ``(reason, detail)`` with a reason
        from :data:`consumer.core.model.DEAD_LETTER_REASONS`.

    Example::

        result = validate([0, "attachment_monitoring", 1700000000.5, {"bot_name": "elena"},
                           {"emotional_intensity": 0.82}], Position(1700000000000, 0, 0))
        if isinstance(result, tuple):
            reason, detail = result        # dead-letter it
    """
    if raw.__class__ is list and len(raw) == 5:
        event = _validate_known_shape(raw, position)
        if event is not None:
            return event
    return _validate_fully(raw, position, aggregate)


def _validate_known_shape(raw: list[Any], position: Position) -> Event | None:
    """The event when its shape was found valid before and its tags and values pass, else ``None``.

    A shape (kind, measurement, field names, value types) enters :data:`_good_shapes` only after
    the full checks passed, so the kind, the names, the field count and the clash checks hold for
    every event of that shape; what can still differ is checked here: the event time, the tags, and
    the values that can be out of range (a float NaN or infinite, an int outside int64). Anything
    else (a string value, an unseen tag) returns ``None`` and the full path decides, so both paths
    give the same result.
    """
    kind, measurement, ts, tags, fields = raw
    if (kind.__class__ is not int or measurement.__class__ is not str or fields.__class__ is not dict
            or tags.__class__ is not dict):
        return None
    cls = ts.__class__
    if (cls is not float and cls is not int) or not MIN_TS_S <= ts <= MAX_TS_S:
        return None
    if (kind, measurement, *fields, *map(type, fields.values())) not in _good_shapes:
        return None
    if not tags_known_good(tags):
        return None
    for value in fields.values():
        cls = value.__class__
        if cls is float:
            if value - value != 0.0:  # NaN and infinities give NaN here
                return None
        elif cls is int:
            if not INT64_MIN <= value <= INT64_MAX:
                return None
        elif cls is not bool:
            return None
    return make_event(kind, measurement, float(ts), tags, fields, position)


def _validate_fully(raw: object, position: Position, aggregate: bool = True) -> Event | tuple[str, str]:
    """Every check, in the order that decides which reason a bad event gets."""
    if (raw.__class__ is not list and not isinstance(raw, tuple)) or len(raw) != 5:
        return REASON_INVALID_EVENT, "an event is an array [kind, measurement, ts, tags, fields]"
    kind, measurement, ts, tags, fields = raw
    if kind.__class__ is not int or kind not in KIND_NAMES:
        return REASON_INVALID_EVENT, f"unknown kind {_short(kind)}"
    problem = _check_name(measurement, "measurement")
    if problem is not None:
        return REASON_INVALID_NAME, problem
    if ts.__class__ not in (float, int) or not MIN_TS_S <= ts <= MAX_TS_S:
        return REASON_INVALID_EVENT, f"event time {_short(ts)} is not seconds within InfluxDB's time range"
    if tags.__class__ is not dict or fields.__class__ is not dict:
        return REASON_INVALID_EVENT, "tags and fields must be maps"
    clean_tags, problem = _check_tags(tags)
    if problem is not None:
        return REASON_INVALID_NAME, problem
    failure = _check_fields(kind, measurement, fields, aggregate)
    if failure is not None:
        return failure
    checked: dict[str, FieldValue] = fields
    return make_event(kind, measurement, float(ts), clean_tags, checked, position)


_EventMaker = Callable[[int, str, float, dict[str, str], dict[str, FieldValue], Position], Event]


def _fast_event_maker() -> _EventMaker:
    """A constructor for Event that skips the frozen dataclass's per-attribute ``__setattr__``.

    ``Event(...)`` costs about as much as the rest of validation together, because a frozen
    dataclass sets each attribute through ``object.__setattr__``. Its slots' descriptors set them
    directly, with the same result. Used only while Event's fields are exactly the expected ones.
    """
    names = ("kind", "measurement", "ts", "tags", "fields", "position")
    if tuple(f.name for f in dataclasses.fields(Event)) != names:
        return Event
    kind_, measurement_, ts_, tags_, fields_, position_ = (Event.__dict__[name].__set__ for name in names)
    new = object.__new__

    def make(kind: int, measurement: str, ts: float, tags: dict[str, str],
             fields: dict[str, FieldValue], position: Position) -> Event:
        event: Event = new(Event)
        kind_(event, kind)
        measurement_(event, measurement)
        ts_(event, ts)
        tags_(event, tags)
        fields_(event, fields)
        position_(event, position)
        return event

    return make


make_event: Final = _fast_event_maker()
"""``Event(kind, measurement, ts, tags, fields, position)``, without the frozen-dataclass overhead."""
