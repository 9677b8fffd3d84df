"""Compiled folds (``consumer.aggregation.fold``) are the general fold, stricter and never looser.

For random shapes of every accumulator kind, random admitted value classes and random events
(the shape's fields or not, values good and bad, times that tie), a compiled fold must either
fold exactly what ``update_fields`` folds, when the general fast path's checks pass, or return
``False`` and change nothing. A compiled opener must give a new series exactly the shape and
accumulators ``update_fields`` gives it, field by field.
"""

from __future__ import annotations

import math
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.aggregation.fold import compile_fold
from consumer.aggregation.validate import LAST_NUMBER, LAST_STRING, MEAN, SUM, SUMMARY, TRUE_COUNT
from consumer.aggregation.window import ShardWindows
from consumer.aggregation.window_state import (
    EMPTY_SHAPE,
    MeasurementTypes,
    Series,
    new_accumulator,
    update_fields,
)
from consumer.sinks.line_protocol import INT64_MAX, INT64_MIN

NAMES = ("a", "b", "c'd", "e")
CODES = (MEAN, TRUE_COUNT, SUM, SUMMARY, LAST_NUMBER, LAST_STRING)
_value = st.one_of(st.floats(-100, 100), st.integers(-5, 5), st.booleans(),
                   st.sampled_from([math.nan, math.inf, 2**63, -(2**63) - 1, "text", None]))
_times = st.sampled_from([10.0, 10.0, 11.0, 9.0])


def _admissible(value: Any, classes: set[type]) -> bool:
    """The general fast path's check of one value (``ShardWindows.record_batch``)."""
    cls = value.__class__
    if cls not in classes:
        return False
    if cls is float:
        return value - value == 0.0
    if cls is int:
        return INT64_MIN <= value <= INT64_MAX
    return cls is bool


def _typed(acc: list[Any]) -> list[tuple[type, Any]]:
    """``acc`` comparable, value classes included (a sum of ints is a float: ``2 == 2.0``)."""
    return [(item.__class__, item) for item in _state(acc)]


def _state(acc: list[Any]) -> list[Any]:
    """``acc`` comparable: sketches by their state."""
    return [item.to_state() if hasattr(item, "to_state") else item for item in acc]


@st.composite
def _case(draw: st.DrawFn) -> tuple[Any, ...]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    codes = [draw(st.sampled_from(CODES)) for _ in names]
    classes = {name: draw(st.sets(st.sampled_from([float, int, bool]))) for name in names}
    series = Series(("m", ()))
    for name, code in zip(names, codes, strict=True):
        first = {TRUE_COUNT: True, LAST_STRING: "s"}.get(code, 1.5)
        series.add_field(name, new_accumulator(code, first, 10.0, (1, 0, 0)))
    events = draw(st.lists(st.tuples(
        st.one_of(st.fixed_dictionaries({name: _value for name in names}),
                  st.dictionaries(st.sampled_from(NAMES), _value, max_size=4)),
        _times, st.integers(0, 3)), min_size=1, max_size=8))
    return series, codes, classes, events


@settings(max_examples=300, deadline=None)
@given(case=_case())
def test_a_compiled_fold_folds_what_update_fields_folds_or_nothing(case: tuple[Any, ...]) -> None:
    series, codes, classes, events = case
    admitted = {name: dict.fromkeys(classes[name], code) for name, code in zip(series.shape.names, codes,
                                                                               strict=True)}
    fold = compile_fold(series.shape.spans, series.shape.codes, admitted)
    reference = Series(series.key)
    reference.shape, reference.acc = series.shape, list(series.acc)
    for fields, ts, seq in events:
        before = _state(series.acc)
        folded = fold(series.acc, fields, ts, 1, seq, 0)
        checks_pass = (set(fields) == set(series.shape.names) and LAST_STRING not in codes
                       and all(_admissible(value, classes[name]) for name, value in fields.items()))
        assert folded == checks_pass, (fields, classes)
        if folded:
            update_fields(reference, fields, ts, {}, 1, seq, 0)
        else:
            assert _state(series.acc) == before  # nothing changed
        assert _state(series.acc) == _state(reference.acc)


def test_a_series_without_fields_and_one_with_a_string_field_never_fold() -> None:
    string = EMPTY_SHAPE.with_field("note", LAST_STRING)
    for shape in (EMPTY_SHAPE, string):
        fold = compile_fold(shape.spans, shape.codes, {"note": {str: LAST_STRING}})
        acc = [LAST_STRING, "x", 1.0, 1, 0, 0] if shape is string else []
        assert fold(acc, {"note": "y"}, 2.0, 1, 0, 0) is False


def test_a_value_class_admitted_later_folds_compiled_too() -> None:
    """The folds of a measurement are made under its admitted classes; admitting one more
    (an int for a field seen as float) drops them, so the next fold takes the int as well."""
    now = time.time()
    windows = ShardWindows(window_s=10.0, grace_s=1.0, allowed_lateness_s=60.0, max_future_s=60.0,
                           max_series=100)
    event = [0, "m", now, {"user_id": "u1"}, {"x": 1.5}]
    assert windows.record_batch([event, event], 1, 0, now) == []
    measurement = windows._measurements["m"]
    shape, fold = next(iter(measurement.folds[0].items()))
    assert fold([MEAN, 1, 1.0, 1.0, 1.0], {"x": 2}, now, 1, 0, 0) is False  # ints not admitted yet
    assert windows.record_batch([[0, "m", now, {"user_id": "u1"}, {"x": 2}]], 2, 0, now) == []
    assert shape not in measurement.folds[0]  # dropped by the admission
    assert windows.record_batch([[0, "m", now, {"user_id": "u1"}, {"x": 3}]], 3, 0, now) == []
    refolded = measurement.folds[0][shape]
    assert refolded([MEAN, 1, 1.0, 1.0, 1.0], {"x": 2}, now, 1, 0, 0) is True
    (point,) = windows.collect_all().points
    assert point.fields["x_sum"] == 8.0 and point.fields["event_count"] == 4


_admitted_value = {MEAN: st.one_of(st.floats(-100, 100), st.integers(-5, 5)), TRUE_COUNT: st.booleans(),
                   SUM: st.integers(-5, 5), SUMMARY: st.floats(-100, 100),
                   LAST_NUMBER: st.floats(-100, 100), LAST_STRING: st.text(max_size=3)}


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_an_opener_builds_what_update_fields_builds_for_a_new_series(data: st.DataObject) -> None:
    names = data.draw(st.lists(st.sampled_from(NAMES), max_size=4, unique=True))
    codes = {name: data.draw(st.sampled_from(CODES)) for name in names}
    fields = {name: data.draw(_admitted_value[codes[name]]) for name in names}
    ts, seq = data.draw(_times), data.draw(st.integers(0, 3))
    measurement = MeasurementTypes("m")
    for name, code in codes.items():
        measurement.register(name, code)
    admitted = {name: {value.__class__: codes[name]} for name, value in fields.items()}
    reference, opened = Series(("m", ())), Series(("m", ()))
    update_fields(reference, fields, ts, admitted, 7, seq, 2)
    measurement.opener_for(0, tuple(fields))(opened, fields, ts, 7, seq, 2)
    assert opened.shape is reference.shape  # the same shape of the tree, not an equal copy
    assert _typed(opened.acc) == _typed(reference.acc)
    assert measurement.openers[0][tuple(fields)] is not None


def test_events_that_open_series_record_what_the_general_path_records() -> None:
    """Through ``record_batch``: series opened by their shape's opener (first events of new series,
    a field set in two orders) hold what recording the same events one by one holds."""
    now = time.time()
    config = {"window_s": 10.0, "grace_s": 1.0, "allowed_lateness_s": 60.0, "max_future_s": 60.0,
              "max_series": 100}
    events = [[0, "m", now, {"user_id": f"u{n}"}, {"x": 1.5 * n, "ok": n % 2 == 0, "d": n}] for n in range(6)]
    events += [[0, "m", now, {"user_id": "v"}, {"d": 2, "ok": True, "x": 0.5}],  # another order
               [0, "m", now, {"user_id": "u1"}, {"x": 3.0, "ok": True, "d": 9}]]
    batch, single = ShardWindows(**config), ShardWindows(**config)
    assert batch.record_batch(events[:1], 1, 0, now) == []  # admits the fields
    assert batch.record_batch(events[1:], 1, 1, now) == []
    assert len(batch._measurements["m"].openers[0]) == 2
    for number, event in enumerate(events):  # validate() and record(): update_fields, field by field
        assert single._record_one(event, 1, 1, number, now, None) is None
    assert not single._measurements["m"].openers[0]

    def state(windows: ShardWindows) -> dict[Any, Any]:
        (window,) = windows._windows.values()
        return {key: (series.shape.spans, _typed(series.acc), series.count)
                for key, series in window.series.items()}

    assert state(batch) == state(single)
