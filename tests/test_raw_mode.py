"""Raw mode in the windows, the catalogue and the configuration (no servers).

A raw measurement's input points are each written as themselves (same measurement, tags, fields
and timestamp), still validated, held in the window state until the sink has them, and part of
every snapshot, so a restored state writes exactly what the lost one would have.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest

from consumer.aggregation import catalogue
from consumer.aggregation.catalogue import MeasurementSpec, Mode, mode_of
from consumer.aggregation.privacy import Pseudonymizer
from consumer.aggregation.window import SNAPSHOT_VERSION, ShardWindows
from consumer.core.config import WorkerConfig
from consumer.core.model import Point
from producers.durations import ConfigError
from producers.wire import KIND_COUNT, KIND_EMIT, KIND_GAUGE, KIND_OBSERVE, KIND_POINT

T_NS = 1_700_000_000_123_456_789
T_S = T_NS / 1e9
NOW_S = T_S + 1.0
CONFIG: dict[str, Any] = {"window_s": 10.0, "grace_s": 2.0, "allowed_lateness_s": 300.0,
                          "max_future_s": 60.0, "max_series": 4, "raw_measurements": ("audit", "ev_*")}


def _windows(**overrides: Any) -> ShardWindows:
    return ShardWindows(**{**CONFIG, **overrides})


def _point(measurement: str, offset_ns: int, fields: dict[str, Any], **tags: str) -> list[Any]:
    return [KIND_POINT, measurement, T_NS + offset_ns, tags, fields]


def test_mode_comes_from_the_catalogue_then_from_the_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mode_of("ev_login", ("audit", "ev_*")) is Mode.RAW
    assert mode_of("audit", ("audit",)) is Mode.RAW
    assert mode_of("Audit", ("audit",)) is Mode.AGGREGATE        # names are case-sensitive
    assert mode_of("cpu", ("audit", "ev_*")) is Mode.AGGREGATE
    assert mode_of("attachment_monitoring", ("*",)) is Mode.AGGREGATE  # catalogued: its entry decides
    assert all(spec.mode is Mode.AGGREGATE for spec in catalogue.CATALOGUE.values())
    monkeypatch.setitem(catalogue.CATALOGUE, "safety_events",
                        MeasurementSpec("safety_events", "a test", ("bot_name",), mode=Mode.RAW))
    assert mode_of("safety_events") is Mode.RAW
    windows = ShardWindows(**{**CONFIG, "raw_measurements": ()})  # no pattern: the catalogue alone
    assert windows.record_batch([_point("safety_events", 0, {"x": 1})], 1, 0, NOW_S) == []
    assert windows.collect_all().points == [Point("safety_events", (), {"x": 1}, T_NS)]


def test_the_setting_is_parsed_and_a_bad_value_is_one_clear_error() -> None:
    config = WorkerConfig.from_env({"TELEMETRY_RAW_MEASUREMENTS": " audit , ev_*,logins[0-9]"})
    assert config.raw_measurements == ("audit", "ev_*", "logins[0-9]")
    assert WorkerConfig().raw_measurements == ()
    assert config.describe()["raw_measurements"] == "audit,ev_*,logins[0-9]"
    for bad, problem in (("audit,,ev_*", "item 2 is empty"), ("audit,", "item 2 is empty"),
                         ("ev_[ab", "item 1 has an unclosed '['")):
        with pytest.raises(ConfigError) as error:
            WorkerConfig.from_env({"TELEMETRY_RAW_MEASUREMENTS": bad})
        message = str(error.value)
        assert message.startswith("TELEMETRY_RAW_MEASUREMENTS=") and problem in message
        assert "\n" not in message


def test_each_input_point_is_written_as_itself_with_its_exact_time_and_types() -> None:
    windows = _windows()
    raws = [
        _point("audit", 0, {"n": 1, "x": 1.5, "ok": True, "s": "a b,c"}, user_id="u1"),
        _point("audit", 1, {"n": 2, "x": 2.5, "ok": False, "s": "d"}, user_id="u1"),  # same window
        _point("audit", 1, {"n": 3}, user_id="u2"),
        [KIND_EMIT, "ev_emit", T_S, {"bot": "elena", "empty": ""}, {"x": 3, "event_count": 9, "x_min": 1.0}],
        [KIND_COUNT, "ev_count", T_S, {}, {"n": 4}],
        [KIND_GAUGE, "ev_gauge", T_S, {}, {"g": 5}],
        [KIND_OBSERVE, "ev_observe", T_S, {}, {"ms": 6}],
        _point("cpu", 0, {"x": 1.0}),                     # not raw: aggregated
    ]
    assert windows.record_batch(raws, 1, 0, NOW_S) == []
    assert windows.raw_pending == 7 and windows.dirty_count == 8
    emit_ns = round(T_S * 1e6) * 1000
    got = windows.collect_all().points
    assert got[:7] == [
        Point("audit", (("user_id", "u1"),), {"n": 1, "x": 1.5, "ok": True, "s": "a b,c"}, T_NS),
        Point("audit", (("user_id", "u1"),), {"n": 2, "x": 2.5, "ok": False, "s": "d"}, T_NS + 1),
        Point("audit", (("user_id", "u2"),), {"n": 3}, T_NS + 1),
        Point("ev_emit", (("bot", "elena"),), {"x": 3, "event_count": 9, "x_min": 1.0}, emit_ns),
        Point("ev_count", (), {"n": 4}, emit_ns),
        Point("ev_gauge", (), {"g": 5.0}, emit_ns),
        Point("ev_observe", (), {"ms": 6.0}, emit_ns),
    ]
    assert [type(v) for v in got[0].fields.values()] == [int, float, bool, str]
    assert got[7].measurement == "cpu" and got[7].fields["event_count"] == 1


def test_raw_points_are_validated_and_keep_their_field_types() -> None:
    windows = _windows()
    raws = [
        _point("audit", 0, {"x": 1}),
        _point("audit", 1, {"x": 1.5}),                            # int before: InfluxDB would refuse
        _point("audit", 2, {"x": math.nan}),
        ["audit", 1, 2, 3],
        _point("audit", 3, {"time": 1}),
        _point("audit", 90 * 10**9, {"x": 2}),                     # past the future limit
        _point("audit", 4, {"x": 3}, **{"bad\ntag": "v"}),
        _point("audit", 5, {"x": 4}),
    ]
    rejected = windows.record_batch(raws, 1, 0, NOW_S)
    assert [(index, reason) for index, reason, _detail in rejected] == [
        (1, "type_conflict"), (2, "invalid_value"), (3, "invalid_event"), (4, "invalid_name"),
        (5, "from_future"), (6, "invalid_name")]
    assert "written as int before" in rejected[0][2]
    assert [p.fields for p in windows.collect_all().points] == [{"x": 1}, {"x": 4}]


def test_lateness_does_not_apply_and_the_watermark_does_not_move() -> None:
    windows = _windows()
    windows.record_batch([[KIND_EMIT, "cpu", T_S, {}, {"x": 1.0}]], 1, 0, NOW_S)
    old = _point("audit", -86_400 * 10**9, {"x": 1})               # a day before the watermark
    assert windows.record_batch([old], 2, 0, NOW_S) == []
    assert windows.watermark == T_S
    late = windows.record_batch([[KIND_EMIT, "cpu", T_S - 86_400, {}, {"x": 1.0}]], 3, 0, NOW_S)
    assert late[0][1] == "too_late"                                # an aggregated one of that age is not
    raw_times = [p.time_ns for p in windows.collect_all().points if p.measurement == "audit"]
    assert raw_times == [T_NS - 86_400 * 10**9]


def test_raw_points_are_pseudonymised_before_anything_else() -> None:
    privacy = Pseudonymizer(("user_id",), b"key")
    windows = _windows()
    assert windows.record_batch([_point("audit", 0, {"x": 1}, user_id="u42")], 1, 0, NOW_S,
                                privacy.wire_event) == []
    (point,) = windows.collect_all().points
    assert point.tags == (("user_id", privacy.tags({"user_id": "u42"})["user_id"]),)
    assert "u42" not in repr(point) and b"u42" not in windows.snapshot()


def test_commit_drops_what_was_written_and_keeps_what_came_since() -> None:
    windows = _windows()
    windows.record_batch([_point("audit", 0, {"x": 1})], 1, 0, NOW_S)
    flush = windows.collect_due(NOW_S, idle=False)
    assert [p.fields for p in flush.points] == [{"x": 1}]
    windows.record_batch([_point("audit", 1, {"x": 2})], 2, 0, NOW_S)
    again = windows.collect_due(NOW_S, idle=False)                # not committed: written again
    assert [p.fields for p in again.points] == [{"x": 1}, {"x": 2}]
    windows.commit(flush)
    assert windows.raw_pending == 1
    assert [p.fields for p in windows.collect_due(NOW_S, idle=False).points] == [{"x": 2}]
    windows.commit(again)
    windows.commit(flush)                                          # an old flush again: nothing more
    assert windows.raw_pending == 0 and windows.collect_due(NOW_S, idle=False).points == []


def test_pending_raw_points_and_types_survive_a_snapshot() -> None:
    windows = _windows()
    windows.record_batch([_point("audit", 0, {"x": 1, "s": "é", "ok": True}, user_id="u1"),
                          [KIND_EMIT, "cpu", T_S, {}, {"y": 1.0}]], 1, 0, NOW_S)
    blob = windows.snapshot()
    assert msgpack.unpackb(blob)["v"] == SNAPSHOT_VERSION
    restored = ShardWindows.restore(blob, **CONFIG)
    assert restored.snapshot() == blob
    assert restored.collect_all().points == windows.collect_all().points
    assert restored.record_batch([_point("audit", 1, {"x": 1.5})], 2, 0, NOW_S)[0][1] == "type_conflict"


def test_a_snapshot_without_raw_state_loads_both_ways() -> None:
    windows = _windows(raw_measurements=())
    windows.record_batch([[KIND_EMIT, "audit", T_S, {}, {"x": 1.0}]], 1, 0, NOW_S)
    blob = windows.snapshot()
    state = msgpack.unpackb(blob)
    assert state["v"] == SNAPSHOT_VERSION and "raw" not in state
    restored = ShardWindows.restore(blob, **CONFIG)                # "audit" is raw now
    assert restored.raw_pending == 0
    assert restored.collect_all().points == windows.collect_all().points  # its window is still written
    assert restored.record_batch([_point("audit", 0, {"x": 1})], 2, 0, NOW_S) == []
    assert restored.raw_pending == 1                               # new points are raw, not aggregated
    back = ShardWindows.restore(restored.snapshot(), **{**CONFIG, "raw_measurements": ()})
    assert back.record_batch([[KIND_EMIT, "audit", T_S, {}, {"x": 2.0}]], 3, 0, NOW_S) == []
    assert msgpack.unpackb(restored.snapshot())["reg"] == state["reg"]   # the registry was kept


def test_pending_raw_points_count_against_the_memory_budget() -> None:
    windows = _windows()
    windows.record_batch([_point("audit", i, {"x": i}) for i in range(5)], 1, 0, NOW_S)
    assert windows.dirty_count == 5 and windows.series_count == 0
