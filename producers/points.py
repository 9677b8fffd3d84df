"""InfluxDB points into events: line protocol, ``influxdb_client.Point`` objects and dicts.

Why here, in the producer package: ``tel.write(record)`` (Python) and ``telemetry listen`` (HTTP)
both accept what InfluxDB's write APIs accept, and both must turn it into the same
``KIND_POINT`` events (``producers/wire.py``) so that a point means one thing whichever way it
came. The producer depends on ``redis`` and ``msgpack`` only, so a ``Point`` is read by its
attributes (``_name``, ``_tags``, ``_fields``, ``_time``, ``_write_precision``,
``_field_types``) and influxdb-client is never imported.

Line protocol as InfluxDB reads it (``measurement[,tag=value...] field=value[,...] [timestamp]``):
``\\,`` and ``\\ `` escape in the measurement, ``\\,``, ``\\=`` and ``\\ `` in keys and tag values,
``\\"`` and ``\\\\`` inside double-quoted string fields; field values are floats (``1``, ``-1.5``,
``1e3``), integers (``1i``), unsigned integers (``1u``, kept as ``int``), booleans
(``t``/``true``/``True``/``TRUE`` and the ``f`` forms) or strings. Blank lines and ``#``
comments are skipped. A line is one line: a newline inside a string field ends it (write ``\\n``
in the string's text instead). What is not line protocol becomes a :class:`LineError` naming its
1-based line number, and the other lines go through.

Usage::

    events, errors = parse_lines(b"cpu,host=a usage=0.5,busy=true 1700000000000000000")
    # events == [(4, "cpu", 1700000000000000000, {"host": "a"}, {"usage": 0.5, "busy": True})]
    events, errors = record_events([point, {"measurement": "m", "fields": {"x": 1}}], "ms")
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, NamedTuple

from producers.wire import KIND_POINT, KIND_REJECTED

PointEvent = tuple[int, str, int, dict[str, str], dict[str, Any]]

PRECISION_NS: Final[dict[str, int]] = {
    "ns": 1, "n": 1, "us": 1_000, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
    "m": 60_000_000_000, "h": 3_600_000_000_000,
}
REASON_UNPARSABLE: Final = "unparsable_line"
MAX_ERROR_LINE_CHARS: Final = 1_000

_TRUE: Final = frozenset(("t", "T", "true", "True", "TRUE"))
_FALSE: Final = frozenset(("f", "F", "false", "False", "FALSE"))
_MEASUREMENT_UNESCAPE: Final = re.compile(r"\\([, ])")
_KEY_UNESCAPE: Final = re.compile(r"\\([,= ])")
_STRING_UNESCAPE: Final = re.compile(r'\\(["\\])')
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
_TIME_MIN_NS: Final = -(2**63) + 2  # InfluxDB keeps the two extreme values for itself
_TIME_MAX_NS: Final = 2**63 - 2


class LineError(NamedTuple):
    """One input that is not a point: where it was (1-based), why, and its text (shortened)."""

    lineno: int
    reason: str
    detail: str
    line: str


class _Unparsable(ValueError):
    """Raised inside the parser; becomes a :class:`LineError` with the line's number."""


def precision_factor(precision: str | None) -> int:
    """Nanoseconds per unit of ``precision`` (``None`` is ns); ``ValueError`` naming a bad one."""
    if precision is None:
        return 1
    factor = PRECISION_NS.get(str(getattr(precision, "value", precision)).lower())
    if factor is None:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISION_NS)}")
    return factor


# -- line protocol ---------------------------------------------------------------------------

def _number(text: str) -> int | float | bool:
    """An unquoted field value."""
    if not text:
        raise _Unparsable("empty field value")
    if "_" in text or not text.isascii():  # Python's int()/float() accept 1_000 and "١"; InfluxDB does not
        raise _Unparsable(f"invalid field value {text!r}")
    last = text[-1]
    try:
        if last == "i":
            value = int(text[:-1])
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise _Unparsable(f"integer field value {text!r} is out of the 64-bit range")
            return value
        if last == "u":
            value = int(text[:-1])
            if not 0 <= value <= _UINT64_MAX:
                raise _Unparsable(f"unsigned field value {text!r} is out of the unsigned 64-bit range")
            return value
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        number = float(text)
    except ValueError:
        raise _Unparsable(f"invalid field value {text!r}") from None
    if not math.isfinite(number) or text[0] not in "-.0123456789":
        raise _Unparsable(f"invalid field value {text!r}")
    return number


def _timestamp(text: str, factor: int) -> int:
    if not (text.isascii() and text.lstrip("-").isdigit()):   # int() also takes "1_0" and "٣"
        raise _Unparsable(f"invalid timestamp {text!r}")
    ts = int(text) * factor
    if not _TIME_MIN_NS <= ts <= _TIME_MAX_NS:
        raise _Unparsable(f"timestamp {text!r} is outside InfluxDB's time range")
    return ts


def _tags(parts: list[str], unescape: bool) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in parts:
        key, sep, value = _split_first(part, "=") if unescape else part.partition("=")
        if not sep or not key or not value:
            raise _Unparsable(f"invalid tag {part!r}: want key=value")
        if unescape:
            key, value = _KEY_UNESCAPE.sub(r"\1", key), _KEY_UNESCAPE.sub(r"\1", value)
        tags[key] = value
    if len(tags) != len(parts):
        raise _Unparsable("duplicate tags")
    return tags


def _unescaped(text: str, sep: str) -> Iterator[int]:
    """The positions of ``sep`` in ``text`` that no backslash escapes."""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == sep:
            yield i
        i += 1


def _split_first(text: str, sep: str) -> tuple[str, str, str]:
    """``str.partition`` at the first ``sep`` not escaped by a backslash."""
    i = next(_unescaped(text, sep), None)
    return (text, "", "") if i is None else (text[:i], sep, text[i + 1:])


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split at every ``sep`` not escaped by a backslash."""
    parts: list[str] = []
    start = 0
    for i in _unescaped(text, sep):
        parts.append(text[start:i])
        start = i + 1
    parts.append(text[start:])
    return parts


_PARSED_MAX: Final = 65_536
"""Entries of each parse cache below before it starts afresh (bounded memory, whatever the input)."""
_series_seen: dict[str, tuple[str, dict[str, str]]] = {}
_values_seen: dict[str, int | float | bool] = {}


def _plain_series(text: str) -> tuple[str, dict[str, str]]:
    """``measurement[,tag=value...]`` without escapes, parsed once per distinct text.

    Bodies repeat their series line after line (the same user, bot and measurement), so the
    measurement and tag dict are kept by their text; events share the tag dict, which nothing
    downstream mutates.
    """
    parsed = _series_seen.get(text)
    if parsed is None:
        measurement, _, tag_text = text.partition(",")
        if not measurement:
            raise _Unparsable("missing measurement")
        parsed = measurement, (_tags(tag_text.split(","), False) if tag_text else {})
        if len(_series_seen) >= _PARSED_MAX:
            _series_seen.clear()
        _series_seen[text] = parsed
    return parsed


def _plain_value(text: str) -> int | float | bool:
    """:func:`_number`, remembered per text: field values repeat (flags, counts, rounded scores)."""
    value = _values_seen.get(text)
    if value is None:
        value = _number(text)
        if len(_values_seen) >= _PARSED_MAX:
            _values_seen.clear()
        _values_seen[text] = value
    return value


def _fast_line(line: str, factor: int, default_ns: int) -> PointEvent:
    """A line with no backslash and no double quote: plain splits (the common case)."""
    sections = line.split(" ")
    if "" in sections:  # runs of spaces between sections are allowed, as InfluxDB allows them
        sections = [section for section in sections if section]
    if len(sections) == 3:
        series, field_text, stamp = sections
        ts = _timestamp(stamp, factor)
    elif len(sections) == 2:
        series, field_text = sections
        ts = default_ns
    else:
        raise _Unparsable("want 'measurement[,tags] fields [timestamp]' separated by single spaces")
    measurement, tags = _plain_series(series)
    fields: dict[str, Any] = {}
    for part in field_text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise _Unparsable(f"invalid field {part!r}: want key=value")
        fields[key] = _plain_value(value)
    return KIND_POINT, measurement, ts, tags, fields


# key=value followed by the separator: "," (another field), " " (the timestamp) or the end.
_FIELD: Final = re.compile(r'((?:[^=\\ ,]|\\.)+)=("(?:[^"\\]|\\.)*"|[^ ,"]*)(,| |$)', re.DOTALL)


def _field_section(text: str) -> tuple[dict[str, Any], str | None]:
    """Fields of ``k=v,k="s",...`` up to the first unescaped space outside a string, and the rest.

    Quotes matter only where a value starts: a ``"`` inside a key is an ordinary character.
    """
    fields: dict[str, Any] = {}
    pos, size = 0, len(text)
    while True:
        match = _FIELD.match(text, pos)
        if match is None:
            rest = text[pos:]
            what = "unterminated string field" if '="' in rest else f"invalid field {rest.split(',')[0]!r}"
            raise _Unparsable(what + ("" if what[0] == "u" else ": want key=value"))
        key, value, sep = match.groups()
        key = _KEY_UNESCAPE.sub(r"\1", key) if "\\" in key else key
        if value[:1] == '"':
            fields[key] = _STRING_UNESCAPE.sub(r"\1", value[1:-1]) if "\\" in value else value[1:-1]
        else:
            fields[key] = _number(value)
        pos = match.end()
        if sep == ",":
            continue
        if sep == " ":
            return fields, text[pos:]
        if pos < size:
            raise _Unparsable(f"invalid field {text[pos:]!r}")
        return fields, None


def _escaped_line(line: str, factor: int, default_ns: int) -> PointEvent:
    """A line with escapes or string fields: split at unescaped, unquoted separators."""
    escaped = "\\" in line
    series_text, sep, rest = _split_first(line, " ") if escaped else line.partition(" ")
    if not sep:
        raise _Unparsable("want 'measurement[,tags] fields [timestamp]' separated by single spaces")
    series = _split_unescaped(series_text, ",") if escaped else series_text.split(",")
    measurement = _MEASUREMENT_UNESCAPE.sub(r"\1", series[0]) if escaped else series[0]
    if not measurement:
        raise _Unparsable("missing measurement")
    tags = _tags(series[1:], escaped) if len(series) > 1 else {}
    fields, stamp = _field_section(rest.lstrip(" "))
    stamp = stamp.strip(" ") if stamp is not None else None
    if stamp is not None and (not stamp or " " in stamp):
        raise _Unparsable("want 'measurement[,tags] fields [timestamp]' separated by single spaces")
    ts = default_ns if stamp is None else _timestamp(stamp, factor)
    return KIND_POINT, measurement, ts, tags, fields


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_ERROR_LINE_CHARS else text[:MAX_ERROR_LINE_CHARS] + "…"


def parse_lines(
    data: str | bytes | bytearray, precision: str | None = "ns", default_ns: int | None = None
) -> tuple[list[PointEvent], list[LineError]]:
    """Every point of a line-protocol body, and an error per line that is not one.

    ``default_ns`` is the time of lines without a timestamp (now, taken once, when ``None``).
    Raises ``ValueError`` only for an unknown ``precision``.
    """
    factor = precision_factor(precision)
    now_ns = time.time_ns() if default_ns is None else default_ns
    text = data.decode("utf-8", "replace") if isinstance(data, bytes | bytearray | memoryview) else data
    events: list[PointEvent] = []
    errors: list[LineError] = []
    append = events.append
    plain = "\\" not in text and '"' not in text   # no line needs the escape-aware parser
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        try:
            if plain or ("\\" not in line and '"' not in line):
                append(_fast_line(line, factor, now_ns))
            else:
                append(_escaped_line(line, factor, now_ns))
        except _Unparsable as exc:
            errors.append(LineError(lineno, REASON_UNPARSABLE, str(exc), _shorten(line)))
    return events, errors


# -- Point objects and dicts -----------------------------------------------------------------

def _time_ns(value: Any, factor: int, default_ns: int) -> int:
    """A point's time as InfluxDB's client reads it: int in the precision, datetime, ISO text."""
    if value is None:
        return default_ns
    if isinstance(value, bool):
        raise ValueError(f"invalid time {value!r}")
    if isinstance(value, int):
        return value * factor
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"invalid time {value!r}")
        return round(value * factor)
    if isinstance(value, str):
        value = _dt.datetime.fromisoformat(value)
    if isinstance(value, _dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_dt.UTC)
        value = aware - _EPOCH
    if isinstance(value, _dt.timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000_000 + value.microseconds * 1_000
    raise ValueError(f"invalid time {value!r} ({type(value).__name__})")


def _clean_tags(tags: Mapping[Any, Any]) -> dict[str, str]:
    """Tags as influxdb-client writes them: None and empty values left out, the rest as text."""
    return {str(k): str(v) for k, v in tags.items() if v is not None and str(v) != ""}


def _clean_fields(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """Fields with None left out (as influxdb-client does); the worker judges the rest."""
    return {str(k): v for k, v in fields.items() if v is not None}


def point_event(point: Any, default_ns: int) -> PointEvent:
    """An ``influxdb_client.Point`` (read by attribute, not imported) as a ``KIND_POINT`` event."""
    factor = precision_factor(getattr(point, "_write_precision", None))
    return (KIND_POINT, str(point._name), _time_ns(point._time, factor, default_ns),
            _clean_tags(point._tags), _clean_fields(point._fields))


def dict_event(
    record: Mapping[str, Any],
    precision: str | None,
    default_ns: int,
    *,
    measurement_key: str = "measurement",
    time_key: str = "time",
    tag_keys: Iterable[str] | None = None,
    field_keys: Iterable[str] | None = None,
    measurement_name: str | None = None,
) -> PointEvent:
    """A dict as influxdb-client's ``Point.from_dict`` reads it (same keyword options)."""
    measurement = measurement_name if measurement_name is not None else record[measurement_key]
    if tag_keys is None and field_keys is None:
        tags, fields = record.get("tags") or {}, record.get("fields") or {}
    else:
        tags = {k: record[k] for k in tag_keys or () if k in record}
        fields = {k: record[k] for k in field_keys or () if k in record}
    ts = _time_ns(record.get(time_key), precision_factor(precision), default_ns)
    return KIND_POINT, str(measurement), ts, _clean_tags(tags), _clean_fields(fields)


def _is_point(record: Any) -> bool:
    return hasattr(record, "_name") and hasattr(record, "_fields") and hasattr(record, "_tags")


def record_events(
    record: Any, precision: str | None = "ns", default_ns: int | None = None, **dict_options: Any
) -> tuple[list[PointEvent], list[LineError]]:
    """What ``WriteApi.write(record=...)`` accepts: a Point, line protocol (str or bytes), a dict,
    or an iterable of these, as events; each record that is none of them is a :class:`LineError`
    numbered by its position (1-based; lines of a text record keep their own numbers)."""
    now_ns = time.time_ns() if default_ns is None else default_ns
    events: list[PointEvent] = []
    errors: list[LineError] = []
    items = [record] if isinstance(record, str | bytes | bytearray | Mapping) or _is_point(record) else record
    try:
        iterator = iter(items)
    except TypeError:
        iterator = iter([record])
    for index, item in enumerate(iterator, 1):
        if isinstance(item, str | bytes | bytearray):
            found, bad = parse_lines(item, precision, now_ns)
            events.extend(found)
            errors.extend(bad)
            continue
        try:
            if _is_point(item):
                events.append(point_event(item, now_ns))
            elif isinstance(item, Mapping):
                events.append(dict_event(item, precision, now_ns, **dict_options))
            else:
                raise ValueError(f"a {type(item).__name__} is not a Point, line protocol or dict")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            errors.append(LineError(index, REASON_UNPARSABLE, detail, _shorten(repr(item))))
    return events, errors


def rejected_event(error: LineError, ts_ns: int) -> tuple[int, str, int, dict[str, str], dict[str, str]]:
    """The ``KIND_REJECTED`` event that carries ``error`` to the worker's dead letters."""
    detail = f"line {error.lineno}: {error.detail}"
    return KIND_REJECTED, "", ts_ns, {"reason": error.reason, "detail": detail}, {"line": error.line}


__all__ = [
    "MAX_ERROR_LINE_CHARS", "PRECISION_NS", "REASON_UNPARSABLE", "LineError", "PointEvent", "dict_event",
    "parse_lines", "point_event", "precision_factor", "record_events", "rejected_event",
]
