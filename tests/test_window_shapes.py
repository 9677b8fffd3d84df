"""A series' accumulators as one flat list laid out by a shared :class:`Shape`.

The layout is what keeps an open series-window of the main measurement under 1 KiB; these tests
prove it changes no output and no restore: fields in any order and arriving late, every
semantics, records from before the flat layout, and more distinct field orders than the shape
tree keeps.
"""

from __future__ import annotations

import random
import time
import tracemalloc
from typing import Any

import msgpack
import pytest

from consumer.aggregation.sketch import QuantileSketch
from consumer.aggregation.window import ShardWindows
from consumer.aggregation.window_state import (
    EMPTY_SHAPE,
    MAX_SHAPES,
    SUMMARY,
    WIDTHS,
    Series,
    Shape,
    decode_series,
    encode_series,
)
from consumer.core.model import FieldValue
from producers.wire import KIND_COUNT, KIND_EMIT, KIND_GAUGE, KIND_OBSERVE

NOW_S = 1_700_000_100.0
T_S = 1_700_000_050.5
CONFIG: dict[str, Any] = {"window_s": 10.0, "grace_s": 0.0, "allowed_lateness_s": 300.0, "max_future_s": 60.0,
                          "max_series": 100_000}


def _windows() -> ShardWindows:
    return ShardWindows(**CONFIG)


def _series_of(windows: ShardWindows) -> dict[str, Series]:
    """Each series of the only window, by its ``user`` tag."""
    (window,) = windows._windows.values()
    return {dict(series.key[1])["user"]: series for series in window.series.values()}


def _fields(series: Series) -> dict[str, FieldValue]:
    return series.shape.fields(series.acc, series.count)


def _every_semantics(user: str, step: int) -> list[list[Any]]:
    """One event of each kind for ``user``: mean, true count, last string, sum, last number, summary."""
    tags = {"user": user}
    return [[KIND_EMIT, "m", T_S + step, tags, {"x": 1.5 * step, "ok": step % 2 == 0, "s": f"v{step}"}],
            [KIND_COUNT, "m", T_S + step, tags, {"n": step}],
            [KIND_GAUGE, "m", T_S + step, tags, {"g": float(step)}],
            [KIND_OBSERVE, "m", T_S + step, tags, {"lat": 0.25 * step}]]


def test_series_whose_fields_arrive_in_the_same_order_share_one_shape() -> None:
    windows = _windows()
    events = [[KIND_EMIT, "m", T_S, {"user": f"u{i}"}, {"a": 1.0, "b": True}] for i in range(50)]
    assert windows.record_batch(events, 1, 0, NOW_S) == []
    series = list(_series_of(windows).values())
    assert len({id(s.shape) for s in series}) == 1
    shape = series[0].shape
    assert shape.names == ("a", "b") and shape.width == WIDTHS[0] + WIDTHS[1] == len(series[0].acc)
    assert shape is EMPTY_SHAPE.with_field("a", 0).with_field("b", 1)


def test_fields_in_other_orders_and_arriving_later_give_the_same_values() -> None:
    """Each series sees the same events, its fields first met in another order: same point."""
    windows = _windows()
    steps = list(range(1, 7))
    for user in ("forward", "backward", "shuffled"):
        events = [event for step in steps for event in _every_semantics(user, step)]
        if user == "backward":
            events.reverse()
        elif user == "shuffled":
            random.Random(7).shuffle(events)
        # each event alone: a new field joins a series already open
        for index, event in enumerate(events):
            assert windows.record_batch([event], 1, index, NOW_S) == []
    series = _series_of(windows)
    assert series["forward"].shape is not series["backward"].shape   # another order, another layout
    expected = _fields(series["forward"])
    assert {name: _fields(s) for name, s in series.items() if name != "forward"} == {
        "backward": expected, "shuffled": expected}
    assert (expected["x"], expected["ok"], expected["n"], expected["g"], expected["lat_count"]) == (
        1.5 * 3.5, 3, 21, 6.0, 6)
    assert expected["s"] == "v6" and expected["x_min"] == 1.5 and expected["lat_max"] == 1.5


def test_a_record_round_trips_with_its_shape_and_its_sketches() -> None:
    windows = _windows()
    for step in range(1, 5):
        assert windows.record_batch(_every_semantics("u", step), 1, step, NOW_S) == []
    series = _series_of(windows)["u"]
    decoded = decode_series(msgpack.unpackb(msgpack.packb(encode_series(series)), raw=False))
    assert decoded.shape is series.shape                 # restored series share the live shapes
    assert _fields(decoded) == _fields(series)
    start = series.shape.offsets["lat"]
    assert series.acc[start] == SUMMARY and isinstance(decoded.acc[start + 5], QuantileSketch)
    assert isinstance(series.acc[start + 5], QuantileSketch)   # encoding left the live sketch alone
    restored = ShardWindows.restore(windows.snapshot(), **CONFIG)
    assert restored.collect_all().points == windows.collect_all().points


def _record_before_the_flat_layout(series: Series) -> list[Any]:
    """The record as workers wrote it before: accumulators as ``{name: [code, ...state]}``."""
    fields = {}
    for name, start, end in series.shape.spans:
        acc = series.acc[start:end]
        if acc[0] == SUMMARY:
            acc[5] = acc[5].to_state()
        fields[name] = acc
    return [series.key[0], series.key[1], series.count, series.version, series.committed, fields]


def test_a_record_from_before_the_flat_layout_still_decodes() -> None:
    windows = _windows()
    for step in range(1, 4):
        assert windows.record_batch(_every_semantics("u", step), 1, step, NOW_S) == []
    series = _series_of(windows)["u"]
    old = msgpack.unpackb(msgpack.packb(_record_before_the_flat_layout(series)), raw=False)
    assert len(old) == 6 and isinstance(old[5], dict)
    decoded = decode_series(old)
    assert decoded.shape is series.shape and _fields(decoded) == _fields(series)
    assert (decoded.count, decoded.version, decoded.committed) == (
        series.count, series.version, series.committed)


def test_past_the_shape_limit_new_layouts_serve_their_series_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fields in ever new orders must not grow the process-wide tree: past MAX_SHAPES a new shape
    is not kept, and its series still aggregate and restore exactly."""
    monkeypatch.setattr(Shape, "cached", MAX_SHAPES)
    root = EMPTY_SHAPE.with_field("unseen_a", 0)
    assert root is not EMPTY_SHAPE.with_field("unseen_a", 0)     # not kept: made again
    windows = _windows()
    events = [[KIND_EMIT, "m", T_S, {"user": f"u{i}"}, {f"f{i}": 1.0, f"f{i + 1}": 2.0}] for i in range(3)]
    assert windows.record_batch(events * 2, 1, 0, NOW_S) == []
    series = _series_of(windows)
    assert Shape.cached == MAX_SHAPES
    assert {user: _fields(s) for user, s in series.items()} == {
        f"u{i}": {"event_count": 2, f"f{i}": 1.0, f"f{i}_min": 1.0, f"f{i}_max": 1.0, f"f{i}_sum": 2.0,
                  f"f{i + 1}": 2.0, f"f{i + 1}_min": 2.0, f"f{i + 1}_max": 2.0, f"f{i + 1}_sum": 4.0}
        for i in range(3)}
    restored = ShardWindows.restore(windows.snapshot(), **CONFIG)
    assert restored.collect_all().points == windows.collect_all().points


def test_an_open_series_window_of_the_main_measurement_holds_under_one_kib() -> None:
    """The issue's memory target, in the steady state: a second window of the same users (the
    tag pools and validation memos, bounded and shared by every window, are warm)."""
    users = 5_000
    bots, levels = ("elena", "marcus", "jake", "ryan"), ("low", "medium", "high")
    rng = random.Random(3)
    now = time.time()
    base = (int(now) // 10 - 5) * 10

    def window_events(start: float) -> list[list[Any]]:
        return [[KIND_EMIT, "attachment_monitoring", start + 1 + rng.random() * 8,
                 {"user_id": f"user_{u:06d}", "bot_name": bots[u % 4], "risk_level": levels[u % 3]},
                 {"emotional_intensity": rng.random(), "interaction_frequency": rng.random() * 10,
                  "dependency_count": float(rng.randint(0, 14)), "consecutive_days": rng.randint(0, 30),
                  "intervention_provided": rng.random() < 0.2}]
                for u in range(users) for _ in range(2)]

    first, second = window_events(base), window_events(base + 10)
    windows = ShardWindows(**{**CONFIG, "allowed_lateness_s": 3_600.0})
    assert windows.record_batch(first, 1, 0, now) == []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert windows.record_batch(second, 2, 0, now) == []
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert windows.dirty_count == 2 * users
    assert held / users <= 1024, f"{held / users:.0f} bytes per open series-window"
