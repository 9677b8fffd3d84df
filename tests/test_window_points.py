"""``ShardWindows.record_batch`` reads points (kind 4) and rejected inputs (kind 5) itself.

A point is the emit of its fields at its time in seconds; a rejected input is a rejection with
the reason and detail its producer found, at its own index; and a point of a known series stays
on the fused fast path (no one-by-one validation).
"""

from __future__ import annotations

from typing import Any

from consumer.aggregation.window import ShardWindows
from producers.wire import KIND_EMIT, KIND_POINT, KIND_REJECTED

BASE_NS = 1_700_000_000_123_456_789
CONFIG: dict[str, Any] = {"window_s": 2.0, "grace_s": 1.0, "allowed_lateness_s": 6.0,
                          "max_future_s": 5.0, "max_series": 4}
NOW_S = BASE_NS / 1e9 + 1.0


def _point(offset_ns: int, value: Any) -> list[Any]:
    return [KIND_POINT, "cpu", BASE_NS + offset_ns, {"host": "a"}, {"usage": value, "ok": True}]


def _emit(offset_ns: int, value: Any) -> list[Any]:
    return [KIND_EMIT, "cpu", (BASE_NS + offset_ns) / 1e9, {"host": "a"}, {"usage": value, "ok": True}]


def test_points_aggregate_exactly_as_the_emits_they_stand_for() -> None:
    values = [(0, 0.5), (10, 1.5), (2_000_000_000, 2.0), (20, 7)]
    as_points, as_emits = ShardWindows(**CONFIG), ShardWindows(**CONFIG)
    assert as_points.record_batch([_point(o, v) for o, v in values], 1, 0, NOW_S) == []
    assert as_emits.record_batch([_emit(o, v) for o, v in values], 1, 0, NOW_S) == []
    assert as_points.snapshot() == as_emits.snapshot()
    flushes = [sorted(map(repr, windows.collect_all().points)) for windows in (as_points, as_emits)]
    assert flushes[0] == flushes[1]


def test_a_rejected_input_is_rejected_at_its_index_with_the_producers_reason() -> None:
    windows = ShardWindows(**CONFIG)
    bad = [KIND_REJECTED, "", BASE_NS, {"reason": "unparsable_line", "detail": "line 2: no fields"},
           {"line": "cpu,host=a"}]
    nameless = [KIND_REJECTED, "", BASE_NS, {}, {}]
    rejected = windows.record_batch([_point(0, 1.0), bad, _point(1, 2.0), nameless], 1, 0, NOW_S)
    assert rejected == [(1, "unparsable_line", "line 2: no fields"),
                        (3, "unparsable_line", "input that is not a point")]
    (point,) = windows.collect_all().points
    assert point.fields["event_count"] == 2


def test_a_point_of_a_known_series_takes_the_fast_path() -> None:
    windows = ShardWindows(**CONFIG)
    assert windows.record_batch([_point(0, 1.0)], 1, 0, NOW_S) == []
    calls: list[int] = []
    original = windows._record_one

    def spy(*args: Any) -> Any:
        calls.append(args[3])
        return original(*args)

    windows._record_one = spy  # type: ignore[method-assign]
    assert windows.record_batch([_point(5, 2.0), _point(6, float("nan")), _point(7, 3.0)], 2, 0, NOW_S) == [
        (1, "invalid_value", "field 'usage': nan is not a finite number")]
    assert calls == [1]  # only the bad point left the fast path
    (point,) = windows.collect_all().points
    assert point.fields["event_count"] == 3 and point.fields["usage_sum"] == 6.0


def test_a_rejected_input_that_names_a_pseudonymised_tag_keeps_no_raw_value() -> None:
    from consumer.aggregation.privacy import Pseudonymizer

    privacy = Pseudonymizer(("user_id",), b"key").wire_event
    windows = ShardWindows(**CONFIG)
    tags = {"reason": "unparsable_line", "detail": "line 3: bad tag 'user_id=alice'"}
    bad = [KIND_REJECTED, "", BASE_NS, tags, {"line": "cpu,user_id=alice"}]
    ((index, reason, detail),) = windows.record_batch([bad], 1, 0, NOW_S, privacy)
    assert (index, reason) == (0, "unparsable_line")
    assert detail.startswith("line 3: ") and "alice" not in detail
