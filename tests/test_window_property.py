"""Property test: ShardWindows against the from-scratch reference model, with snapshot/restore.

Random events (kinds, value types, clashing field names, catalogue fields, ties in event time,
late and future events, overflowing tag sets) are interleaved with flushes that the simulated
sink sometimes fails (no commit). At the end everything is drained. The sink's final contents
must equal the reference model's points (float sums to relative 1e-9, quantiles within 1%), the
reasons must match event for event, and a second ShardWindows snapshotted and restored at a
few random steps must have written exactly the same points as the uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.aggregation.validate import validate
from consumer.aggregation.window import Flush, ShardWindows
from consumer.core.model import Event, Position
from tests.reference_model import PointKey, ReferenceModel

BASE_S = 1_700_000_000.0
QUANTILE_SUFFIXES = ("_p50", "_p90", "_p99")

_values = st.one_of(
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
    st.sampled_from(["a", "b", "line\nbreak", "q\"uote"]),
)
_field_names = st.sampled_from(["x", "x_min", "y", "lat", "lat_p50", "consecutive_days",
                                "intervention_provided", "emotional_intensity"])
_tags = st.fixed_dictionaries({}, optional={
    "user_id": st.sampled_from(["u1", "u2", "u3", "u4", "u5"]),
    "bot_name": st.sampled_from(["elena", "marcus"]),
    "risk_level": st.sampled_from(["LOW", "HIGH", ""]),
})
_event_op = st.tuples(
    st.just("event"),
    st.sampled_from([0.0, 0.0, 0.25, 1.0, 3.0]),                     # clock advance, s
    st.integers(-100, 30).map(lambda quarter: quarter / 4),          # event time - clock, s
    st.sampled_from([0, 0, 1, 2, 3]),                                # kind
    st.sampled_from(["m", "attachment_monitoring"]),
    _tags,
    st.dictionaries(_field_names, _values, max_size=3),
)
_again_op = st.tuples(st.just("again"), st.dictionaries(_field_names, _values, max_size=3))
"""The previous event's measurement, tags and time again (ties of "last"), with other fields."""
_flush_op = st.tuples(st.just("flush"), st.booleans(), st.booleans())  # idle, sink accepts
_config = st.fixed_dictionaries({
    "window_s": st.sampled_from([0.5, 1.0, 2.0, 10.0]),
    "grace_s": st.sampled_from([0.0, 1.0, 2.5]),
    "allowed_lateness_s": st.sampled_from([0.0, 3.0, 20.0]),
    "max_future_s": st.sampled_from([2.0, 60.0]),
    "max_series": st.sampled_from([1, 2, 3, 100]),
})


class _Sink:
    """Points by (measurement, tags, time): a rewrite replaces; field types must never change.

    ``log`` keeps every write in order, so two runs can be compared write by write.
    """

    def __init__(self) -> None:
        self.points: dict[PointKey, dict[str, Any]] = {}
        self.types: dict[tuple[str, str], type] = {}
        self.log: list[list[tuple[PointKey, str]]] = []

    def write(self, flush: Flush) -> None:
        self.log.append(sorted(((p.measurement, p.tags, p.time_ns), repr(p.fields)) for p in flush.points))
        for point in flush.points:
            for name, value in point.fields.items():
                kind = type(value)
                assert self.types.setdefault((point.measurement, name), kind) is kind, (point, name)
            self.points[(point.measurement, point.tags, point.time_ns)] = dict(point.fields)


def _as_number(kind: int, value: Any) -> Any:
    """Mostly valid values for count/gauge/observe; bools stay (validate must reject them)."""
    if isinstance(value, str):
        return len(value)
    if kind == 1 and isinstance(value, float):
        return int(value)
    return value


def _to_event(op: tuple[Any, ...], clock: float, sequence: int) -> Event | None:
    _, _, offset, kind, measurement, tags, fields = op
    if kind != 0:
        fields = {name: _as_number(kind, value) for name, value in list(fields.items())[:1]} or {"x": 1}
    result = validate([kind, measurement, clock + offset, tags, fields], Position(sequence, 0, 0))
    return None if isinstance(result, tuple) else result


def _drive(ops: list[tuple[Any, ...]], config: dict[str, Any], restore_at: set[int],
           model: ReferenceModel | None) -> tuple[_Sink, list[str | None]]:
    windows = ShardWindows(**config)
    sink = _Sink()
    reasons: list[str | None] = []
    clock = BASE_S
    previous: tuple[Any, ...] | None = None
    for step, op in enumerate(ops):
        if step in restore_at:
            windows = ShardWindows.restore(windows.snapshot(), **config)
        if op[0] == "flush":
            flush = windows.collect_due(clock, idle=op[1])
            if op[2]:
                sink.write(flush)
                windows.commit(flush)
            continue
        if op[0] == "again":
            if previous is None:
                continue
            op = (*previous[:1], 0.0, *previous[2:6], op[1])
        previous = op
        clock += op[1]
        event = _to_event(op, clock, step)
        if event is None:
            continue
        result = windows.record(event, clock)
        reasons.append(None if result is None else result[0])
        if model is not None:
            expected = model.record(event, clock)
            assert (None if expected is None else expected[0]) == reasons[-1], (step, event)
    final = windows.collect_all()
    sink.write(final)
    windows.commit(final)
    assert len(windows.collect_all()) == 0
    return sink, reasons


def _assert_close(actual: dict[PointKey, dict[str, Any]], expected: dict[PointKey, dict[str, Any]]) -> None:
    assert set(actual) == set(expected)
    for key, fields in expected.items():
        got = actual[key]
        assert set(got) == set(fields), key
        for name, want in fields.items():
            value = got[name]
            assert type(value) is type(want), (key, name, value, want)
            if isinstance(want, float) and name.endswith(QUANTILE_SUFFIXES):
                assert abs(value - want) <= 0.01 * abs(want), (key, name, value, want)
            elif isinstance(want, float):
                assert math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-9), (key, name, value, want)
            else:
                assert value == want, (key, name)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=_config,
       ops=st.lists(st.one_of(_event_op, _event_op, _again_op, _flush_op), min_size=20, max_size=100),
       restore_fractions=st.lists(st.floats(0, 1), min_size=1, max_size=4))
def test_windows_match_reference_model_and_survive_restore(
        config: dict[str, Any], ops: list[tuple[Any, ...]], restore_fractions: list[float]) -> None:
    model = ReferenceModel(**config)
    sink, reasons = _drive(ops, config, set(), model)
    _assert_close(sink.points, model.points())
    restore_at = {int(fraction * len(ops)) for fraction in restore_fractions}
    restored_sink, restored_reasons = _drive(ops, config, restore_at, None)
    assert restored_reasons == reasons
    assert restored_sink.log == sink.log  # the same writes, in the same order, with the same values
