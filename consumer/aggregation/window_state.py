"""The state of a shard's windows and its checkpoint encoding, apart from the rules that change it.

:mod:`consumer.aggregation.window` decides what an event does (which window, which series, accepted or
rejected, when a point is due); this module holds what that state is made of: a
:class:`Window` of :class:`Series`, each series' per-field accumulators (their layouts, how an
event folds into them and which fields they emit), the per-measurement type registry (which
fields and value types a measurement admits), and how all of it is written into and read back
from a snapshot. A restored state produces exactly the outputs the original would have, so a
checkpoint is exact.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Final

import msgpack

from consumer.aggregation.catalogue import MeasurementSpec, lookup
from consumer.aggregation.fold import Fold, Opener, compile_fold, compile_opener
from consumer.aggregation.sketch import QuantileSketch
from consumer.aggregation.validate import (
    EVENT_COUNT_FIELD,
    LAST_NUMBER,
    LAST_STRING,
    MEAN,
    SEMANTICS_NAMES,
    SUM,
    SUMMARY,
    TRUE_COUNT,
    output_names,
    resolve_semantics,
)
from consumer.core.model import (
    REASON_FIELD_CLASH,
    REASON_TOO_MANY_FIELDS,
    REASON_TYPE_CONFLICT,
    Event,
    FieldValue,
)
from producers.wire import KINDS

SNAPSHOT_VERSION: Final = 5
"""Version 5 records a series' accumulators as one flat list (:func:`encode_series`); 4 added
raw-mode state (pending raw points, their field types), and 3 had neither. All are read here."""
READABLE_VERSIONS: Final = (3, 4, SNAPSHOT_VERSION)
MAX_FIELDS_PER_MEASUREMENT: Final = 1_000
"""Distinct field names a measurement may have; an event adding more is ``too_many_fields``. The
type registry is part of every checkpoint, so a flood of made-up field names must not grow it."""
QUANTILES: Final = (("_p50", 0.5), ("_p90", 0.9), ("_p99", 0.99))

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class Shape:
    """Where each field's accumulator sits in a series' flat ``acc`` list; shared by the series
    whose fields arrived in the same order.

    A series-window of the main measurement holds five accumulators. As five lists and a dict of
    them they cost about 700 bytes, most of it list and dict headers; as one list beside a
    shared shape, about 250. Shapes form a tree from :data:`EMPTY_SHAPE`: adding a field (name
    and semantics code) to a shape gives the same next shape every time, so a measurement's
    series share one or a few. ``offsets`` maps a field name to the offset of its accumulator's
    code; the accumulator's state follows it (layouts in :func:`new_accumulator`). ``spans`` has
    ``(name, start, end)`` of each accumulator, ``names`` the field names in that order, and
    ``width`` is the length of a series' ``acc`` with this shape.
    """

    __slots__ = ("_emit", "_next", "codes", "names", "offsets", "spans", "summaries", "width")
    cached: int = 0
    """Shapes kept in the tree, process-wide; past :data:`MAX_SHAPES` a new one serves only its
    series (fields in ever new orders must not grow the tree without bound)."""

    def __init__(self, spans: tuple[tuple[str, int, int], ...], codes: tuple[int, ...]) -> None:
        self.spans = spans
        self.codes = codes
        self.names = tuple(name for name, _, _ in spans)
        self.offsets = {name: start for name, start, _ in spans}
        self.width = spans[-1][2] if spans else 0
        self.summaries = SUMMARY in codes  # a summary's sketch is made state for a checkpoint
        self._next: dict[tuple[str, int], Shape] = {}
        self._emit: Callable[[list[Any], int], dict[str, FieldValue]] | None = None

    def with_field(self, name: str, code: int) -> Shape:
        """This shape plus field ``name`` aggregated as ``code``, placed after the others."""
        key = (name, code)
        shape = self._next.get(key)
        if shape is None:
            shape = Shape((*self.spans, (name, self.width, self.width + WIDTHS[code])), (*self.codes, code))
            if Shape.cached < MAX_SHAPES:
                Shape.cached += 1
                self._next[key] = shape
        return shape

    def fields(self, acc: list[Any], count: int) -> dict[str, FieldValue]:
        """The point's fields of a series with this shape: ``event_count`` (``count``) and each
        accumulator's outputs (``docs/semantics.md``), in key order (line protocol sorts them)."""
        emit = self._emit
        if emit is None:
            emit = self._emit = _compile_emitter(self)
        return emit(acc, count)


WIDTHS: Final = {MEAN: 5, TRUE_COUNT: 2, SUM: 2, SUMMARY: 6, LAST_NUMBER: 6, LAST_STRING: 6}
"""Slots of each accumulator layout in a series' ``acc``, its code included."""
MAX_SHAPES: Final = 10_000
MAX_FOLDS: Final = 1_024
EMPTY_SHAPE: Final = Shape((), ())


def _outputs(name: str, code: int, at: int) -> list[tuple[str, str]]:
    """Field ``name``'s output keys, each with the expression over ``acc`` that computes it."""
    count, total = f"acc[{at + 1}]", f"acc[{at + 2}]"
    low, high = f"float(acc[{at + 3}])", f"float(acc[{at + 4}])"
    if code == MEAN:
        return [(name, f"{total} / {count}"), (name + "_min", low), (name + "_max", high),
                (name + "_sum", f"float({total})")]
    if code in (TRUE_COUNT, SUM, LAST_STRING):
        return [(name, count)]  # the one value after the code: a count, a sum, the last string
    if code == LAST_NUMBER:
        return [(name, f"float({count})")]
    return [(name + "_count", count), (name + "_sum", f"float({total})"), (name + "_min", low),
            (name + "_max", high), (name + "_mean", f"{total} / {count}"),
            *((name + suffix, f"acc[{at + 5}].quantile({q!r}, {low}, {high})") for suffix, q in QUANTILES)]


def _compile_emitter(shape: Shape) -> Callable[[list[Any], int], dict[str, FieldValue]]:
    """One function per shape that builds a point's fields as one dict display.

    Why generated: collecting points walks every dirty series-window, and a loop over the
    accumulators that branches on each one's code and joins its output names cost most of it at
    high cardinality. A display of constant keys is one bytecode. Names enter the source as
    ``repr`` literals, offsets as integers; nothing else does.
    """
    outputs = [(EVENT_COUNT_FIELD, "count")]
    for (name, start, _), code in zip(shape.spans, shape.codes, strict=True):
        outputs += _outputs(name, code, start)
    items = ", ".join(f"{name!r}: {expression}" for name, expression in sorted(outputs))
    namespace: dict[str, Any] = {}
    exec(f"def emit(acc, count):\n    return {{{items}}}\n", namespace)
    return namespace["emit"]  # type: ignore[no-any-return]


class Series:
    """One series in one window: event count, per-field accumulators, dirty versioning.

    The accumulators are one flat list, ``acc``, laid out by ``shape`` (:class:`Shape`).
    ``saved`` is ``version + committed`` when the series was last checkpointed (both only grow,
    so any change since shows), ``saved_version`` its ``version`` then (equal now: only its
    commit changed), ``seg`` the checkpoint segment holding it
    (:mod:`consumer.aggregation.window_log`).
    """

    __slots__ = ("acc", "committed", "count", "key", "saved", "saved_version", "seg", "shape", "version")

    def __init__(self, key: SeriesKey) -> None:
        self.key = key
        self.count = 0
        self.version = 0
        self.committed = 0
        self.saved = -1
        self.saved_version = -1
        self.seg = -1
        self.shape = EMPTY_SHAPE
        self.acc: list[Any] = []

    def add_field(self, name: str, state: list[Any]) -> None:
        """Append field ``name``'s accumulator ``state`` (``[code, ...]``) and move to the shape
        that has it."""
        self.shape = self.shape.with_field(name, state[0])
        self.acc.extend(state)


class Window:
    """One window of the shard: its series, which are dirty, and its cached encoding."""

    __slots__ = ("aliases", "blob", "cleaned", "dirty", "flushed", "index", "per_measurement", "raw_aliases",
                 "series")

    def __init__(self, index: int) -> None:
        self.index = index
        # this window's encoded snapshot while it is unchanged: a checkpoint re-encodes only the
        # windows touched since the previous one (mostly the current one), not the whole lateness
        self.blob: bytes | None = None
        self.series: dict[SeriesKey, Series] = {}
        # (measurement, *tag keys, *tag values) in the event's order -> series: spares a sort per event
        self.aliases: dict[tuple[Any, ...], Series] = {}
        # the same for tags as they arrive, before pseudonymisation (only used when it is on)
        self.raw_aliases: dict[tuple[Any, ...], Series] = {}
        # identity-hashed (cheaper than hashing the key again); a dict, not a set: a third of the memory
        self.dirty: dict[Series, None] = {}
        # series committed clean (left ``dirty``) since the last checkpoint, which must still save them
        self.cleaned: list[Series] = []
        self.per_measurement: dict[str, int] = {}
        self.flushed = False


class MeasurementTypes:
    """Per-measurement type registry: field -> semantics code, output name -> owning field."""

    __slots__ = ("codes", "folds", "openers", "owners", "registry", "spec")

    def __init__(self, name: str) -> None:
        self.spec: MeasurementSpec | None = lookup(name)
        self.registry: dict[str, int] = {}
        self.owners: dict[str, str] = {EVENT_COUNT_FIELD: EVENT_COUNT_FIELD}
        # memo [kind][field][value class] -> code of what was admitted; rebuilt on demand after restore
        self.codes: tuple[dict[str, dict[type, int]], ...] = tuple({} for _ in KINDS)
        # [kind][shape] -> its compiled fold under ``codes`` as it was (dropped when ``codes`` grows)
        self.folds: tuple[dict[Shape, Fold], ...] = tuple({} for _ in KINDS)
        # [kind][field names in an event's order] -> the opener of a new series with those fields
        self.openers: tuple[dict[tuple[str, ...], Opener], ...] = tuple({} for _ in KINDS)

    def fold_for(self, kind: int, shape: Shape) -> Fold:
        """The compiled fold (:mod:`consumer.aggregation.fold`) of events of ``kind`` into series
        of ``shape``, made on first use; at most :data:`MAX_FOLDS` per kind are kept."""
        folds = self.folds[kind]
        if len(folds) >= MAX_FOLDS:
            folds.clear()  # shapes past the tree's limit, each its own: bound them, they refill
        fold = folds[shape] = compile_fold(shape.spans, shape.codes, self.codes[kind])
        return fold

    def opener_for(self, kind: int, names: tuple[str, ...]) -> Opener:
        """The compiled opener (:mod:`consumer.aggregation.fold`) of a new series whose first event
        of ``kind`` has the admitted fields ``names``, in that order; made on first use, at most
        :data:`MAX_FOLDS` per kind kept. The shape is the one adding the fields one by one reaches."""
        openers = self.openers[kind]
        if len(openers) >= MAX_FOLDS:
            openers.clear()  # field sets in ever new orders: bound them, they refill
        shape = EMPTY_SHAPE
        for name in names:
            shape = shape.with_field(name, self.registry[name])
        opener = openers[names] = compile_opener(shape.spans, shape.codes, shape, _sketch_of)
        return opener

    def register(self, name: str, code: int) -> None:
        self.registry[name] = code
        for output in output_names(name, code):
            self.owners[output] = name

    def admit(self, event: Event) -> tuple[str, str] | None:
        """Register the event's new fields (and value types); ``(reason, detail)`` when it cannot be.

        Reasons: ``type_conflict`` (recorded differently before, or against the catalogue),
        ``field_clash`` (generated names collide), ``too_many_fields``. Nothing is registered then.
        """
        pending: dict[str, int] = {}
        owners = dict(self.owners)
        for name, value in event.fields.items():
            code_or_detail = resolve_semantics(event.kind, self.spec, name, value)
            if isinstance(code_or_detail, str):
                return REASON_TYPE_CONFLICT, code_or_detail
            code = code_or_detail
            known = self.registry.get(name)
            if known is not None:
                if known != code:
                    return REASON_TYPE_CONFLICT, (
                        f"field {name!r} of {event.measurement!r} was recorded as {SEMANTICS_NAMES[known]} "
                        f"before; this event records it as {SEMANTICS_NAMES[code]}")
                continue
            for output in output_names(name, code):
                other = owners.get(output)
                if other is not None and other != name:
                    what = "the per-event count" if other == EVENT_COUNT_FIELD else f"field {other!r}"
                    return REASON_FIELD_CLASH, (f"field {name!r} of {event.measurement!r} writes "
                                                f"{output!r}, as does {what}")
                owners[output] = name
            pending[name] = code
        if pending and len(self.registry) + len(pending) > MAX_FIELDS_PER_MEASUREMENT:
            return REASON_TOO_MANY_FIELDS, (
                f"{event.measurement!r} already has {len(self.registry)} distinct fields, the "
                f"limit is {MAX_FIELDS_PER_MEASUREMENT}; new here: {', '.join(map(repr, list(pending)[:5]))} "
                "(a field name built from data, such as a user id, belongs in a tag)")
        for name, code in pending.items():
            self.register(name, code)
        codes = self.codes[event.kind]
        for name, value in event.fields.items():
            codes.setdefault(name, {})[value.__class__] = self.registry[name]
        for folds in self.folds:
            folds.clear()  # made under the memo as it was: a class admitted now must fold too
        return None

    @classmethod
    def from_registry(cls, name: str, registry: dict[str, int]) -> MeasurementTypes:
        """The registry of measurement ``name`` as a snapshot recorded it."""
        measurement = cls(name)
        for field_name, code in registry.items():
            measurement.register(field_name, code)
        return measurement


def _sketch_of(value: float) -> QuantileSketch:
    sketch = QuantileSketch()
    sketch.add(value)
    return sketch


def new_accumulator(code: int, value: Any, ts: float, position: tuple[int, int, int]) -> list[Any]:
    if code == MEAN:
        return [MEAN, 1, 0.0 + value, value, value]  # count, sum, min, max
    if code == TRUE_COUNT:
        return [TRUE_COUNT, 1 if value else 0]
    if code == SUM:
        return [SUM, value]
    if code == SUMMARY:
        return [SUMMARY, 1, 0.0 + value, value, value, _sketch_of(value)]  # count, sum, min, max, sketch
    # last: value, event time, entry ms, seq, index (flat: no tuple, and a list of exactly six)
    return [code, value, ts, position[0], position[1], position[2]]


def update_fields(series: Series, fields: dict[str, Any], ts: float,
                  codes: dict[str, dict[type, int]], entry_ms: int, entry_seq: int, index: int) -> None:
    """The hot loop: fold one event's fields into a series' accumulators (common cases inline).

    The event's stream position (``entry_ms``, ``entry_seq``, ``index``) only matters to "last"
    fields, as the tie-break between equal event times; it is a tuple, ordered like
    :class:`~consumer.core.model.Position`, built only when an accumulator is created or a "last"
    field is updated.
    """
    acc = series.acc
    offsets = series.shape.offsets
    for name, value in fields.items():
        at = offsets.get(name)
        if at is None:
            code = codes[name][value.__class__]
            series.add_field(name, new_accumulator(code, value, ts, (entry_ms, entry_seq, index)))
            offsets = series.shape.offsets
            continue
        code = acc[at]
        if code == MEAN:
            acc[at + 1] += 1
            acc[at + 2] += value
            if value < acc[at + 3]:
                acc[at + 3] = value
            if value > acc[at + 4]:
                acc[at + 4] = value
        elif code == TRUE_COUNT:
            if value:
                acc[at + 1] += 1
        elif code == SUM:
            acc[at + 1] += value
        else:
            _update_rare(acc, at, code, value, ts, (entry_ms, entry_seq, index))


def _update_rare(acc: list[Any], at: int, code: int, value: Any, ts: float,
                 position: tuple[int, int, int]) -> None:
    if code == SUMMARY:
        acc[at + 1] += 1
        acc[at + 2] += value
        acc[at + 3] = min(acc[at + 3], value)
        acc[at + 4] = max(acc[at + 4], value)
        acc[at + 5].add(value)
    elif ts > acc[at + 2] or (ts == acc[at + 2] and position > (acc[at + 3], acc[at + 4], acc[at + 5])):
        acc[at + 1] = value  # latest, then position
        acc[at + 2] = ts
        acc[at + 3], acc[at + 4], acc[at + 5] = position


def _decode_accumulator(data: list[Any]) -> list[Any]:
    """An accumulator of a record from before the flat layout (``{name: [code, ...state]}``)."""
    if data[0] == SUMMARY:
        return [*data[:5], QuantileSketch.from_state(data[5])]
    return data


def _pairs(tags: list[Any]) -> tuple[tuple[str, str], ...]:
    """A record's tags: ``[[name, value], ...]``, or flat ``[name, value, ...]`` as before."""
    if tags and tags[0].__class__ is list:
        return tuple((name, value) for name, value in tags)
    return tuple(zip(tags[0::2], tags[1::2], strict=True))


def encode_series(s: Series) -> list[Any]:
    """One series' record in a snapshot or checkpoint segment (msgpack-friendly):
    ``[measurement, tag pairs, count, version, committed, field names, flat accumulators]``.

    Packed at once by the caller, so the key's tuples, the shape's names and the flat list go in
    as they are: no copies and no new containers (this runs for every changed series of every
    checkpoint, and containers made by the ten thousand cost the collector too). Only a series
    with a summary field is copied, to make its sketches state.
    """
    acc = s.acc
    if s.shape.summaries:
        acc = list(acc)
        for (_, start, _), code in zip(s.shape.spans, s.shape.codes, strict=True):
            if code == SUMMARY:
                acc[start + 5] = acc[start + 5].to_state()
    return [s.key[0], s.key[1], s.count, s.version, s.committed, s.shape.names, acc]


def decode_series(record: list[Any]) -> Series:
    """The series :func:`encode_series` recorded, or one recorded before the flat layout (six
    items, the accumulators a map of ``{name: [code, ...state]}``)."""
    measurement, tags, count, version, committed, *fields = record
    series = Series((measurement, _pairs(tags)))
    series.count, series.version, series.committed = count, version, committed
    if len(fields) == 1:
        for name, data in fields[0].items():
            series.add_field(name, _decode_accumulator(data))
        return series
    names, acc = fields
    shape, start = EMPTY_SHAPE, 0
    for name in names:
        code = acc[start]
        shape = shape.with_field(name, code)
        if code == SUMMARY:
            acc[start + 5] = QuantileSketch.from_state(acc[start + 5])
        start += WIDTHS[code]
    series.shape, series.acc = shape, acc
    return series


def encode_window(window: Window) -> bytes:
    series = [encode_series(s) for s in window.series.values()]
    # zlib level 1: names repeat in every series, so a window shrinks about 3x for a little CPU
    return zlib.compress(msgpack.packb([window.index, window.flushed, series], use_bin_type=True), 1)


def decode_window(blob: bytes) -> Window:
    index, flushed, series_list = msgpack.unpackb(zlib.decompress(blob), raw=False, strict_map_key=False)
    window = Window(index)
    window.blob = blob
    window.flushed = flushed
    for record in series_list:
        series = decode_series(record)
        window.series[series.key] = series
        if series.version != series.committed:
            window.dirty[series] = None
        measurement = series.key[0]
        window.per_measurement[measurement] = window.per_measurement.get(measurement, 0) + 1
    return window


def snapshot_head(scalars: dict[str, Any], measurements: dict[str, MeasurementTypes]) -> dict[str, Any]:
    """A snapshot's top level before its windows: ``scalars`` and the type registries."""
    return {**scalars, "reg": {name: m.registry for name, m in measurements.items() if m.registry}}


def pack_snapshot(scalars: dict[str, Any], windows: dict[int, Window],
                  measurements: dict[str, MeasurementTypes], raw: dict[str, Any] | None = None) -> bytes:
    """One snapshot: ``scalars``, the type registries, each window (re-encoded only when changed)
    and ``raw`` (:meth:`consumer.aggregation.raw_points.RawPoints.state`, when there is some)."""
    blobs = []
    for index in sorted(windows):
        window = windows[index]
        if window.blob is None:
            window.blob = encode_window(window)
        blobs.append(window.blob)
    state = {"v": SNAPSHOT_VERSION, **snapshot_head(scalars, measurements), "win": blobs,
             **(raw or {})}
    return msgpack.packb(state, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_snapshot(blob: bytes) -> dict[str, Any]:
    """The snapshot's top level (windows still encoded: :func:`decode_window` each).

    Raises:
        ValueError: the snapshot was written by another version of this format.
    """
    state: dict[str, Any] = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    if state.get("v") not in READABLE_VERSIONS:
        raise ValueError(f"window snapshot version {state.get('v')!r} is not one of {READABLE_VERSIONS}")
    return state
