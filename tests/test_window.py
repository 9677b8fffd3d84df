"""ShardWindows, scenario by scenario: fields per kind, grace, lateness, commit, conflicts, overflow."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.aggregation.window import OVERFLOW_VALUE, ShardWindows
from consumer.core.model import Event, Point, Position
from producers.durations import ConfigError

T0 = 1_700_000_000.0  # a multiple of 10: window [T0, T0 + 10)
NS = 1_000_000_000
CONFIG: dict[str, Any] = {"window_s": 10.0, "grace_s": 2.0, "allowed_lateness_s": 30.0, "max_future_s": 60.0,
                          "max_series": 100, "overflow_tags": ("user_id",)}
_sequence = iter(range(10**9))


def ev(kind: int, fields: dict[str, Any], ts: float, tags: dict[str, str] | None = None,
       measurement: str = "m", position: Position | None = None) -> Event:
    return Event(kind, measurement, ts, tags if tags is not None else {"bot_name": "elena"}, fields,
                 position or Position(next(_sequence), 0, 0))


def windows(**overrides: Any) -> ShardWindows:
    return ShardWindows(**{**CONFIG, **overrides})


def by_series(points: list[Point]) -> dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, Any]]:
    return {(p.measurement, p.tags, p.time_ns): p.fields for p in points}


def test_fields_written_per_kind_and_value_type() -> None:
    w = windows()
    for ts, fields in ((T0 + 1, {"score": 1, "ok": True, "mood": "calm"}),
                       (T0 + 3, {"score": 2.5, "ok": False, "mood": "tense"}),
                       (T0 + 2, {"ok": True})):
        assert w.record(ev(0, fields, ts), T0) is None
    assert w.record(ev(1, {"hits": 3}, T0 + 4), T0) is None
    assert w.record(ev(1, {"hits": 4}, T0 + 5), T0) is None
    assert w.record(ev(2, {"level": 7}, T0 + 6), T0) is None
    assert w.record(ev(2, {"level": 5}, T0 + 5), T0) is None       # earlier event time: not last
    for ms in (10.0, 20.0, 30.0, 40.0):
        assert w.record(ev(3, {"lat": ms}, T0 + 7), T0) is None
    points = w.collect_all().points
    assert by_series(points) == {("m", (("bot_name", "elena"),), int(T0) * NS): {
        "event_count": 11,
        "score": 1.75, "score_min": 1.0, "score_max": 2.5, "score_sum": 3.5,
        "ok": 2,
        "mood": "tense",
        "hits": 7,
        "level": 7.0,
        "lat_count": 4, "lat_sum": 100.0, "lat_min": 10.0, "lat_max": 40.0, "lat_mean": 25.0,
        "lat_p50": pytest.approx(20.0, rel=0.01), "lat_p90": pytest.approx(30.0, rel=0.01),
        "lat_p99": pytest.approx(30.0, rel=0.01),
    }}
    fields = points[0].fields
    names = ("event_count", "score", "score_min", "ok", "hits", "level", "lat_count")
    assert [type(fields[k]) for k in names] == [int, float, float, int, int, float, int]


def test_catalogue_semantics_override_the_value_type() -> None:
    w = windows()
    tags = {"user_id": "u1", "bot_name": "elena", "risk_level": "LOW"}
    for ts, days in ((T0 + 2, 4), (T0 + 1, 9)):
        assert w.record(ev(0, {"consecutive_days": days, "dependency_count": days}, ts, tags,
                           "attachment_monitoring"), T0) is None
    (point,) = w.collect_all().points
    assert point.fields == {"event_count": 2, "consecutive_days": 4.0, "dependency_count": 6.5,
                            "dependency_count_min": 4.0, "dependency_count_max": 9.0,
                            "dependency_count_sum": 13.0}


def test_last_ties_go_to_the_later_position_whatever_the_arrival_order() -> None:
    w = windows()
    late_position, early_position = Position(5, 0, 1), Position(5, 0, 0)
    assert w.record(ev(2, {"g": 2.0}, T0 + 1, position=late_position), T0) is None
    assert w.record(ev(2, {"g": 1.0}, T0 + 1, position=early_position), T0) is None
    assert w.record(ev(0, {"s": "first"}, T0 + 1, position=Position(6, 0, 0)), T0) is None
    assert w.record(ev(0, {"s": "second"}, T0 + 1, position=Position(6, 0, 1)), T0) is None
    (point,) = w.collect_all().points
    assert (point.fields["g"], point.fields["s"]) == (2.0, "second")


def test_a_field_aggregates_only_over_events_that_carry_it() -> None:
    w = windows()
    w.record(ev(0, {"x": 4.0}, T0 + 1), T0)
    w.record(ev(0, {}, T0 + 2), T0)
    w.record(ev(0, {"y": True}, T0 + 3), T0)
    (point,) = w.collect_all().points
    assert point.fields == {"event_count": 3, "x": 4.0, "x_min": 4.0, "x_max": 4.0, "x_sum": 4.0, "y": 1}


def test_windows_are_epoch_aligned_and_flushed_after_grace_by_watermark() -> None:
    w = windows()
    w.record(ev(0, {"x": 1.0}, T0 + 9.999), T0)
    w.record(ev(0, {"x": 2.0}, T0 + 10.0), T0)  # next window starts exactly here
    assert len(w.collect_due(T0 + 100, idle=False)) == 0  # watermark T0+10 < end T0+10 + grace 2
    w.record(ev(0, {"x": 3.0}, T0 + 11.999), T0)
    assert len(w.collect_due(T0 + 100, idle=False)) == 0
    w.record(ev(0, {"x": 4.0}, T0 + 12.0), T0)
    flush = w.collect_due(T0 + 12, idle=False)
    assert [(p.time_ns, p.fields["x"]) for p in flush.points] == [(int(T0) * NS, 1.0)]
    w.commit(flush)
    assert len(w.collect_due(T0 + 12, idle=False)) == 0
    idle = w.collect_due(T0 + 21.999, idle=True)  # worker clock, not yet past end + grace
    assert len(idle) == 0
    idle = w.collect_due(T0 + 22.0, idle=True)
    assert [(p.time_ns, p.fields["x_sum"]) for p in idle.points] == [((int(T0) + 10) * NS, 9.0)]


def test_late_event_within_lateness_rewrites_its_window_with_the_full_value() -> None:
    w = windows()
    w.record(ev(0, {"x": 1.0}, T0 + 1), T0)
    w.record(ev(0, {"x": 1.0}, T0 + 15), T0)
    first = w.collect_due(T0 + 15, idle=False)
    w.commit(first)
    assert by_series(first.points) == {("m", (("bot_name", "elena"),), int(T0) * NS):
                                       {"event_count": 1, "x": 1.0, "x_min": 1.0, "x_max": 1.0, "x_sum": 1.0}}
    assert w.record(ev(0, {"x": 3.0}, T0 + 2), T0 + 16) is None  # late, but within lateness
    assert w.late_events == 1
    second = w.collect_due(T0 + 16, idle=False)
    expected = {"event_count": 2, "x": 2.0, "x_min": 1.0, "x_max": 3.0, "x_sum": 4.0}
    assert by_series(second.points) == {("m", (("bot_name", "elena"),), int(T0) * NS): expected}


def test_too_late_is_rejected_and_the_window_evicted_after_lateness() -> None:
    w = windows()
    w.record(ev(0, {"x": 1.0}, T0 + 1), T0)
    w.commit(w.collect_all())
    # window [T0, T0+10) is reachable while its end >= watermark - 30
    assert w.record(ev(0, {"x": 1.0}, T0 + 40), T0 + 40) is None
    assert w.evict() == 0
    assert w.record(ev(0, {"x": 5.0}, T0 + 9), T0 + 40) is None  # end T0+10 == watermark - 30: accepted
    w.commit(w.collect_all())
    assert w.record(ev(0, {"x": 1.0}, T0 + 40.5), T0 + 41) is None
    reason, detail = w.record(ev(0, {"x": 5.0}, T0 + 9), T0 + 41) or ("", "")
    assert reason == "too_late" and "watermark" in detail
    w.commit(w.collect_all())
    assert w.evict() == 1
    assert w.open_windows == 1


def test_from_future_is_rejected_and_does_not_move_the_watermark() -> None:
    w = windows()
    result = w.record(ev(0, {"x": 1.0}, T0 + 61), T0)
    assert result is not None and result[0] == "from_future"
    assert w.watermark is None
    assert w.record(ev(0, {"x": 1.0}, T0 + 60), T0) is None
    assert w.watermark == T0 + 60


def test_uncommitted_points_are_collected_again_and_recording_after_collect_stays_dirty() -> None:
    w = windows()
    w.record(ev(0, {"x": 1.0}, T0 + 1), T0)
    lost = w.collect_all()           # the sink failed: no commit
    again = w.collect_all()
    assert by_series(again.points) == by_series(lost.points)
    w.record(ev(0, {"x": 3.0}, T0 + 2), T0)  # recorded between collect and commit
    w.commit(again)
    assert w.dirty_count == 1
    final = w.collect_all()
    assert final.points[0].fields["event_count"] == 2
    w.commit(final)
    assert w.dirty_count == 0 and len(w.collect_all()) == 0


def test_type_conflict_and_field_clash_across_events_reject_the_whole_event() -> None:
    w = windows()
    assert w.record(ev(0, {"x": 1.0}, T0 + 1), T0) is None
    conflict = w.record(ev(0, {"y": 1.0, "x": True}, T0 + 1), T0)
    assert conflict is not None and conflict[0] == "type_conflict"
    gauge = w.record(ev(2, {"x": 1.0}, T0 + 1), T0)
    assert gauge is not None and gauge[0] == "type_conflict"
    clash = w.record(ev(0, {"x_max": 5.0}, T0 + 1), T0)
    assert clash is not None and clash[0] == "field_clash"
    assert w.record(ev(0, {"x": 2}, T0 + 1), T0) is None  # an int is still a number for a mean
    (point,) = w.collect_all().points
    assert point.fields == {"event_count": 2, "x": 1.5, "x_min": 1.0, "x_max": 2.0, "x_sum": 3.0}  # no y


def test_type_registry_survives_restore() -> None:
    w = windows()
    w.record(ev(0, {"x": 1.0}, T0 + 1), T0)
    restored = ShardWindows.restore(w.snapshot(), **CONFIG)
    result = restored.record(ev(0, {"x": "text"}, T0 + 2), T0)
    assert result is not None and result[0] == "type_conflict"


def test_snapshot_restore_continues_identically() -> None:
    a = windows()
    events = [ev(k, f, T0 + t, {"user_id": f"u{t % 3}"}) for t, (k, f) in enumerate(
        [(0, {"x": 1.5, "s": "a"}), (3, {"lat": 12.0}), (1, {"n": 2}), (2, {"g": 4.0}),
         (0, {"x": 2, "s": "b"}), (3, {"lat": 300.0}), (1, {"n": 5}), (2, {"g": 1.0})] * 3)]
    for event in events[:12]:
        a.record(event, T0)
    a.commit(a.collect_due(T0 + 30, idle=True))
    b = ShardWindows.restore(a.snapshot(), **CONFIG)
    assert b.snapshot() == a.snapshot()
    for event in events[12:]:
        assert a.record(event, T0 + 30) == b.record(event, T0 + 30)
    assert by_series(a.collect_all().points) == by_series(b.collect_all().points)
    assert (a.watermark, a.series_count, a.late_events) == (b.watermark, b.series_count, b.late_events)


def test_overflow_bomb_keeps_series_bounded_and_totals_exact() -> None:
    max_series = 1000
    w = windows(max_series=max_series)
    users = 200_000
    for i in range(users):
        tags = {"user_id": f"u{i}", "bot_name": "elena" if i % 2 else "marcus"}
        assert w.record(ev(1, {"n": 1}, T0 + (i % 10) * 0.5, tags), T0) is None
    overflow_series = 2  # one per bot_name
    assert w.series_count <= max_series + overflow_series
    assert w.overflowed == users - max_series
    points = w.collect_all().points
    assert sum(p.fields["event_count"] for p in points) == users
    assert sum(p.fields["n"] for p in points) == users
    overflow = {p.tags: p.fields["event_count"] for p in points if dict(p.tags)["user_id"] == OVERFLOW_VALUE}
    assert set(overflow) == {(("bot_name", "elena"), ("user_id", OVERFLOW_VALUE)),
                             (("bot_name", "marcus"), ("user_id", OVERFLOW_VALUE))}
    assert sum(overflow.values()) == users - max_series
    assert len(w.snapshot()) < 200_000  # the checkpoint stays small too


def test_overflow_without_overflow_tags_collapses_every_tag_value() -> None:
    w = windows(max_series=2)
    for i in range(10):
        w.record(ev(0, {"x": 1.0}, T0 + 1, {"message_id": f"m{i}"}), T0)
    points = w.collect_all().points
    assert sorted((p.tags, p.fields["event_count"]) for p in points) == [
        ((("message_id", OVERFLOW_VALUE),), 8), ((("message_id", "m0"),), 1), ((("message_id", "m1"),), 1)]
    assert w.overflowed == 8


def test_overflow_is_per_window() -> None:
    w = windows(max_series=1)
    w.record(ev(0, {"x": 1.0}, T0 + 1, {"user_id": "a"}), T0)
    w.record(ev(0, {"x": 1.0}, T0 + 2, {"user_id": "b"}), T0)
    w.record(ev(0, {"x": 1.0}, T0 + 11, {"user_id": "b"}), T0)
    assert sorted((p.time_ns, p.tags) for p in w.collect_all().points) == [
        (int(T0) * NS, (("user_id", "__overflow__"),)), (int(T0) * NS, (("user_id", "a"),)),
        ((int(T0) + 10) * NS, (("user_id", "b"),))]


def test_snapshot_between_collect_and_commit_then_after_commit() -> None:
    w = windows()
    w.record(ev(0, {"x": 1.0}, T0 + 1), T0)
    flush = w.collect_all()
    during = ShardWindows.restore(w.snapshot(), **CONFIG)
    w.commit(flush)
    after = ShardWindows.restore(w.snapshot(), **CONFIG)
    assert (during.dirty_count, after.dirty_count) == (1, 0)
    assert len(during.collect_all()) == 1 and len(after.collect_all()) == 0


def test_the_same_tags_in_any_order_are_one_series() -> None:
    w = windows()
    w.record(ev(0, {"x": 1.0}, T0 + 1, {"a": "1", "b": "2", "c": "3"}), T0)
    w.record(ev(0, {"x": 2.0}, T0 + 2, {"c": "3", "a": "1", "b": "2"}), T0)
    w.record(ev(0, {"x": 3.0}, T0 + 3, {"b": "2", "c": "3", "a": "1"}), T0)
    (point,) = w.collect_all().points
    assert (point.tags, point.fields["event_count"]) == ((("a", "1"), ("b", "2"), ("c", "3")), 3)


def test_shed_drops_written_windows_oldest_first_and_refuses_their_late_events() -> None:
    w = windows(allowed_lateness_s=300.0)
    for k in range(5):  # windows T0, T0+10, ..., T0+40, two series each
        for user in ("a", "b"):
            w.record(ev(0, {"x": 1.0}, T0 + 10 * k + 1, {"user_id": user}), T0)
    assert w.shed(0) == 0  # nothing written yet: nothing may go
    w.commit(w.collect_due(T0, idle=False))  # watermark T0+41: windows up to T0+20 are due
    assert w.series_count == 10
    assert w.shed(6) == 4  # the two oldest written windows
    assert w.series_count == 6
    assert w.shed(0) == 2  # T0+20 is written too; T0+30 and T0+40 are not due yet
    late = w.record(ev(0, {"x": 1.0}, T0 + 5, {"user_id": "a"}), T0)
    assert late is not None and late[0] == "too_late" and "memory budget" in late[1]
    restored = ShardWindows.restore(w.snapshot(), **{**CONFIG, "allowed_lateness_s": 300.0})
    assert restored.record(ev(0, {"x": 1.0}, T0 + 25, {"user_id": "a"}), T0) is not None
    assert restored.record(ev(0, {"x": 1.0}, T0 + 31, {"user_id": "a"}), T0) is None


def test_restoring_windows_of_another_length_is_a_clear_configuration_error() -> None:
    w = windows()
    w.record(ev(0, {"x": 1.0}, T0 + 1), T0)
    with pytest.raises(ConfigError, match=r"TELEMETRY_WINDOW=5s.*10s long"):
        ShardWindows.restore(w.snapshot(), **{**CONFIG, "window_s": 5.0})
    nothing_retained = windows().snapshot()
    assert ShardWindows.restore(nothing_retained, **{**CONFIG, "window_s": 5.0}).open_windows == 0


def test_every_per_value_memo_is_bounded_under_a_user_id_bomb() -> None:
    """Validation, pseudonymisation and windows each remember values; none may grow without bound."""
    from consumer.aggregation import privacy, validate

    w = windows(max_series=1000)
    pseudonymizer = privacy.Pseudonymizer(("user_id",), b"key")
    for i in range(110_000):  # past the bound of every memo
        raw = [1, "m", T0 + (i % 10) * 0.5, {"user_id": f"user-{i}", "bot_name": "elena"}, {"n": 1}]
        event = validate.validate(raw, Position(i, 0, 0))
        assert isinstance(event, Event)
        assert w.record(pseudonymizer.apply(event), T0) is None
    assert len(validate._good_tag_values) <= validate._NAME_CACHE_LIMIT
    assert len(pseudonymizer._cache) <= privacy._CACHE_LIMIT
    assert w.series_count <= 1001
    assert sum(len(window.aliases) for window in w._windows.values()) <= 1001
    assert sum(p.fields["event_count"] for p in w.collect_all().points) == 110_000


def test_a_flood_of_field_names_is_capped_per_measurement() -> None:
    """Field names made from data would grow the checkpointed registry without end: capped, reported."""
    from consumer.aggregation.window import MAX_FIELDS_PER_MEASUREMENT

    w = windows()
    results = [w.record(ev(0, {f"f{i}": 1.0}, T0 + 1), T0) for i in range(MAX_FIELDS_PER_MEASUREMENT + 50)]
    assert results[:MAX_FIELDS_PER_MEASUREMENT] == [None] * MAX_FIELDS_PER_MEASUREMENT
    reasons = {result[0] for result in results[MAX_FIELDS_PER_MEASUREMENT:] if result is not None}
    assert reasons == {"too_many_fields"} and all(results[MAX_FIELDS_PER_MEASUREMENT:])
    assert "'f1000'" in results[MAX_FIELDS_PER_MEASUREMENT][1]  # type: ignore[index]
    assert w.record(ev(0, {"f7": 2.0}, T0 + 2), T0) is None      # known fields still go in
    assert w.record(ev(0, {"other": 2.0}, T0 + 2, measurement="n"), T0) is None  # per measurement
    restored = ShardWindows.restore(w.snapshot(), **CONFIG)
    assert restored.record(ev(0, {"f2000": 1.0}, T0 + 3), T0)[0] == "too_many_fields"  # type: ignore[index]
