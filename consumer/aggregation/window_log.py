"""The windows' part of an incremental checkpoint: segments of changed series, and a manifest.

Why: a shard holds every series-window of its allowed lateness (tens of thousands, and more),
and checkpoints about every second. Sending all of it each time makes a checkpoint's bytes and
CPU grow with what is held; this module makes them grow with what changed.

Layout (fields of the shard's state hash, :mod:`consumer.core.checkpoint`):

``ws:<window>:<n>``
    A *segment*: the full state of some series of window ``<window>`` (zlib'd msgpack, the
    per-series records of :func:`consumer.aggregation.window_state.series_record`). A checkpoint writes one
    new segment per window with the series changed since the previous checkpoint (recorded
    into, or committed); a series' current state is in the highest-numbered segment holding it.
``wh``
    The manifest, rewritten by every checkpoint: format version, watermark and counters, type
    registries, raw-mode state, and per window its ``flushed`` flag, segment numbers and *clean*
    segment numbers.

A series whose only change is its commit (its points were written; its data is as saved) is
not written again when every current series of its segment is clean at its saved version:
the segment is marked clean in the manifest instead, and a restore reads its records as
committed. That is the usual case (a window's series are written together once it is due), and
it halves what checkpoints encode: before, each series was encoded once for its data and once
more for its commit. Otherwise (some of the segment's series are still dirty) it is written
again, with its commit, as any change.

Keeping it bounded: a segment none of whose series is current any more is deleted in the same
checkpoint. When a window's segments hold more than twice its series (plus
:data:`GARBAGE_SLACK`), it is rewritten as one segment; when it has more than
:data:`MAX_SEGMENTS`, all but its largest are merged into one. Both cost at most what was
written since the previous rewrite, so a checkpoint costs, amortised, about twice its changes.
An evicted or shed window's segments are deleted. A *full* checkpoint writes every window as one
segment (the first of a new owner, and the one after a save whose outcome is unknown).

The log's bookkeeping (:class:`WindowLog`) changes only once the caller says the write was
stored (:meth:`WindowLog.saved`): a refused or failed save leaves it as it was, and the caller
then asks for a full one.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from consumer.aggregation.window_state import Series, Window, decode_series, encode_series
from consumer.core.checkpoint import state_bytes

HEAD: Final = "wh"
SEGMENT: Final = "ws:"
LOG_VERSION: Final = 7
READABLE_VERSIONS: Final = (5, 6, LOG_VERSION)
"""Version 7's segments record each series' accumulators as one flat list
(:func:`~consumer.aggregation.window_state.encode_series`); 6 added clean segments to 5."""
MAX_SEGMENTS: Final = 8
"""Segments one window may have before all but its largest are merged."""
GARBAGE_SLACK: Final = 256
"""Stale series records a window may hold beyond its own size before it is rewritten."""


def segment_name(window: int, number: int) -> str:
    return f"{SEGMENT}{window}:{number}"


@dataclass(slots=True)
class _Planned:
    """One window's part of a write: the new segment (if any), and the window's segments afterwards."""

    window: Window
    number: int | None
    series: list[Series]
    segments: dict[int, list[int]]  # number -> [current series, records, clean (0/1)]
    absorbed: list[Series] = field(default_factory=list)
    """Series whose commit a segment marked clean records (not written again)."""
    marks: list[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.marks = [(s.version, s.committed) for s in (*self.series, *self.absorbed)]


@dataclass(slots=True)
class LogWrite:
    """The windows' fields to set and delete, and what :meth:`WindowLog.saved` then records."""

    fields: dict[str, bytes] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    full: bool = False
    planned: list[_Planned] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes of state this write sends."""
        return state_bytes(self.fields, self.deleted)


class WindowLog:
    """Which segments of each window are stored, and how many current series each holds."""

    __slots__ = ("_next", "_stored")

    def __init__(self) -> None:
        self._stored: dict[int, dict[int, list[int]]] = {}  # window -> number -> [current, records, clean]
        self._next: dict[int, int] = {}

    def write(self, windows: dict[int, Window], head: dict[str, Any], *, full: bool) -> LogWrite:
        """The write that brings the stored segments up to ``windows``; ``head``: the manifest's
        scalars (its window list is added here). Changes nothing until :meth:`saved`."""
        out = LogWrite(full=full, windows=list(windows.values()))
        manifest = []
        for index, window in windows.items():
            stored = None if full else self._stored.get(index)
            planned = self._plan(window, stored)
            if planned is not None:
                out.planned.append(planned)
                if planned.number is not None:
                    out.fields[segment_name(index, planned.number)] = encode_segment(planned.series)
                if stored is not None:
                    out.deleted += [segment_name(index, n) for n in stored if n not in planned.segments]
                segments = planned.segments
            else:
                segments = stored or {}
            manifest.append([index, window.flushed, sorted(segments),
                             sorted(n for n, counts in segments.items() if counts[2])])
        if not full:
            out.gone = [index for index in self._stored if index not in windows]
            out.deleted += [segment_name(index, n) for index in out.gone for n in self._stored[index]]
        out.fields[HEAD] = msgpack.packb({**head, "v": LOG_VERSION, "win": manifest}, use_bin_type=True)
        return out

    def _plan(self, window: Window, stored: dict[int, list[int]] | None) -> _Planned | None:
        number = self._next.get(window.index, 0) if stored is not None else 0
        if stored is None:
            return self._rewrite(window, number)
        changed = [s for s in dict.fromkeys((*window.dirty, *window.cleaned))
                   if s.version + s.committed != s.saved]
        if not changed:
            return None
        segments = {n: list(counts) for n, counts in stored.items()}
        clean = self._absorb(changed, segments)
        absorbed = [s for s in changed if s.seg in clean]
        changed = [s for s in changed if s.seg not in clean]
        for series in changed:
            counts = segments.get(series.seg)
            if counts is not None:
                counts[0] -= 1
        segments = {n: counts for n, counts in segments.items() if counts[0] > 0}
        if not changed:
            return _Planned(window, None, [], segments, absorbed)
        records = sum(counts[1] for counts in segments.values()) + len(changed)
        if records > 2 * len(window.series) + GARBAGE_SLACK:
            return self._rewrite(window, number)
        if len(segments) + 1 > MAX_SEGMENTS:
            keep = max(segments, key=lambda n: segments[n][0])
            moving = set(changed)
            changed = [s for s in window.series.values()
                       if s in moving or (s.seg != keep and s.seg in segments)]
            segments = {keep: segments[keep]}
            absorbed = [s for s in absorbed if s.seg == keep]
        segments[number] = [len(changed), len(changed), 0]
        return _Planned(window, number, changed, segments, absorbed)

    @staticmethod
    def _absorb(changed: list[Series], segments: dict[int, list[int]]) -> set[int]:
        """The segments whose every current series is now clean at its saved version (only their
        commit moved), marked clean in ``segments``.

        A segment counts only when all its current series are among ``changed``: one left out
        is unchanged since saved, and may be saved dirty."""
        now_clean: dict[int, int] = {}  # segment -> its series among ``changed`` now clean as saved
        spoiled: set[int] = set()
        for s in changed:
            if s.version == s.saved_version and s.committed == s.version:
                now_clean[s.seg] = now_clean.get(s.seg, 0) + 1
            else:
                spoiled.add(s.seg)
        clean = {n for n, count in now_clean.items()
                 if n not in spoiled and n in segments and count == segments[n][0]}
        for n in clean:
            segments[n][2] = 1
        return clean

    @staticmethod
    def _rewrite(window: Window, number: int) -> _Planned:
        series = list(window.series.values())
        return _Planned(window, number, series, {number: [len(series), len(series), 0]})

    def saved(self, write: LogWrite) -> None:
        """``write`` is stored: record its segments, mark its series as saved."""
        if write.full:
            self._stored.clear()
            self._next.clear()
        for index in write.gone:
            self._stored.pop(index, None)
            self._next.pop(index, None)
        for planned in write.planned:
            index = planned.window.index
            self._stored[index] = planned.segments
            if planned.number is not None:
                self._next[index] = planned.number + 1
                for series in planned.series:
                    series.seg = planned.number
            for series, (version, committed) in zip((*planned.series, *planned.absorbed), planned.marks,
                                                    strict=True):
                series.saved, series.saved_version = version + committed, version
        for window in write.windows:
            window.cleaned.clear()


def encode_segment(series: list[Series]) -> bytes:
    return zlib.compress(msgpack.packb([encode_series(s) for s in series], use_bin_type=True), 1)


def read_log(fields: dict[str, bytes]) -> tuple[dict[str, Any], Iterator[Window]]:
    """The manifest of a checkpoint written by :class:`WindowLog`, and its windows.

    Raises:
        ValueError: the manifest is of another format version.
    """
    head: dict[str, Any] = msgpack.unpackb(fields[HEAD], raw=False, strict_map_key=False)
    if head.get("v") not in READABLE_VERSIONS:
        raise ValueError(f"checkpoint manifest version {head.get('v')!r} is not {LOG_VERSION}")

    def windows() -> Iterator[Window]:
        for index, flushed, numbers, *rest in head["win"]:
            window = Window(index)
            window.flushed = flushed
            clean = set(rest[0]) if rest else set()
            for number in sorted(numbers):  # later segments hold the later state of a series
                for record in msgpack.unpackb(zlib.decompress(fields[segment_name(index, number)]),
                                              raw=False, strict_map_key=False):
                    series = decode_series(record)
                    if number in clean:
                        series.committed = series.version
                    window.series[series.key] = series  # a known key keeps its place (creation order)
            for series in window.series.values():
                if series.version != series.committed:
                    window.dirty[series] = None
                measurement = series.key[0]
                window.per_measurement[measurement] = window.per_measurement.get(measurement, 0) + 1
            yield window

    return head, windows()
