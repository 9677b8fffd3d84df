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
    registries, raw-mode state, and per window its ``flushed`` flag and segment numbers.

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
LOG_VERSION: Final = 5
MAX_SEGMENTS: Final = 8
"""Segments one window may have before all but its largest are merged."""
GARBAGE_SLACK: Final = 256
"""Stale series records a window may hold beyond its own size before it is rewritten."""


def segment_name(window: int, number: int) -> str:
    return f"{SEGMENT}{window}:{number}"


@dataclass(slots=True)
class _Planned:
    """One window's part of a write: the new segment, and the window's segments afterwards."""

    window: Window
    number: int
    series: list[Series]
    marks: list[int]
    segments: dict[int, list[int]]  # number -> [current series, records]


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
        self._stored: dict[int, dict[int, list[int]]] = {}  # window -> number -> [current, records]
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
                out.fields[segment_name(index, planned.number)] = encode_segment(planned.series)
                if stored is not None:
                    out.deleted += [segment_name(index, n) for n in stored if n not in planned.segments]
                numbers = sorted(planned.segments)
            else:
                numbers = sorted(stored or ())
            manifest.append([index, window.flushed, numbers])
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
        for series in changed:
            counts = segments.get(series.seg)
            if counts is not None:
                counts[0] -= 1
        segments = {n: counts for n, counts in segments.items() if counts[0] > 0}
        records = sum(counts[1] for counts in segments.values()) + len(changed)
        if records > 2 * len(window.series) + GARBAGE_SLACK:
            return self._rewrite(window, number)
        if len(segments) + 1 > MAX_SEGMENTS:
            keep = max(segments, key=lambda n: segments[n][0])
            moving = set(changed)
            changed = [s for s in window.series.values()
                       if s in moving or (s.seg != keep and s.seg in segments)]
            segments = {keep: segments[keep]}
        segments[number] = [len(changed), len(changed)]
        return _Planned(window, number, changed, [s.version + s.committed for s in changed], segments)

    @staticmethod
    def _rewrite(window: Window, number: int) -> _Planned:
        series = list(window.series.values())
        return _Planned(window, number, series, [s.version + s.committed for s in series],
                        {number: [len(series), len(series)]})

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
            self._next[index] = planned.number + 1
            for series, mark in zip(planned.series, planned.marks, strict=True):
                series.seg, series.saved = planned.number, mark
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
    if head.get("v") != LOG_VERSION:
        raise ValueError(f"checkpoint manifest version {head.get('v')!r} is not {LOG_VERSION}")

    def windows() -> Iterator[Window]:
        for index, flushed, numbers in head["win"]:
            window = Window(index)
            window.flushed = flushed
            for number in sorted(numbers):  # later segments hold the later state of a series
                for record in msgpack.unpackb(zlib.decompress(fields[segment_name(index, number)]),
                                              raw=False, strict_map_key=False):
                    series = decode_series(record)
                    window.series[series.key] = series  # a known key keeps its place (creation order)
            for series in window.series.values():
                if series.version != series.committed:
                    window.dirty.add(series)
                measurement = series.key[0]
                window.per_measurement[measurement] = window.per_measurement.get(measurement, 0) + 1
            yield window

    return head, windows()
