"""InfluxDB line protocol: escaping, and the names it cannot carry.

Escaping follows the InfluxDB 1.x/2.x parser:

    measurement      escape ``,`` and space
    tag key / value  escape ``,``, ``=`` and space
    field key        escape ``,``, ``=`` and space
    string value     wrapped in ``"``, escape ``"`` and ``\\``; a newline is kept as is

Other backslashes in names are literal, which leaves some names that no escaping can carry: a
newline (it ends the line), a trailing backslash, a backslash right before ``,``, ``=`` or a
space (the parser reads it as an escape), or a measurement that starts with ``#`` (the parser
skips the line as a comment, and InfluxDB answers 204 having stored nothing). Control characters
(tab, NUL, ...) are refused in names too: the parser skips a leading tab as whitespace.
:func:`name_problem` finds those, so the worker can dead-letter the event (``invalid_name``)
instead of sending a batch InfluxDB would reject or silently drop.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import orjson

from consumer.core.model import FieldValue, Point

MAX_NAME_BYTES: Final = 256
"""Longest measurement name, tag key or field key we accept."""
MAX_TAG_VALUE_BYTES: Final = 1024
"""Longest tag value we accept (tag values make series keys; keep them short)."""
MAX_STRING_BYTES: Final = 64 * 1024
"""InfluxDB's limit for a string field value."""
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
RESERVED_KEYS: Final = frozenset({"time", "_field", "_measurement"})
"""Tag and field keys InfluxDB refuses: ``time`` (every version), ``_field`` and ``_measurement``
(2.x and later: its data model stores them as columns of those names)."""

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""C0/C1 controls: a tab at the start of a measurement or field key is eaten as whitespace, a NUL
field key reads back as ``val0``; none belongs in a name."""
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})


def name_problem(name: object, *, what: str, max_bytes: int = MAX_NAME_BYTES) -> str | None:
    """Why ``name`` cannot be a measurement, tag or field name; ``None`` when it can.

    ``what`` names the role in the message (``"measurement"``, ``"tag key"``, ...).
    """
    if not isinstance(name, str):
        return f"{what} is {type(name).__name__}, not a string"
    if not name:
        return f"{what} is empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{what} {name[:40]!r} is not valid Unicode"
    if size > max_bytes:
        return f"{what} {name[:40]!r}... is {size} bytes (limit {max_bytes})"
    if "\n" in name or "\r" in name:
        return f"{what} {name[:40]!r} contains a newline"
    control = _CONTROL.search(name)
    if control:
        return f"{what} {name[:40]!r} contains the control character U+{ord(control.group()):04X}"
    if what == "measurement" and name.startswith("#"):
        return f"{what} {name[:40]!r} starts with '#' (line protocol reads the line as a comment)"
    if name.endswith("\\"):
        return f"{what} {name[:40]!r} ends with a backslash"
    for special in (",", "=", " "):
        if "\\" + special in name:
            return f"{what} {name[:40]!r} has a backslash before {special!r}"
    return None


def value_problem(value: object) -> str | None:
    """Why a field value cannot be written; ``None`` when it can."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return None
        return f"integer {value} is outside the 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a finite number"
    if isinstance(value, str):
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return "string value is not valid Unicode"
        if size <= MAX_STRING_BYTES:
            return None
        return f"string value is {size} bytes (limit {MAX_STRING_BYTES})"
    return f"value of type {type(value).__name__} is not a bool, int, float or str"


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(name: str) -> str:
    """Escape a tag key, tag value or field key."""
    return name.translate(_KEY_ESCAPES)


def format_value(value: FieldValue) -> str:
    """A field value in line protocol: ``1i``, ``0.5``, ``true``, ``"text"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.translate(_STRING_ESCAPES) + '"'


_ESCAPED_CACHE_LIMIT: Final = 65_536
_escaped_keys: dict[str, str] = {}
_escaped_measurements: dict[str, str] = {}


def _cached_escape(cache: dict[str, str], name: str, table: dict[int, str]) -> str:
    """Escape through a bounded memo: the same few names recur in every point."""
    escaped = cache.get(name)
    if escaped is None:
        escaped = name.translate(table)
        if len(cache) >= _ESCAPED_CACHE_LIMIT:
            cache.clear()
        cache[name] = escaped
    return escaped


_TEMPLATE_CLASSES: Final = {float: "%r", int: "%di"}
"""Value classes a field template formats in C: ``%r`` of a float is its ``repr``, ``%d`` of an
int its digits (a bool is a class of its own, and a string must be escaped: neither has one)."""
_templates: dict[tuple[str, ...], tuple[str, tuple[type, ...]] | None] = {}
_TEMPLATE_LIMIT: Final = 4_096
"""Field sets with a cached template (or none); a flood of new ones clears it."""
_TEMPLATE_MAX_FIELDS: Final = 64
"""Larger field sets (raw points of made-up names, say) are formatted value by value: the cache
must stay small whatever the points."""


def _fields_template(names: tuple[str, ...], values: tuple[FieldValue, ...],
                     specs: dict[type, str] = _TEMPLATE_CLASSES) -> tuple[str, tuple[type, ...]] | None:
    """``name=%r,other=%di,...`` (with ``specs``' place for each value class) for points with
    these field names (in this order) and these value classes; ``None`` when one has no template
    (then each value is formatted alone)."""
    if names != tuple(sorted(names)):
        return None
    classes = tuple(value.__class__ for value in values)
    keys = _escaped_keys
    parts = []
    for name, cls in zip(names, classes, strict=True):
        spec = specs.get(cls)
        if spec is None:
            return None
        escaped = keys.get(name) or _cached_escape(keys, name, _KEY_ESCAPES)
        parts.append(escaped.replace("%", "%%") + "=" + spec)
    return ",".join(parts), classes


def _template_of(fields: dict[str, FieldValue], cache: dict[tuple[str, ...], Any],
                 make: Callable[[tuple[str, ...], tuple[FieldValue, ...]], Any],
                 ) -> tuple[Any, tuple[FieldValue, ...]]:
    """``(template, values)`` of ``fields`` from ``cache`` (made by ``make`` on first sight of
    their names), or ``(None, values)`` when none fits their value classes."""
    values = tuple(fields.values())
    if len(fields) > _TEMPLATE_MAX_FIELDS:
        return None, values
    names = tuple(fields)
    try:
        template = cache[names]
    except KeyError:
        if len(cache) >= _TEMPLATE_LIMIT:
            cache.clear()
        template = cache[names] = make(names, values)
    if template is not None and tuple(map(type, values)) == template[1]:
        return template[0], values
    return None, values


def _fields_text(fields: dict[str, FieldValue]) -> str:
    """A point's field set: sorted by key, each value as line protocol writes it.

    Points of one measurement come in a few shapes (the same names, in key order, and value
    classes) by the ten thousand; such a point's fields are one ``%`` of a cached template.
    """
    template, values = _template_of(fields, _templates, _fields_template)
    if template is not None:
        return str(template % values)
    keys = _escaped_keys
    parts = []
    for name, field_value in sorted(fields.items()):
        cls = field_value.__class__
        if cls is float:
            text = repr(field_value)
        elif cls is int:
            text = f"{field_value}i"
        else:
            text = format_value(field_value)
        parts.append(f"{keys.get(name) or _cached_escape(keys, name, _KEY_ESCAPES)}={text}")
    return ",".join(parts)


def _head(point: Point) -> str:
    """The measurement and tag set of a point's line, escaped (empty tag values are left out)."""
    keys = _escaped_keys
    head = _escaped_measurements.get(point.measurement)
    if head is None:
        head = _cached_escape(_escaped_measurements, point.measurement, _MEASUREMENT_ESCAPES)
    for key, value in point.tags:
        if value != "":
            head += ","
            head += keys.get(key) or _cached_escape(keys, key, _KEY_ESCAPES)
            head += "="
            head += keys.get(value) or _cached_escape(keys, value, _KEY_ESCAPES)
    return head


def encode_point(point: Point) -> str:
    """One point as one line (no trailing newline). Names must have passed :func:`name_problem`."""
    return f"{_head(point)} {_fields_text(point.fields)} {point.time_ns}"


_NUMBER_SPECS: Final = {float: "%s", int: "%si"}
"""A number's place in a body template: its digits as orjson wrote them (``i`` marks an int)."""
_number_templates: dict[tuple[str, ...], tuple[bytes, tuple[type, ...]] | None] = {}


def _number_template(names: tuple[str, ...],
                     values: tuple[FieldValue, ...]) -> tuple[bytes, tuple[type, ...]] | None:
    """``b"name=%s,other=%si,..."`` for fields with these names (in key order) and value classes,
    all floats and ints; ``None`` for anything else (then the point is encoded alone)."""
    template = _fields_template(names, values, _NUMBER_SPECS)
    return None if template is None else (template[0].encode("utf-8"), template[1])


def encode_points(points: Sequence[Point]) -> bytes:
    """A write body: points separated by newlines.

    Why not :func:`encode_point` per point: most of a point's cost was ``repr`` of its floats
    (13 of them for the main measurement), and at tens of thousands of series a window that was
    the worker's largest cost after recording. Here the numbers of every point whose fields are
    floats and ints are formatted in one ``orjson.dumps`` call (shortest digits that read back as
    the same float, as ``repr``; exponents may be spelt differently, ``1e-05`` as ``0.00001``,
    which InfluxDB reads alike) and put in place by a template per field set. Anything else (a
    string or bool field, a NaN or infinity, an int beyond 64 bits) is written as
    :func:`encode_point` writes it.
    """
    numbers: list[FieldValue] = []
    plan: list[bytes | tuple[bytes, bytes, int, int]] = []
    templates = _number_templates
    for point in points:
        template, values = _template_of(point.fields, templates, _number_template)
        if template is not None:
            numbers += values
            plan.append((_head(point).encode("utf-8"), template, len(values), point.time_ns))
            continue
        plan.append(encode_point(point).encode("utf-8"))
    try:
        text = orjson.dumps(numbers)
    except orjson.JSONEncodeError:  # an int beyond 64 bits: each point says it as it can
        return _one_by_one(points)
    if b"null" in text:  # a NaN or an infinity (orjson writes null): InfluxDB must refuse it as such
        return _one_by_one(points)
    digits = text[1:-1].split(b",")
    lines = []
    at = 0
    for item in plan:
        if isinstance(item, bytes):
            lines.append(item)
            continue
        head, fields_template, count, time_ns = item
        lines.append(b"%s %s %d" % (head, fields_template % tuple(digits[at:at + count]), time_ns))
        at += count
    return b"\n".join(lines)


def _one_by_one(points: Iterable[Point]) -> bytes:
    return "\n".join([encode_point(point) for point in points]).encode("utf-8")
