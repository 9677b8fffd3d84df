"""Compiled folds: one generated function per (measurement, kind, shape) that checks an event's
fields and folds them into a series' flat accumulators in one call.

Why generated: at tens of thousands of series per window, the worker's time is the per-event
work, and of that most went to loops over the event's fields that look each one up twice (its
admitted value classes, its accumulator's offset) and branch on its semantics code. A series'
shape fixes its field names, their offsets and codes, so the loop unrolls into constant
subscripts, one type check per field and the update of its code, with no lookups left.

A fold is only ever stricter than the general path it stands in for (the fast path of
:meth:`~consumer.aggregation.window.ShardWindows.record_batch`): it accepts exactly the field set
of its shape, each value of a class its measurement admitted for that field and kind when the
fold was made (finite floats, 64-bit ints, bools), and checks every field before it changes
anything. Anything else returns ``False`` with nothing changed, and the general path decides.
Field names enter the source as ``repr`` literals, offsets as integers; nothing else does.

An *opener* is the same idea for a series' first event in a window, the common case at high
cardinality: one generated function per (measurement, kind, field names in the event's order)
gives the new series its shape and its accumulators as one list display, where the general path
adds them field by field (a shape step, an accumulator and a list extension each). It is made
for events whose values the caller has checked already, and builds exactly what that path builds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from consumer.aggregation.validate import LAST_NUMBER, LAST_STRING, MEAN, SUM, SUMMARY, TRUE_COUNT
from consumer.sinks.line_protocol import INT64_MAX, INT64_MIN

Fold = Callable[[list[Any], dict[Any, Any], float, int, int, int], bool]
"""``fold(acc, fields, ts, entry_ms, entry_seq, index)``: ``True`` when folded."""
Opener = Callable[[Any, dict[Any, Any], float, int, int, int], None]
"""``open(series, fields, ts, entry_ms, entry_seq, index)``: the series' shape and accumulators."""

_ARGUMENTS: Final = "acc, fields, ts, entry_ms, entry_seq, index"


def _never(acc: list[Any], fields: dict[Any, Any], ts: float, entry_ms: int, entry_seq: int,
           index: int) -> bool:
    """The fold of a shape with a string field: strings are checked one by one, always."""
    return False


def _check(value: str, classes: frozenset[type]) -> list[str]:
    """Lines that return ``False`` unless ``value`` is of an admitted class and in range."""
    branches = []
    if float in classes:
        branches.append(("float", [f"if {value} - {value} != 0.0:", "    return False"]))  # NaN, inf
    if int in classes:
        branches.append(("int", [f"if not {INT64_MIN} <= {value} <= {INT64_MAX}:", "    return False"]))
    if bool in classes:
        branches.append(("bool", ["pass"]))
    if not branches:
        return ["return False"]
    lines = [f"c = {value}.__class__"]
    for number, (cls, body) in enumerate(branches):
        lines.append(f"{'if' if number == 0 else 'elif'} c is {cls}:")
        lines += ["    " + line for line in body]
    return [*lines, "else:", "    return False"]


def _update(code: int, at: int, value: str) -> list[str]:
    """Lines that fold ``value`` into the accumulator of ``code`` at offset ``at`` (the layouts of
    :func:`~consumer.aggregation.window_state.new_accumulator`, the rules of ``update_fields``)."""
    count, total, low, high = f"acc[{at + 1}]", f"acc[{at + 2}]", f"acc[{at + 3}]", f"acc[{at + 4}]"
    if code == TRUE_COUNT:
        return [f"if {value}:", f"    {count} += 1"]
    if code == SUM:
        return [f"{count} += {value}"]
    if code == LAST_NUMBER:
        position = f"acc[{at + 3}], acc[{at + 4}], acc[{at + 5}]"
        return [f"if ts > {total} or (ts == {total} and (entry_ms, entry_seq, index) > ({position})):",
                f"    {count} = {value}", f"    {total} = ts", f"    {position} = entry_ms, entry_seq, index"]
    lines = [f"{count} += 1", f"{total} += {value}", f"if {value} < {low}:", f"    {low} = {value}",
             f"if {value} > {high}:", f"    {high} = {value}"]  # a mean, or a summary with its sketch
    if code == SUMMARY:
        lines.append(f"acc[{at + 5}].add({value})")
    return lines


def compile_fold(spans: tuple[tuple[str, int, int], ...], codes: tuple[int, ...],
                 admitted: Mapping[str, Mapping[type, int]]) -> Fold:
    """The fold of a shape (its ``spans`` and ``codes``) under ``admitted``, the measurement's
    memo for one kind: field name -> value class -> code."""
    if LAST_STRING in codes or not spans:
        return _never
    body = [f"if len(fields) != {len(spans)}:", "    return False", "try:"]
    body += [f"    v{number} = fields[{name!r}]" for number, (name, _, _) in enumerate(spans)]
    body += ["except KeyError:", "    return False"]
    for number, ((name, _, _), code) in enumerate(zip(spans, codes, strict=True)):
        known = admitted.get(name, {})
        classes = frozenset(cls for cls, admitted_code in known.items() if admitted_code == code)
        body += _check(f"v{number}", classes)
    for number, ((_, start, _), code) in enumerate(zip(spans, codes, strict=True)):
        body += _update(code, start, f"v{number}")
    source = f"def fold({_ARGUMENTS}):\n" + "".join(f"    {line}\n" for line in [*body, "return True"])
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return namespace["fold"]  # type: ignore[no-any-return]


def _first(code: int, value: str) -> str:
    """The accumulator of ``code`` that one event's ``value`` starts (as
    :func:`~consumer.aggregation.window_state.new_accumulator` makes it)."""
    if code == MEAN:
        return f"{MEAN}, 1, 0.0 + {value}, {value}, {value}"  # count, sum, min, max
    if code == TRUE_COUNT:
        return f"{TRUE_COUNT}, 1 if {value} else 0"
    if code == SUM:
        return f"{SUM}, {value}"
    if code == SUMMARY:
        return f"{SUMMARY}, 1, 0.0 + {value}, {value}, {value}, sketch({value})"
    return f"{code}, {value}, ts, entry_ms, entry_seq, index"  # last: value, event time, position


def compile_opener(spans: tuple[tuple[str, int, int], ...], codes: tuple[int, ...], shape: object,
                   sketch: Callable[[Any], Any]) -> Opener:
    """The opener of ``shape`` (its ``spans`` and ``codes``, the fields in that order): for events
    with exactly those field names in that order, values already checked. ``sketch(value)`` is a
    new quantile sketch holding ``value``."""
    body = [f"v{number} = fields[{name!r}]" for number, (name, _, _) in enumerate(spans)]
    items = ", ".join(_first(code, f"v{number}") for number, code in enumerate(codes))
    body += ["series.shape = shape", f"series.acc = [{items}]"]
    source = ("def open(series, fields, ts, entry_ms, entry_seq, index):\n"
              + "".join(f"    {line}\n" for line in body))
    namespace: dict[str, Any] = {"shape": shape, "sketch": sketch}
    exec(source, namespace)
    return namespace["open"]  # type: ignore[no-any-return]
