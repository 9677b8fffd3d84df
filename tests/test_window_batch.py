"""Property test: ``ShardWindows.record_batch`` is exactly validate + pseudonymise + record, one by one.

The worker feeds whole stream entries to ``record_batch``, whose common case skips building
events. Random entries mixing good events with every kind of bad one (NaN, huge integers,
strings, unhashable or empty tag values, wrong kinds and shapes, integer times, late and future
times, type conflicts) go through both paths, with flushes and commits in between; the
rejections must be identical entry by entry, and so must every flush and the final snapshot,
byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.aggregation.privacy import Pseudonymizer
from consumer.aggregation.validate import validate
from consumer.aggregation.window import Flush, ShardWindows
from consumer.core.model import Position

BASE_S = 1_700_000_000.0
CONFIG: dict[str, Any] = {"window_s": 2.0, "grace_s": 1.0, "allowed_lateness_s": 6.0,
                          "max_future_s": 5.0, "max_series": 4}

_values = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False), st.floats(-1e3, 1e3, allow_nan=False),
    st.integers(-50, 50), st.booleans(),
    st.sampled_from([math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1, "text", "", None, [1], {"a": 1}]),
)
_tag_values = st.one_of(st.sampled_from(["u1", "u2", "u3", "u4", "u5", "u6", "elena"]),
                        st.sampled_from(["", 7, ["unhashable"], "bad\nvalue"]))
_tags = st.dictionaries(st.sampled_from(["user_id", "bot_name", "risk", ""]), _tag_values, max_size=3)
_fields = st.dictionaries(st.sampled_from(["x", "y", "flag", "x_min", "consecutive_days", "event_count"]),
                          _values, max_size=3)
_good_event = st.builds(
    lambda kind, measurement, offset, tags, fields: [kind, measurement, offset, tags, fields],
    st.sampled_from([0, 0, 0, 1, 2, 3]), st.sampled_from(["m", "attachment_monitoring"]),
    st.integers(-40, 12).map(lambda eighth: eighth / 8), _tags, _fields)
_odd_event = st.sampled_from([
    "not an event", [0, "m"], (0, "m", 0.0, {}, {}), [9, "m", 0.0, {}, {"x": 1.0}],
    [-1, "m", 0.0, {}, {"x": 1.0}], [True, "m", 0.0, {}, {"x": 1.0}], [0, 5, 0.0, {}, {}],
    [0, "", 0.0, {}, {}], [0, "m", "soon", {}, {}], [0, "m", math.nan, {}, {}], [0, "m", 0.0, [], {}],
    [1, "m", 0.0, {}, {"x": 1, "y": 2}], [0, "m", 0.0, {"user_id": "u1"}, {"time": 1.0}],
])
_entry = st.lists(st.one_of(_good_event, _good_event, _good_event, _odd_event), min_size=1, max_size=12)
_op = st.one_of(st.tuples(st.just("entry"), st.sampled_from([0.0, 0.5, 2.0]), _entry),
                st.tuples(st.just("flush"), st.booleans(), st.booleans()))


def _at(raw: Any, clock: float, integer_time: bool) -> Any:
    """``raw`` with its time offset made absolute (good events carry an offset from the clock)."""
    if isinstance(raw, list) and len(raw) == 5 and isinstance(raw[2], float) and abs(raw[2]) < 100:
        ts = clock + raw[2]
        return [raw[0], raw[1], int(ts) if integer_time else ts, raw[3], raw[4]]
    return raw


def _points(flush: Flush) -> list[str]:
    """A flush's points, in a fixed order (the order of dirty series is not part of the result)."""
    return sorted(repr(point) for point in flush.points)


def _one_by_one(windows: ShardWindows, raws: list[Any], ms: int, now_s: float,
                privacy: Callable[[Any], Any] | None) -> list[tuple[int, str, str]]:
    rejected = []
    for index, raw in enumerate(raws):
        result = validate(privacy(raw) if privacy else raw, Position(ms, 0, index))
        if not isinstance(result, tuple):
            result = windows.record(result, now_s)  # type: ignore[assignment]
        if result is not None:
            rejected.append((index, *result))
    return rejected


@pytest.mark.parametrize("pseudonymise", [False, True])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, min_size=5, max_size=40), integer_time=st.booleans())
def test_record_batch_equals_one_by_one(pseudonymise: bool, ops: list[tuple[Any, ...]],
                                        integer_time: bool) -> None:
    privacy = Pseudonymizer(("user_id",), b"key").wire_event if pseudonymise else None
    batched, single = ShardWindows(**CONFIG), ShardWindows(**CONFIG)
    clock = BASE_S
    for step, op in enumerate(ops):
        if op[0] == "flush":
            flushes = [w.collect_due(clock, idle=op[1]) for w in (batched, single)]
            assert _points(flushes[0]) == _points(flushes[1]), step
            if op[2]:
                batched.commit(flushes[0])
                single.commit(flushes[1])
            continue
        clock += op[1]
        raws = [_at(raw, clock, integer_time) for raw in op[2]]
        got = batched.record_batch(raws, step, 0, clock, privacy)
        want = _one_by_one(single, raws, step, clock, privacy)
        assert got == want, (step, raws)
    assert batched.snapshot() == single.snapshot()
    final = [w.collect_all() for w in (batched, single)]
    assert _points(final[0]) == _points(final[1])


def one_by_one(windows: ShardWindows) -> list[int]:
    """The positions of the events that ``windows`` records one by one (off the fast path) from now on."""
    calls: list[int] = []
    original = windows._record_one

    def spy(*args: Any) -> Any:
        calls.append(args[3])
        return original(*args)

    windows._record_one = spy  # type: ignore[method-assign]
    return calls


def test_record_batch_takes_the_fast_path_and_dead_letters_neighbours() -> None:
    """A known series is folded without validate(); a bad neighbour is rejected alone."""
    windows = ShardWindows(**CONFIG)
    good = [0, "m", BASE_S + 0.5, {"bot": "elena"}, {"x": 1.0, "flag": True}]
    assert windows.record_batch([good], 1, 0, BASE_S) == []
    calls = one_by_one(windows)
    bad = [0, "m", BASE_S + 0.6, {"bot": "elena"}, {"x": math.nan, "flag": False}]
    rejected = windows.record_batch([good, bad, good], 2, 0, BASE_S)
    assert rejected == [(1, "invalid_value", "field 'x': nan is not a finite number")]
    assert calls == [1]  # only the bad event left the fast path
    (point,) = windows.collect_all().points
    assert point.fields["event_count"] == 3
    assert point.fields["x_sum"] == 3.0
    assert point.fields["flag"] == 3


def test_an_entry_recorded_in_slices_is_the_entry_recorded_whole() -> None:
    """The worker records long entries in slices; ``first_index`` keeps positions (ties of "last")."""
    tags = {"bot": "elena"}
    raws = [[2, "m", BASE_S + 0.5, tags, {"g": float(value)}] for value in (1, 3, 2, 5, 4)]
    raws.insert(2, [2, "m", BASE_S + 0.5, tags, {"g": math.inf}])
    whole, sliced = ShardWindows(**CONFIG), ShardWindows(**CONFIG)
    rejected_whole = whole.record_batch(raws, 9, 0, BASE_S)
    rejected_sliced = sliced.record_batch(raws[:3], 9, 0, BASE_S)
    rejected_sliced += sliced.record_batch(raws[3:], 9, 0, BASE_S, None, 3)
    bad = (2, "invalid_value", "field 'g': inf is not a finite number")
    assert rejected_whole == rejected_sliced == [bad]
    assert whole.snapshot() == sliced.snapshot()
    (point,) = sliced.collect_all().points
    assert point.fields["g"] == 4.0  # equal event times: the last position wins


def test_a_new_series_with_valid_tags_opens_on_the_fast_path() -> None:
    """At high cardinality most events open a series: one whose tags pass as they are skips
    validate(), a new user's id included; a bad or empty tag value goes one by one, which decides."""
    windows = ShardWindows(**CONFIG)
    seen = [[0, "m", BASE_S + 0.5, {"user_id": user, "bot": "elena"}, {"x": 1.0}] for user in ("u1", "u2")]
    assert windows.record_batch(seen, 1, 0, BASE_S) == []
    calls = one_by_one(windows)
    later = BASE_S + 2.5  # the next window: both series are new there, their tag values known
    events = [[0, "m", later, {"user_id": "u1", "bot": "elena"}, {"x": 1.0}],  # opens the window
              [0, "m", later, {"bot": "elena", "user_id": "u2"}, {"x": 2.0}],
              [0, "m", later, {"user_id": "u2", "bot": "elena"}, {"x": 4.0}],
              [0, "m", later, {"user_id": "u9-never-seen", "bot": "elena"}, {"x": 8.0}],
              [0, "m", later, {"user_id": "", "bot": "elena"}, {"x": 16.0}],  # the empty tag is left out
              [0, "m", later, {"user_id": "bad\nid", "bot": "elena"}, {"x": 32.0}]]
    rejected = windows.record_batch(events, 2, 0, BASE_S + 2)
    assert rejected == [(5, "invalid_name", "value of tag 'user_id' 'bad\\nid' contains a newline")]
    assert calls == [0, 4, 5]  # the window's first event, the empty and the bad value went one by one
    points = sorted(windows.collect_all().points, key=lambda point: (point.time_ns, point.tags))
    assert [(dict(point.tags).get("user_id"), point.fields["event_count"], point.fields["x_sum"])
            for point in points[2:]] == [(None, 1, 16.0), ("u1", 1, 1.0), ("u2", 2, 6.0),
                                         ("u9-never-seen", 1, 8.0)]


def test_a_series_of_an_earlier_window_reopens_with_its_key_and_the_guard_still_counts() -> None:
    """The users of one window come back in the next: their series reopen from the key memo (the
    same key objects, no checks again), and a full window still collapses them, counted."""
    windows = ShardWindows(**CONFIG)
    users = [f"u{i}" for i in range(1, 7)]

    def event(user: str, ts: float) -> list[Any]:
        return [0, "m", ts, {"user_id": user, "bot": "elena"}, {"x": 1.0}]

    def series_of(ts: float) -> dict[str, Any]:
        window = windows._windows[int(ts // CONFIG["window_s"])]
        return {dict(s.key[1])["user_id"]: s for s in window.series.values()}

    first, second, third = BASE_S + 0.5, BASE_S + 2.5, BASE_S + 4.5
    assert windows.record_batch([event(user, first) for user in users[:4]], 1, 0, BASE_S) == []
    calls = one_by_one(windows)
    assert windows.record_batch([event(user, second) for user in ("u1", *users[:4])], 2, 0, BASE_S + 2) == []
    assert calls == [0]        # the window's first event; the other series reopened on the fast path
    assert all(series_of(second)[user].key is series_of(first)[user].key for user in users[:4])
    # the third window fills with u3..u6 first: u1 and u2, known, must collapse and be counted
    third_events = [event(user, third) for user in (*users[2:], "u1", "u2")]
    assert windows.record_batch(third_events, 3, 0, BASE_S + 4) == []
    assert windows.overflowed == 2
    overflow = series_of(third)["__overflow__"]
    assert overflow.count == 2 and sorted(series_of(third)) == ["__overflow__", "u3", "u4", "u5", "u6"]
