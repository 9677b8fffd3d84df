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
from typing import Any, Final

import msgpack

from consumer.aggregation.catalogue import MeasurementSpec, lookup
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

SNAPSHOT_VERSION: Final = 4
"""Version 4 adds raw-mode state (pending raw points, their field types); a snapshot without any
is still written as version 3, which a worker without raw mode reads, and both are read here."""
READABLE_VERSIONS: Final = (3, SNAPSHOT_VERSION)
MAX_FIELDS_PER_MEASUREMENT: Final = 1_000
"""Distinct field names a measurement may have; an event adding more is ``too_many_fields``. The
type registry is part of every checkpoint, so a flood of made-up field names must not grow it."""
QUANTILES: Final = (("_p50", 0.5), ("_p90", 0.9), ("_p99", 0.99))

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class Series:
    """One series in one window: event count, per-field accumulators, dirty versioning.

    ``saved`` is ``version + committed`` when the series was last checkpointed (both only grow,
    so any change since shows), ``saved_version`` its ``version`` then (equal now: only its
    commit changed), ``seg`` the checkpoint segment holding it
    (:mod:`consumer.aggregation.window_log`).
    """

    __slots__ = ("committed", "count", "fields", "key", "saved", "saved_version", "seg", "version")

    def __init__(self, key: SeriesKey) -> None:
        self.key = key
        self.count = 0
        self.version = 0
        self.committed = 0
        self.saved = -1
        self.saved_version = -1
        self.seg = -1
        # name -> [code, ...state]; see new_accumulator for the layouts
        self.fields: dict[str, list[Any]] = {}


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
        self.dirty: set[Series] = set()  # identity-hashed: cheaper than hashing the key again
        # series committed clean (left ``dirty``) since the last checkpoint, which must still save them
        self.cleaned: list[Series] = []
        self.per_measurement: dict[str, int] = {}
        self.flushed = False


class MeasurementTypes:
    """Per-measurement type registry: field -> semantics code, output name -> owning field."""

    __slots__ = ("codes", "owners", "registry", "spec")

    def __init__(self, name: str) -> None:
        self.spec: MeasurementSpec | None = lookup(name)
        self.registry: dict[str, int] = {}
        self.owners: dict[str, str] = {EVENT_COUNT_FIELD: EVENT_COUNT_FIELD}
        # memo [kind][field][value class] -> code of what was admitted; rebuilt on demand after restore
        self.codes: tuple[dict[str, dict[type, int]], ...] = tuple({} for _ in KINDS)

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
        return None

    @classmethod
    def from_registry(cls, name: str, registry: dict[str, int]) -> MeasurementTypes:
        """The registry of measurement ``name`` as a snapshot recorded it."""
        measurement = cls(name)
        for field_name, code in registry.items():
            measurement.register(field_name, code)
        return measurement


def new_accumulator(code: int, value: Any, ts: float, position: tuple[int, int, int]) -> list[Any]:
    if code == MEAN:
        return [MEAN, 1, 0.0 + value, value, value]  # count, sum, min, max
    if code == TRUE_COUNT:
        return [TRUE_COUNT, 1 if value else 0]
    if code == SUM:
        return [SUM, value]
    if code == SUMMARY:
        sketch = QuantileSketch()
        sketch.add(value)
        return [SUMMARY, 1, 0.0 + value, value, value, sketch]  # count, sum, min, max, sketch
    # last: value, event time, entry ms, seq, index (flat: no tuple, and a list of exactly six)
    return [code, value, ts, position[0], position[1], position[2]]


def update_fields(accumulators: dict[str, list[Any]], fields: dict[str, Any], ts: float,
                  codes: dict[str, dict[type, int]], entry_ms: int, entry_seq: int, index: int) -> None:
    """The hot loop: fold one event's fields into a series' accumulators (common cases inline).

    The event's stream position (``entry_ms``, ``entry_seq``, ``index``) only matters to "last"
    fields, as the tie-break between equal event times; it is a tuple, ordered like
    :class:`~consumer.core.model.Position`, built only when an accumulator is created or a "last"
    field is updated.
    """
    for name, value in fields.items():
        acc = accumulators.get(name)
        if acc is None:
            code = codes[name][value.__class__]
            accumulators[name] = new_accumulator(code, value, ts, (entry_ms, entry_seq, index))
            continue
        code = acc[0]
        if code == MEAN:
            acc[1] += 1
            acc[2] += value
            if value < acc[3]:
                acc[3] = value
            if value > acc[4]:
                acc[4] = value
        elif code == TRUE_COUNT:
            if value:
                acc[1] += 1
        elif code == SUM:
            acc[1] += value
        else:
            _update_rare(acc, code, value, ts, (entry_ms, entry_seq, index))


def _update_rare(acc: list[Any], code: int, value: Any, ts: float, position: tuple[int, int, int]) -> None:
    if code == SUMMARY:
        acc[1] += 1
        acc[2] += value
        acc[3] = min(acc[3], value)
        acc[4] = max(acc[4], value)
        acc[5].add(value)
    elif ts > acc[2] or (ts == acc[2] and position > (acc[3], acc[4], acc[5])):  # latest, then position
        acc[1] = value
        acc[2] = ts
        acc[3], acc[4], acc[5] = position


def emit_fields(out: dict[str, FieldValue], name: str, acc: list[Any]) -> None:
    code = acc[0]
    if code == MEAN:
        out[name] = acc[2] / acc[1]
        out[name + "_min"] = float(acc[3])
        out[name + "_max"] = float(acc[4])
        out[name + "_sum"] = float(acc[2])
    elif code in (TRUE_COUNT, SUM):
        out[name] = acc[1]
    elif code == LAST_NUMBER:
        out[name] = float(acc[1])
    elif code == LAST_STRING:
        out[name] = acc[1]
    else:
        count, total, low, high, sketch = acc[1:]
        low, high = float(low), float(high)
        out[name + "_count"] = count
        out[name + "_sum"] = float(total)
        out[name + "_min"] = low
        out[name + "_max"] = high
        out[name + "_mean"] = total / count
        for suffix, q in QUANTILES:
            out[name + suffix] = sketch.quantile(q, low, high)


def _encode_accumulator(acc: list[Any]) -> list[Any]:
    code = acc[0]
    if code == SUMMARY:
        return [*acc[:5], acc[5].to_state()]
    return list(acc)  # a "last" holds its position flat: [code, value, ts, entry ms, seq, index]


def _decode_accumulator(data: list[Any]) -> list[Any]:
    code = data[0]
    if code == SUMMARY:
        return [*data[:5], QuantileSketch.from_state(data[5])]
    return list(data)


def _pairs(tags: list[Any]) -> tuple[tuple[str, str], ...]:
    """A record's tags: ``[[name, value], ...]``, or flat ``[name, value, ...]`` as before."""
    if tags and tags[0].__class__ is list:
        return tuple((name, value) for name, value in tags)
    return tuple(zip(tags[0::2], tags[1::2], strict=True))


def encode_series(s: Series) -> list[Any]:
    """One series' record in a snapshot or checkpoint segment (msgpack-friendly).

    Packed at once by the caller, so the key's tuples and the accumulators' lists go in as they
    are (no copies: this runs for every changed series of every checkpoint); a sketch is made state.
    """
    fields = s.fields
    if any(acc[0] == SUMMARY for acc in fields.values()):
        fields = {name: _encode_accumulator(acc) for name, acc in fields.items()}
    return [s.key[0], s.key[1], s.count, s.version, s.committed, fields]


def decode_series(record: list[Any]) -> Series:
    """The series :func:`encode_series` recorded."""
    measurement, tags, count, version, committed, fields = record
    series = Series((measurement, _pairs(tags)))
    series.count, series.version, series.committed = count, version, committed
    series.fields = {name: _decode_accumulator(acc) for name, acc in fields.items()}
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
            window.dirty.add(series)
        measurement = series.key[0]
        window.per_measurement[measurement] = window.per_measurement.get(measurement, 0) + 1
    return window


def snapshot_head(scalars: dict[str, Any], measurements: dict[str, MeasurementTypes]) -> dict[str, Any]:
    """A snapshot's top level before its windows: ``scalars`` and the type registries."""
    return {**scalars, "reg": {name: m.registry for name, m in measurements.items() if m.registry}}


def pack_snapshot(scalars: dict[str, Any], windows: dict[int, Window],
                  measurements: dict[str, MeasurementTypes], raw: dict[str, Any] | None = None) -> bytes:
    """One snapshot: ``scalars``, the type registries, each window (re-encoded only when changed)
    and ``raw`` (:meth:`consumer.aggregation.raw_points.RawPoints.state`: version 4 only when there
    is some)."""
    blobs = []
    for index in sorted(windows):
        window = windows[index]
        if window.blob is None:
            window.blob = encode_window(window)
        blobs.append(window.blob)
    state = {"v": SNAPSHOT_VERSION if raw else 3, **snapshot_head(scalars, measurements), "win": blobs,
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
