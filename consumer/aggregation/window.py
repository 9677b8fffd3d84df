"""Event-time windows of one shard: events in, one point per series per window out.

Window boundaries
    Tumbling windows of ``window_s`` aligned to the Unix epoch: an event at time ``ts`` belongs
    to window ``k = floor(ts / window_s)``, which spans ``[k * window_s, (k + 1) * window_s)`` and
    is written with timestamp ``k * window_s`` (in ns). A *series* is a measurement plus its full
    tag set; each series that has events in a window gets exactly one point for that window.

Watermark, grace and lateness
    The watermark is the highest event time this shard has accepted. A window is first flushed
    when the watermark passes its end plus ``grace_s`` (or, when the caller says the input is
    idle, when the worker's clock does). It is then *retained*, with its full state, for as long
    as an event may still arrive for it: an event is accepted while its window's end is no more
    than ``allowed_lateness_s`` before the watermark. Such a late event makes its series-window
    dirty again and the next flush rewrites the point with the recomputed value (same timestamp
    and tags, so InfluxDB overwrites it). Older events are rejected ``too_late``; events more
    than ``max_future_s`` ahead of the worker's clock are rejected ``from_future`` (one bad clock
    must not push everybody else's events out as late). A retained window is evicted once no
    event can be accepted for it any more and everything in it has been committed.

Flush and commit (what is acknowledged when)
    ``collect_due``/``collect_all`` return a :class:`Flush`: the points of dirty series-windows
    plus the version of each. Nothing is marked clean until the caller, after the sink has
    stored the points, calls :meth:`ShardWindows.commit`; a series recorded into again in
    between stays dirty. If the write fails, the next collect returns the points again.

Raw mode
    A measurement in raw mode (:mod:`consumer.aggregation.raw_points`) is not windowed: each validated event
    is held as a point of its own (exact time) and every collect returns the pending ones with
    the windows' points; commit drops them. They are part of the snapshot and of ``dirty_count``.

Fields (see ``docs/semantics.md``)
    ``event_count`` always; then per field by semantics (:mod:`consumer.aggregation.validate`): mean ->
    ``F`` (mean), ``F_min``, ``F_max``, ``F_sum``; true_count -> ``F`` = number of True; last ->
    ``F`` = value with the greatest event time, ties to the later stream position; sum -> integer
    ``F``; summary -> ``F_count``, ``F_sum``, ``F_min``, ``F_max``, ``F_mean``, ``F_p50/p90/p99``
    (DDSketch, :mod:`consumer.aggregation.sketch`). Value aggregates are floats, counts ints, always.

Types
    Per measurement, each field keeps the semantics it was first recorded with (a registry that
    is part of the state): a later event that records it differently is ``type_conflict``, one
    whose generated names collide with another field's is ``field_clash``. The whole event is
    rejected, so an event is either entirely in a point or entirely a dead letter.

Cardinality
    At most ``max_series`` series per measurement per window keep their own tags; a new series
    past that has the values of its ``overflow_tags`` replaced by ``__overflow__`` (all of its
    tag values, when it has none of them or when ``max_series`` overflow series exist too), so
    totals are preserved in the overflow series. Memory per window is thereby bounded. A
    measurement has at most ``MAX_FIELDS_PER_MEASUREMENT`` distinct field names; an event that
    would add more is ``too_many_fields`` (field names are not collapsed: a made-up one is a bug).

Exactly-once
    :meth:`ShardWindows.snapshot` captures everything (watermark, every accumulator, sketch,
    last-value tie-break position, dirty versions, the type registry); an object restored from it
    produces exactly the outputs the original would have. The worker checkpoints the snapshot
    atomically with the acknowledgement of the entries it contains.

Usage::

    windows = ShardWindows(window_s=10, grace_s=2, allowed_lateness_s=300, max_future_s=60,
                           max_series=10_000, overflow_tags=("user_id",))
    rejected = windows.record(event, now_s=time.time())     # None, or (reason, detail)
    flush = windows.collect_due(time.time(), idle=False)
    sink.write(flush.points)
    windows.commit(flush)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from consumer.aggregation.point_events import as_emit, input_rejection
from consumer.aggregation.raw_points import RawPoints
from consumer.aggregation.validate import (
    MAX_TS_S,
    MIN_TS_S,
    learn_tags,
    validate,
)
from consumer.aggregation.window_log import HEAD, LogWrite, WindowLog, read_log
from consumer.aggregation.window_state import (
    EMPTY_SHAPE,
    MAX_FIELDS_PER_MEASUREMENT,
    SNAPSHOT_VERSION,
    MeasurementTypes,
    Series,
    SeriesKey,
    Window,
    decode_window,
    pack_snapshot,
    snapshot_head,
    unpack_snapshot,
    update_fields,
)
from consumer.core.model import (
    REASON_FROM_FUTURE,
    REASON_TOO_LATE,
    Event,
    Point,
    Position,
)
from consumer.sinks.line_protocol import INT64_MAX, INT64_MIN
from producers.durations import ConfigError
from producers.wire import KIND_EMIT, KIND_POINT, KIND_REJECTED, KINDS

__all__ = ["DEFAULT_OVERFLOW_TAGS", "MAX_FIELDS_PER_MEASUREMENT", "OVERFLOW_VALUE", "SNAPSHOT_VERSION",
           "Flush", "Rejection", "ShardWindows"]

OVERFLOW_VALUE: Final = "__overflow__"
DEFAULT_OVERFLOW_TAGS: Final = ("user_id",)
_floor: Final = math.floor
KIND_LIMIT: Final = len(KINDS)  # kinds are 0 .. KIND_LIMIT - 1

Rejection = tuple[str, str]


class Flush:
    """Points to write, and the versions :meth:`ShardWindows.commit` marks clean once written."""

    __slots__ = ("_marks", "_raw_mark", "points")

    def __init__(self) -> None:
        self.points: list[Point] = []
        self._marks: list[tuple[Window, Series, int]] = []
        self._raw_mark = 0  # raw points up to this mark are in ``points`` (RawPoints.commit)

    def __len__(self) -> int:
        return len(self.points)

    def __repr__(self) -> str:
        return f"Flush(points={len(self.points)})"


class ShardWindows:
    """The aggregation state of one shard: ``record`` events, ``collect`` points, ``commit``."""

    def __init__(self, *, window_s: float, grace_s: float, allowed_lateness_s: float,
                 max_future_s: float, max_series: int,
                 overflow_tags: tuple[str, ...] = DEFAULT_OVERFLOW_TAGS,
                 raw_measurements: tuple[str, ...] = ()) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self._window_s = float(window_s)
        self._window_ns = round(window_s * 1e9)
        self._grace_s = float(grace_s)
        self._lateness_s = float(allowed_lateness_s)
        self._max_future_s = float(max_future_s)
        self._max_series = int(max_series)
        self._alias_limit = 4 * self._max_series + 64  # tag-order memos per window (aliases, raw_aliases)
        self._overflow_tags = tuple(overflow_tags)
        self._windows: dict[int, Window] = {}
        self._measurements: dict[str, MeasurementTypes] = {}
        # registries of measurements aggregated before and raw now: kept for a switch back
        self._dormant: dict[str, MeasurementTypes] = {}
        self._raw = RawPoints(tuple(raw_measurements))
        self._watermark = -math.inf  # no event yet; -inf keeps the hot path free of None checks
        self._shed_below: int | float = -math.inf  # windows below this index were shed (memory budget)
        self._pool: dict[Any, Any] = {}  # shared key parts (``_shared``)
        # alias (tags in an event's order) -> (series key, alias) of a series opened before (``_find_series``)
        self._keys: dict[tuple[Any, ...], tuple[SeriesKey, tuple[Any, ...]]] = {}
        self._log = WindowLog()  # what the stored checkpoint holds, so the next one sends only changes
        self.overflowed = 0
        """Events whose tags were collapsed to ``__overflow__`` (cardinality guard)."""
        self.late_events = 0
        """Accepted events that made an already flushed window dirty again (rewrites)."""

    # -- statistics -------------------------------------------------------------------------
    @property
    def watermark(self) -> float | None:
        """Highest event time accepted so far (``None`` before the first event)."""
        return None if self._watermark == -math.inf else self._watermark

    @property
    def open_windows(self) -> int:
        """Windows held in memory (not yet flushed, or retained for late events)."""
        return len(self._windows)

    @property
    def series_count(self) -> int:
        """Series-windows held in memory."""
        return sum(len(window.series) for window in self._windows.values())

    @property
    def dirty_count(self) -> int:
        """Series-windows whose current value has not been committed, plus raw points not written."""
        return sum(len(window.dirty) for window in self._windows.values()) + len(self._raw)

    @property
    def raw_pending(self) -> int:
        """Raw-mode points accepted and not yet written."""
        return len(self._raw)

    # -- recording --------------------------------------------------------------------------
    def record(self, event: Event, now_s: float) -> Rejection | None:
        """Add one validated event; ``None`` when accepted, else ``(reason, detail)``.

        Reasons: ``from_future``, ``too_late``, ``type_conflict``, ``field_clash``,
        ``too_many_fields``. A rejected event changes nothing. The common case is inline (the
        worker's own path is :meth:`record_batch`, which comes here for what it does not fold itself).
        """
        ts = event.ts
        if ts > now_s + self._max_future_s:
            return self._from_future(ts, now_s)
        index = _floor(ts / self._window_s)
        watermark = self._watermark
        if (index + 1) * self._window_s < watermark - self._lateness_s or index < self._shed_below:
            return REASON_TOO_LATE, self._too_late_detail(ts, index, watermark)
        measurement = self._measurements.get(event.measurement)
        if measurement is None:
            measurement = self._measurements[event.measurement] = MeasurementTypes(event.measurement)
        codes = measurement.codes[event.kind]
        for name, value in event.fields.items():
            admitted = codes.get(name)
            if admitted is None or value.__class__ not in admitted:
                return self._record_new_fields(event, now_s, measurement)
        window = self._windows.get(index)
        if window is None:
            window = self._windows[index] = Window(index)
        elif window.flushed:
            self.late_events += 1
        window.blob = None
        series = window.aliases.get((event.measurement, *event.tags, *event.tags.values()))
        if series is None:
            series = self._find_series(window, event.measurement, event.tags)
        series.count += 1
        series.version += 1
        window.dirty[series] = None
        if ts > watermark:
            self._watermark = ts
        position = event.position
        update_fields(series, event.fields, ts, codes, position.entry_ms, position.entry_seq,
                      position.index)
        return None

    def record_batch(  # noqa: C901 - the worker's hot loop, one function on purpose (calls cost)
            self, raws: Sequence[Any], entry_ms: int, entry_seq: int, now_s: float,
            privacy: Callable[[Any], Any] | None = None,
            first_index: int = 0) -> list[tuple[int, str, str]]:
        """Validate and record one stream entry's wire events; ``(index, reason, detail)`` per rejection.

        Result and state are exactly those of, for each event in turn, ``privacy``
        (pseudonymisation of the wire event), :func:`validate` with its :class:`Position` and
        :meth:`record`. This is that loop
        with its common case fused: an event of a series its window already holds, whose field
        names and value types its measurement has recorded before, is checked and folded in place
        (no ``Event``, no ``Position``, no sorted key), by its shape's compiled fold
        (:mod:`consumer.aggregation.fold`) when the event has the series' fields. Everything else
        goes one by one, which decides. Pass the same ``privacy`` on every call (its series are
        looked up by raw tags).
        ``raws`` may be a slice of the entry's events that starts at index ``first_index``.
        A point (kind 4) is the emit it stands for, at its int ns time in seconds, on the same fast
        path; a rejected input (kind 5) is rejected with its producer's reason and detail
        (:mod:`consumer.aggregation.point_events`): here, where each event's kind is read anyway.
        """
        rejected: list[tuple[int, str, str]] = []
        measurements, windows, window_s = self._measurements, self._windows, self._window_s
        ts_limit = min(now_s + self._max_future_s, MAX_TS_S)
        lateness_s, shed_below = self._lateness_s, self._shed_below
        current: Window | None = None
        for index, raw in enumerate(raws, first_index):
            if raw.__class__ is list and len(raw) == 5:
                kind, name, ts, tags, fields = raw
                cls = ts.__class__
                if cls is int and kind == KIND_POINT:  # a point's int ns: an emit in float seconds
                    kind, ts, cls = KIND_EMIT, ts / 1e9, float
                measurement = measurements.get(name) if name.__class__ is str else None
                if (measurement is not None and (cls is float or cls is int) and MIN_TS_S <= ts <= ts_limit
                        and kind.__class__ is int and 0 <= kind < KIND_LIMIT and tags.__class__ is dict
                        and fields.__class__ is dict and (kind == KIND_EMIT or len(fields) == 1)):
                    ts = float(ts)
                    window_index = _floor(ts / window_s)
                    if current is None or current.index != window_index:
                        current = windows.get(window_index)
                    if (current is not None and window_index >= shed_below
                            and (window_index + 1) * window_s >= self._watermark - lateness_s):
                        aliases = current.raw_aliases if privacy else current.aliases
                        alias = (name, *tags, *tags.values())
                        try:
                            series = aliases.get(alias)
                        except TypeError:  # an unhashable tag value: the one-by-one path says so
                            series, alias = None, ()  # no key memo entry, and not a str: slow path
                        folded = False
                        if series is not None:  # the common case: its shape's compiled fold
                            fold = measurement.folds[kind].get(series.shape)
                            if fold is None:
                                fold = measurement.fold_for(kind, series.shape)
                            folded = fold(series.acc, fields, ts, entry_ms, entry_seq, index)
                        if not folded:  # a new series, or fields its shape does not have yet
                            codes = measurement.codes[kind]
                            for field, value in fields.items():  # inline: a call per event costs a fifth
                                admitted = codes.get(field)
                                cls = value.__class__
                                if admitted is None or cls not in admitted:
                                    break
                                if cls is float:
                                    if value - value != 0.0:  # NaN and infinities give NaN here
                                        break
                                elif cls is int:
                                    if not INT64_MIN <= value <= INT64_MAX:
                                        break
                                elif cls is not bool:
                                    break  # a string: its length and encoding are checked one by one
                            else:
                                if series is None and privacy is None:
                                    series = self._open_series(current, name, tags, alias)
                                    if series is not None and series.shape is EMPTY_SHAPE:  # new here
                                        names = tuple(fields)
                                        opener = measurement.openers[kind].get(names)
                                        if opener is None:
                                            opener = measurement.opener_for(kind, names)
                                        opener(series, fields, ts, entry_ms, entry_seq, index)
                                        folded = True
                                if series is not None and not folded:
                                    update_fields(series, fields, ts, codes, entry_ms, entry_seq, index)
                                    folded = True
                        if folded and series is not None:  # (folded says so; for the type checker)
                            if current.flushed:
                                self.late_events += 1
                            current.blob = None
                            series.count += 1
                            series.version += 1
                            current.dirty[series] = None
                            if ts > self._watermark:
                                self._watermark = ts
                            continue
            failure = self._record_one(raw, entry_ms, entry_seq, index, now_s, privacy)
            if failure is not None:
                rejected.append((index, *failure))
        return rejected

    def _record_one(self, raw: Any, entry_ms: int, entry_seq: int, index: int, now_s: float,
                    privacy: Callable[[Any], Any] | None) -> Rejection | None:
        """:meth:`record_batch`'s slow path: pseudonymise, validate and record one event.

        A point (kind 4) is an emit at its time in seconds; a rejected input (kind 5) is rejected
        with the reason and detail the producer found (after pseudonymisation, which withholds a
        detail that may name a raw value).
        """
        if raw.__class__ is list and raw:
            if raw[0] == KIND_REJECTED:
                return input_rejection(privacy(raw) if privacy else raw)
            if self._raw.enabled and len(raw) == 5 and raw[1].__class__ is str and self._raw.is_raw(raw[1]):
                return self._record_raw(raw, Position(entry_ms, entry_seq, index), now_s, privacy)
            if raw[0] == KIND_POINT and len(raw) == 5:
                raw = as_emit(raw)
        # pseudonymised before validation, as a pseudonymising producer would have sent it
        result = validate(privacy(raw) if privacy else raw, Position(entry_ms, entry_seq, index))
        if isinstance(result, tuple):
            return result
        event = result
        rejection = self.record(event, now_s)
        if rejection is None and privacy and len(result.tags) == len(raw[3]):
            # the raw tags were clean: remember which series they pseudonymise to
            window = self._windows[_floor(event.ts / self._window_s)]
            series = window.aliases.get((event.measurement, *event.tags, *event.tags.values()))
            if series is not None:  # None: collapsed by the cardinality guard, always counted here
                if len(window.raw_aliases) >= self._alias_limit:
                    window.raw_aliases.clear()
                window.raw_aliases[(result.measurement, *raw[3], *raw[3].values())] = series
        return rejection

    def _record_raw(self, raw: list[Any], position: Position, now_s: float,
                    privacy: Callable[[Any], Any] | None) -> Rejection | None:
        """An event of a raw-mode measurement: validated, then held to be written as itself.

        A point keeps its exact int ns; other times are float seconds, kept to the microsecond.
        Lateness does not apply (no window to recompute) and the watermark does not move; the
        future limit does, as for every event.
        """
        time_ns = raw[2] if raw[0] == KIND_POINT and raw[2].__class__ is int else None
        if raw[0] == KIND_POINT:
            raw = as_emit(raw)
        result = validate(privacy(raw) if privacy else raw, position, aggregate=False)
        if isinstance(result, tuple):
            return result
        if result.ts > now_s + self._max_future_s:
            return self._from_future(result.ts, now_s)
        return self._raw.add(result, time_ns if time_ns is not None else round(result.ts * 1e6) * 1000)

    def _from_future(self, ts: float, now_s: float) -> Rejection:
        return REASON_FROM_FUTURE, (f"event time {ts:.3f} is {ts - now_s:.3f}s ahead of the worker's "
                                    f"clock (limit {self._max_future_s:g}s)")

    def _record_new_fields(self, event: Event, now_s: float,
                           measurement: MeasurementTypes) -> Rejection | None:
        """Slow path: a field (or value type) this measurement has not been checked for yet."""
        rejection = measurement.admit(event)
        return rejection if rejection is not None else self.record(event, now_s)

    def _open_series(self, window: Window, measurement: str, tags: dict[Any, Any],
                     alias: tuple[Any, ...]) -> Series | None:
        """:meth:`record_batch`'s first event of a series in a window, or ``None`` for the slow path.

        A new series is the common case at high cardinality (one per user and bot in every
        window), so it must not cost an ``Event`` and a second pass of checks. This is what
        :func:`~consumer.aggregation.validate.validate` then :meth:`record` do for it, when the
        cardinality guard has room and either the series was opened before with these tags in
        this order (``alias``: its key and alias are reused, checks, sort and all) or its tags pass
        validation's checks as they are (:func:`~consumer.aggregation.validate.learn_tags`: known
        good, or checked now, a new user's id say); anything else (a bad or empty value, a
        collapse, which must be counted) returns ``None`` and goes one by one, which decides.
        """
        if window.per_measurement.get(measurement, 0) >= self._max_series:
            return None
        if alias not in self._keys and not learn_tags(tags):
            return None
        return self._find_series(window, measurement, tags, alias)

    def _find_series(self, window: Window, measurement: str, tags: dict[str, str],
                     alias: tuple[Any, ...] | None = None) -> Series:
        """The series of ``measurement`` and ``tags`` by its canonical (sorted) key, created or
        collapsed as needed; ``alias`` is ``(measurement, *tags, *tags.values())`` if known.

        The hot path looks series up by the tags in the order the event carries them (no sort);
        this maps a new order to the canonical series once and remembers it, in the window and
        for the windows after it (``_keys``: the same users come back in every window, and their
        key and alias then cost neither the work nor the memory again), except for events
        collapsed by the cardinality guard, which always come here so they are counted.
        """
        known = self._keys.get((measurement, *tags, *tags.values()) if alias is None else alias)
        key = (measurement, tuple(sorted(tags.items()))) if known is None else known[0]
        series = window.series.get(key)
        if series is None:
            shared = self._shared(key) if known is None else key
            series = self._new_series(window, shared)
            if series.key is not shared:
                return series  # collapsed: overflow
        if known is not None:
            alias = known[1]
        else:
            shared_measurement, pairs = series.key
            by_name = {pair[0]: pair for pair in pairs}
            ordered = [by_name[name] for name in tags]  # the shared pairs, in the event's order
            alias = (shared_measurement, *[pair[0] for pair in ordered], *[pair[1] for pair in ordered])
            if len(self._keys) >= self._alias_limit:
                self._keys.clear()  # a flood of new series: bound the memo, it refills itself
            self._keys[alias] = (series.key, alias)
        if len(window.aliases) >= self._alias_limit:
            window.aliases.clear()  # many tag orders: bound the memo, it refills itself
        window.aliases[alias] = series
        return series

    def _shared(self, key: SeriesKey) -> SeriesKey:
        """``key`` made of the objects other series-windows use already, where they repeat.

        The measurement name, tag names and the pairs of tags that are not ``overflow_tags``
        (a bot name, a risk level) are the same in most series: one copy serves all of them
        instead of one per series-window, as the events' own strings would. A high-cardinality
        tag's pair (``user_id``) is not pooled: the pool would cost what it saves.
        """
        pool = self._pool
        if len(pool) >= self._alias_limit:
            pool.clear()  # a flood of new values: bound the pool, it refills itself
        high = self._overflow_tags
        pairs = []
        for pair in key[1]:
            name = pair[0]
            if name in high:
                shared_name = pool.get(name)
                if shared_name is None:
                    shared_name = pool[name] = name
                pairs.append((shared_name, pair[1]))
            else:
                shared_pair = pool.get(pair)
                if shared_pair is None:
                    shared_pair = pool[pair] = (pool.setdefault(name, name), pair[1])
                pairs.append(shared_pair)
        measurement = key[0]
        return pool.setdefault(measurement, measurement), tuple(pairs)

    def _new_series(self, window: Window, key: SeriesKey) -> Series:
        measurement = key[0]
        admitted = window.per_measurement.get(measurement, 0)
        if admitted >= self._max_series:
            self.overflowed += 1
            key = self._collapse(key, all_tags=admitted >= 2 * self._max_series)
            series = window.series.get(key)
            if series is not None:
                return series
        series = window.series[key] = Series(key)
        window.per_measurement[measurement] = admitted + 1
        return series

    def _collapse(self, key: SeriesKey, *, all_tags: bool) -> SeriesKey:
        measurement, tags = key
        names = self._overflow_tags
        if not all_tags and any(tag in names for tag, _ in tags):
            return measurement, tuple((tag, OVERFLOW_VALUE if tag in names else value) for tag, value in tags)
        return measurement, tuple((tag, OVERFLOW_VALUE) for tag, _ in tags)

    def _too_late_detail(self, ts: float, index: int, watermark: float) -> str:
        start = index * self._window_s
        if index < self._shed_below:
            return (f"event time {ts:.3f} is in window [{start:g}, {start + self._window_s:g}) which was "
                    "already written and dropped early to stay within the worker's memory budget")
        return (f"event time {ts:.3f} is in window [{start:g}, {start + self._window_s:g}) which ended more "
                f"than {self._lateness_s:g}s before the watermark {watermark:.3f}")

    # -- flushing ---------------------------------------------------------------------------
    def collect_due(self, now_s: float, *, idle: bool) -> Flush:
        """Points of dirty windows whose end + grace has passed the watermark (or ``now_s`` if idle).

        Also evicts windows that no event can reach any more.
        """
        flush = self._collect_raw()
        if self._watermark == -math.inf:
            return flush
        horizon = max(self._watermark, now_s) if idle else self._watermark
        for window in self._windows.values():
            if window.dirty and self._due_at(window) <= horizon:
                self._collect(window, flush)
        self.evict()
        return flush

    def due_only_if_idle(self, now_s: float) -> bool:
        """True when a dirty window is due by ``now_s`` but not yet by the watermark.

        Only then does it matter whether the input is idle: the caller may ask first.
        """
        watermark = self._watermark
        if watermark == -math.inf:
            return False
        return any(window.dirty and watermark < self._due_at(window) <= now_s
                   for window in self._windows.values())

    def _due_at(self, window: Window) -> float:
        """When a window is first written: its end plus grace (by the watermark, or the clock if idle)."""
        return (window.index + 1) * self._window_s + self._grace_s

    def collect_all(self) -> Flush:
        """Points of every dirty window, due or not (drain, shutdown)."""
        flush = self._collect_raw()
        for window in self._windows.values():
            if window.dirty:
                self._collect(window, flush)
        return flush

    def _collect_raw(self) -> Flush:
        """A flush that starts with every pending raw point (they are due as soon as accepted)."""
        flush = Flush()
        if len(self._raw):
            flush.points, flush._raw_mark = self._raw.collect()
        return flush

    def _collect(self, window: Window, flush: Flush) -> None:
        time_ns = window.index * self._window_ns
        window.flushed = True
        window.blob = None
        for series in window.dirty:
            key = series.key
            flush.points.append(Point(key[0], key[1], series.shape.fields(series.acc, series.count), time_ns))
            flush._marks.append((window, series, series.version))

    def commit(self, flush: Flush) -> None:
        """The sink has stored ``flush.points``: mark them clean unless recorded into since."""
        if flush._raw_mark:
            self._raw.commit(flush._raw_mark)
        for window, series, version in flush._marks:
            window.blob = None
            if version > series.committed:
                series.committed = version
            if series.version == series.committed and series in window.dirty:
                del window.dirty[series]
                window.cleaned.append(series)  # changed, and no longer in ``dirty``: the checkpoint saves it

    def evict(self) -> int:
        """Drop clean windows that ended more than ``allowed_lateness_s`` before the watermark."""
        cutoff = self._watermark - self._lateness_s
        gone = [index for index, window in self._windows.items()
                if not window.dirty and (index + 1) * self._window_s < cutoff]
        for index in gone:
            del self._windows[index]
        return len(gone)

    def shed(self, max_series: int) -> int:
        """Drop written windows early, oldest first, until at most ``max_series`` series-windows remain.

        For a worker whose memory budget is full of windows kept only for late events: reading
        stops, so the watermark stops, so :meth:`evict` never frees them. Only clean windows that
        are past their end + grace go; an event that arrives later for one of them is
        ``too_late`` (it cannot be added to a point whose state is gone). Returns how many
        series-windows were dropped.
        """
        dropped = 0
        count = self.series_count
        for index in sorted(self._windows):
            window = self._windows[index]
            if count <= max_series or window.dirty:
                break
            if (index + 1) * self._window_s + self._grace_s > self._watermark:
                break
            del self._windows[index]
            count -= len(window.series)
            dropped += len(window.series)
            self._shed_below = max(self._shed_below, index + 1)
        return dropped

    # -- checkpointing ----------------------------------------------------------------------
    def _scalars(self) -> dict[str, Any]:
        return {
            "wm": self.watermark,
            "ovf": self.overflowed,
            "late": self.late_events,
            "w": self._window_s,
            "shed": None if self._shed_below == -math.inf else self._shed_below,
        }

    def _all_measurements(self) -> dict[str, MeasurementTypes]:
        return {**self._measurements, **self._dormant} if self._dormant else self._measurements

    def snapshot(self) -> bytes:
        """Everything needed to resume exactly, as one blob (encoded by
        :mod:`consumer.aggregation.window_state`).

        The worker's checkpoint is :meth:`checkpoint` instead, which sends only what changed.
        """
        return pack_snapshot(self._scalars(), self._windows, self._all_measurements(), self._raw.state())

    def checkpoint(self, *, full: bool) -> LogWrite:
        """The state fields that changed since the last :meth:`checkpoint_saved` (all if ``full``).

        Encodes only the series changed since (:mod:`consumer.aggregation.window_log`); changes nothing here.
        """
        head = {**snapshot_head(self._scalars(), self._all_measurements()), **self._raw.state()}
        return self._log.write(self._windows, head, full=full)

    def checkpoint_saved(self, write: LogWrite) -> None:
        """``write`` (the latest :meth:`checkpoint`) is stored: the next one starts from it."""
        self._log.saved(write)

    @classmethod
    def restore(cls, blob: bytes, **config: Any) -> ShardWindows:
        """A new object, configured by ``config``, in exactly the state ``blob`` describes.

        Raises:
            ConfigError: the snapshot holds windows of another length than ``window_s``.
        """
        state = unpack_snapshot(blob)
        return cls._from_state(state, bool(state["win"]), map(decode_window, state["win"]), config)

    @classmethod
    def restore_fields(cls, fields: dict[str, bytes], **config: Any) -> ShardWindows:
        """The state a checkpoint's fields describe: :meth:`checkpoint`'s, or a :meth:`snapshot`
        (``windows``, as every checkpoint before the incremental one was); empty when neither."""
        if HEAD in fields:
            head, windows = read_log(fields)
            return cls._from_state(head, bool(head["win"]), windows, config)
        blob = fields.get("windows")
        return cls.restore(blob, **config) if blob else cls(**config)

    @classmethod
    def _from_state(cls, state: dict[str, Any], has_windows: bool, windows_in: Iterable[Window],
                    config: dict[str, Any]) -> ShardWindows:
        windows = cls(**config)
        windows._watermark = -math.inf if state["wm"] is None else state["wm"]
        windows.overflowed = state["ovf"]
        windows.late_events = state["late"]
        windows._shed_below = -math.inf if state["shed"] is None else state["shed"]
        if state["w"] != windows._window_s:
            if has_windows:
                raise ConfigError(
                    f"TELEMETRY_WINDOW={windows._window_s:g}s, but the checkpointed windows are "
                    f"{state['w']:g}s long: drain them with the previous value first "
                    "(telemetry consume --drain)")
            windows._shed_below = -math.inf  # an index in the old window length means nothing now
        for name, registry in state["reg"].items():
            types = MeasurementTypes.from_registry(name, registry)
            if windows._raw.enabled and windows._raw.is_raw(name):
                windows._dormant[name] = types  # raw now: the fast path must not aggregate it
            else:
                windows._measurements[name] = types
        windows._raw.restore(state)
        for window in windows_in:
            windows._windows[window.index] = window
        return windows
