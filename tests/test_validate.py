"""Validation: every poison input gets its exact reason; good input becomes the expected Event."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.aggregation.validate import validate
from consumer.core.model import DEAD_LETTER_REASONS, Event, Position

POS = Position(1_700_000_000_000, 0, 3)
TS = 1_700_000_000.25
OK_TAGS = {"bot_name": "elena"}


def _emit(fields: dict[str, Any], tags: dict[str, Any] | None = None, measurement: Any = "m") -> list[Any]:
    return [0, measurement, TS, OK_TAGS if tags is None else tags, fields]


POISON: list[tuple[str, Any, str]] = [
    # shape
    ("not an array", {"kind": 0}, "invalid_event"),
    ("too short", [0, "m", TS, {}], "invalid_event"),
    ("too long", [0, "m", TS, {}, {"x": 1}, 7], "invalid_event"),
    ("unknown kind", [9, "m", TS, {}, {"x": 1}], "invalid_event"),
    ("bool kind", [True, "m", TS, {}, {"x": 1}], "invalid_event"),
    ("string kind", ["emit", "m", TS, {}, {"x": 1}], "invalid_event"),
    ("ts is a string", [0, "m", "2024-01-01", {}, {"x": 1}], "invalid_event"),
    ("ts is None", [0, "m", None, {}, {"x": 1}], "invalid_event"),
    ("ts is NaN", [0, "m", float("nan"), {}, {"x": 1}], "invalid_event"),
    ("ts is inf", [0, "m", float("inf"), {}, {"x": 1}], "invalid_event"),
    ("ts past int64 ns", [0, "m", 1e10, {}, {"x": 1}], "invalid_event"),
    ("ts is bool", [0, "m", True, {}, {"x": 1}], "invalid_event"),
    ("tags a list", [0, "m", TS, [["a", "b"]], {"x": 1}], "invalid_event"),
    ("fields a list", [0, "m", TS, {}, [1]], "invalid_event"),
    ("count with two fields", [1, "m", TS, {}, {"a": 1, "b": 2}], "invalid_event"),
    ("gauge with no field", [2, "m", TS, {}, {}], "invalid_event"),
    # names
    ("empty measurement", _emit({"x": 1}, measurement=""), "invalid_name"),
    ("measurement not a string", _emit({"x": 1}, measurement=5), "invalid_name"),
    ("newline in measurement", _emit({"x": 1}, measurement="a\nb"), "invalid_name"),
    ("trailing backslash in measurement", _emit({"x": 1}, measurement="m\\"), "invalid_name"),
    ("over-long measurement", _emit({"x": 1}, measurement="m" * 257), "invalid_name"),
    ("backslash before space in tag key", _emit({"x": 1}, {"a\\ b": "v"}), "invalid_name"),
    ("tag key time", _emit({"x": 1}, {"time": "v"}), "invalid_name"),
    ("empty tag key", _emit({"x": 1}, {"": "v"}), "invalid_name"),
    ("tag value with newline", _emit({"x": 1}, {"k": "a\nb"}), "invalid_name"),
    ("tag value ending in backslash", _emit({"x": 1}, {"k": "v\\"}), "invalid_name"),
    ("tag value not a string", _emit({"x": 1}, {"k": 5}), "invalid_name"),
    ("over-long tag value", _emit({"x": 1}, {"k": "v" * 1025}), "invalid_name"),
    ("field key time", _emit({"time": 1}), "invalid_name"),
    ("empty field key", _emit({"": 1}), "invalid_name"),
    ("field key with newline", _emit({"a\nb": 1}), "invalid_name"),
    ("field key backslash before =", _emit({"a\\=b": 1}), "invalid_name"),
    # values
    ("NaN", _emit({"x": float("nan")}), "invalid_value"),
    ("+inf", _emit({"x": float("inf")}), "invalid_value"),
    ("-inf", _emit({"x": float("-inf")}), "invalid_value"),
    ("int above int64", _emit({"x": 2**63}), "invalid_value"),
    ("int below int64", _emit({"x": -(2**63) - 1}), "invalid_value"),
    ("over-long string", _emit({"x": "s" * (64 * 1024 + 1)}), "invalid_value"),
    ("None value", _emit({"x": None}), "invalid_value"),
    ("list value", _emit({"x": [1, 2]}), "invalid_value"),
    ("bytes value", _emit({"x": b"raw"}), "invalid_value"),
    ("count of a float", [1, "m", TS, {}, {"n": 1.5}], "invalid_value"),
    ("count of a bool", [1, "m", TS, {}, {"n": True}], "invalid_value"),
    ("gauge of a string", [2, "m", TS, {}, {"g": "high"}], "invalid_value"),
    ("gauge of a bool", [2, "m", TS, {}, {"g": False}], "invalid_value"),
    ("observe of NaN", [3, "m", TS, {}, {"ms": float("nan")}], "invalid_value"),
    ("observe of a string", [3, "m", TS, {}, {"ms": "12"}], "invalid_value"),
    # generated names
    ("x beside x_min", _emit({"x": 1.0, "x_min": 2.0}), "field_clash"),
    ("x_max beside x", _emit({"x_max": 2.0, "x": 1.0}), "field_clash"),
    ("int x beside x_sum", _emit({"x": 1, "x_sum": 3}), "field_clash"),
    ("field named event_count", _emit({"event_count": 3}), "field_clash"),
    ("observed field 'event' writes event_count", [3, "m", TS, {}, {"event": 1.0}], "field_clash"),
    # catalogue
    ("bool for a declared mean", [0, "attachment_monitoring", TS, {}, {"emotional_intensity": True}],
     "type_conflict"),
    ("number for a declared true-count",
     [0, "attachment_monitoring", TS, {}, {"intervention_provided": 1}], "type_conflict"),
    ("float for a declared integer sum",
     [0, "engagement_engine_telemetry", TS, {}, {"interventions_generated": 1.5}], "type_conflict"),
]


@pytest.mark.parametrize(("raw", "reason"), [(raw, reason) for _, raw, reason in POISON],
                         ids=[name for name, _, _ in POISON])
def test_poison_input_gets_its_reason(raw: Any, reason: str) -> None:
    result = validate(raw, POS)
    assert isinstance(result, tuple), result
    assert result[0] == reason
    assert result[1]  # a human-readable detail


@pytest.mark.parametrize(("raw", "reason"), [(raw, reason) for _, raw, reason in POISON],
                         ids=[name for name, _, _ in POISON])
def test_poison_input_is_rejected_again_after_good_input_warmed_the_caches(raw: Any, reason: str) -> None:
    """The memos of valid names and shapes must never let a bad event through."""
    for good in ([0, "m", TS, {"time_zone": "utc", "k": "v"}, {"x": 1.0, "x_avg": 2, "event": 1}],
                 [3, "m", TS, {}, {"ms": 1.5}], [1, "m", TS, {}, {"n": 1}], [2, "m", TS, {}, {"g": 1}]):
        assert isinstance(validate(good, POS), Event)
    result = validate(raw, POS)
    assert isinstance(result, tuple) and result[0] == reason, result


def test_good_event_becomes_an_event_with_empty_tags_dropped() -> None:
    raw = [0, "attachment_monitoring", 1_700_000_000,
           {"user_id": "u1", "bot_name": "elena", "risk_level": ""},
           {"emotional_intensity": 0.5, "consecutive_days": 4, "intervention_provided": True, "note": "a\nb"}]
    assert validate(raw, POS) == Event(
        kind=0, measurement="attachment_monitoring", ts=1_700_000_000.0,
        tags={"user_id": "u1", "bot_name": "elena"},
        fields={"emotional_intensity": 0.5, "consecutive_days": 4, "intervention_provided": True,
                "note": "a\nb"},
        position=POS)


@pytest.mark.parametrize("raw", [
    [0, "we,ird m=easure\"ment", TS, {"k ,=\"": "v ,=\\x"}, {"f ,=": "s\"\\"}],  # escapable specials
    [0, "m", TS, {}, {}],                                   # no fields: counts in event_count only
    [1, "m", TS, {}, {"n": -(2**63)}],                      # int64 edge
    [2, "m", TS, {}, {"g": 3}],                             # gauge of an int
    [3, "m", TS, {}, {"ms": 0.0}],
    [0, "m", -1.5, {}, {"x": 1.0}],                         # before 1970 is representable
    (0, "m", TS, {}, {"x": 1.0}),                           # a tuple is an array too
    [0, "Größe 🙂", TS, {"ユーザー": "値"}, {"x": 1.0}],     # any Unicode
])
def test_valid_edge_cases_are_accepted(raw: Any) -> None:
    assert isinstance(validate(raw, POS), Event)


_msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
              st.binary(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4) | st.integers(),
                                                                          inner, max_size=3)),
    max_leaves=12)
_near_events = st.tuples(
    st.one_of(st.sampled_from([0, 1, 2, 3]), _msgpack_values),
    st.one_of(st.sampled_from(["m", "time", "a b", "x\\"]), _msgpack_values),
    st.one_of(st.floats(), st.integers(), _msgpack_values),
    st.one_of(st.dictionaries(st.sampled_from(["user_id", "time", "", "k\\"]),
                              st.text(max_size=3) | st.integers(), max_size=3), _msgpack_values),
    st.one_of(st.dictionaries(st.sampled_from(["x", "x_min", "event", "event_count", "time", "a\nb"]),
                              _msgpack_values, max_size=3), _msgpack_values),
).map(list)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_near_events, _msgpack_values))
def test_validate_never_raises_and_answers_with_a_known_reason(raw: Any) -> None:
    result = validate(raw, POS)
    if isinstance(result, tuple):
        assert result[0] in DEAD_LETTER_REASONS and isinstance(result[1], str) and result[1]
    else:
        assert isinstance(result, Event)
        assert all(isinstance(v, str) and v for v in result.tags.values())


def test_a_name_valid_as_a_tag_key_is_still_checked_as_a_measurement() -> None:
    """'#x' is a fine tag key but a measurement line starting with '#' is a comment to InfluxDB."""
    position = Position(1, 0, 0)
    accepted = validate([0, "m", 1_700_000_000.0, {"#x": "v"}, {"f": 1.0}], position)
    assert not isinstance(accepted, tuple)
    rejected = validate([0, "#x", 1_700_000_000.0, {}, {"f": 1.0}], position)
    assert isinstance(rejected, tuple) and rejected[0] == "invalid_name"
