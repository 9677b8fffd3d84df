"""Turning buffered events into one msgpack payload per shard (flusher thread only).

The caller's thread stores events exactly as it received them, with no checks (see
``producers/telemetry.py``). Everything that costs something happens here instead: the tag
merge of bound handles, datetime timestamps, the shard hash, and msgpack encoding. A value
msgpack cannot encode (an arbitrary object, an int beyond 64 bits) costs only its own event:
the batch is re-encoded event by event, the bad ones are counted and each kind of failure is
logged once. With pseudonymisation on (``ProducerConfig.pseudonymize``), configured tag values
are replaced by their pseudonyms here too, after the shard is chosen from the tags as given (so a
series goes to the same shard whichever side pseudonymises) and before anything is packed.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgpack

from producers.keys import shard_of_series
from producers.pseudonyms import Pseudonymizer
from producers.wire import KIND_COUNT, KIND_EMIT, KIND_OBSERVE, KIND_POINT

logger = logging.getLogger(__name__)

SHARD_CACHE_MAX: Final = 50_000
LOGGED_KINDS_MAX: Final = 256
SLICE_EVENTS: Final = 250   # events alive as tuples at once in the flusher (see encode_items)
_EMPTY: Final[dict[str, str]] = {}

# Callers append each event as WIDTH flat items (see producers/_buffer.py for why):
#   kind, measurement, ts, tags, extra_tags, fields (emit) or field name, value (None for emit)
# ``extra_tags`` is None except for a bound handle's call tags (``tags`` are then its fixed ones).
WIDTH: Final = 7

# A buffered event as the encoder takes it: (kind, measurement, ts, tags, fields) for emit, and
# (kind, measurement, ts, tags, field_name, value) for count/gauge/observe. ``tags`` is a mapping,
# None, or a (fixed, extra) pair from a bound handle; ``ts`` is a float, an int or a datetime.
BufferedEvent = tuple[Any, ...]


def unflatten(items: Sequence[Any]) -> list[BufferedEvent]:
    """The events held by ``items`` (whole events of :data:`WIDTH` items each), in order.

    Plain emits (most events) become their tuples in C (``zip`` over strided slices). The others
    take a Python step here that gives them their wire form at once (a one-field dict for
    count/gauge/observe, a bound handle's tags merged), so that the encoder's fast path takes
    them; what cannot be built is left for the encoder to count as an error.
    """
    kinds = items[0::WIDTH]
    extras = items[4::WIDTH]
    events: list[BufferedEvent] = list(zip(kinds, items[1::WIDTH], items[2::WIDTH], items[3::WIDTH],
                                           items[5::WIDTH], strict=False))   # equal lengths
    total = len(events)
    if kinds.count(KIND_EMIT) == total and extras.count(None) == total:
        return events
    values = items[6::WIDTH]
    for i, kind in enumerate(kinds):
        extra = extras[i]
        if kind == KIND_EMIT and extra is None:
            continue
        _kind, measurement, ts, tags, fields = events[i]
        if extra is not None:
            try:
                tags = {**tags, **extra}
            except Exception:  # not mappings: to_wire meets the same problem and counts it
                tags = (tags, extra)
        if KIND_COUNT <= kind <= KIND_OBSERVE:  # one-field kinds; emits and points carry a mapping
            try:
                fields = {fields: values[i]}
            except TypeError:  # an unhashable field name: likewise
                events[i] = (kind, measurement, ts, tags, fields, values[i])
                continue
        events[i] = (kind, measurement, ts, tags, fields)
    return events


def _array_header(count: int) -> bytes:
    header: bytes = msgpack.Packer(use_bin_type=True).pack_array_header(count)
    return header


def _joined_arrays(arrays: list[bytes], count: int) -> bytes:
    """One msgpack array of the elements of several packed ``arrays`` (``count`` in all)."""
    if len(arrays) == 1:
        return arrays[0]
    # an array header is 1 byte (fixarray, 0x90-0x9f), 3 (array 16, 0xdc) or 5 (array 32, 0xdd)
    bodies = [memoryview(packed)[{0xdc: 3, 0xdd: 5}.get(packed[0], 1):] for packed in arrays]
    return b"".join([_array_header(count), *bodies])


def _timestamp(ts: Any) -> Any:
    if isinstance(ts, _dt.datetime):
        return ts.timestamp()
    if isinstance(ts, int) and not isinstance(ts, bool):
        return float(ts)
    return ts  # anything else travels as given; the worker dead-letters what is not a time


def _mapping(value: Any) -> Any:
    if value is None:
        return _EMPTY
    if type(value) is dict or not isinstance(value, Mapping):
        return value
    return dict(value)


def to_wire(event: BufferedEvent) -> tuple[Any, ...]:
    """The wire array ``[kind, measurement, ts, tags, fields]`` for a buffered event."""
    if len(event) == 5:
        kind, measurement, ts, tags, fields = event
        if type(fields) is not dict:
            fields = _mapping(fields)
    else:
        kind, measurement, ts, tags, name, value = event
        fields = {name: value}
    if type(tags) is tuple:
        tags = {**tags[0], **tags[1]}
    elif type(tags) is not dict:
        tags = _mapping(tags)
    if type(ts) is not float and not (type(ts) is int and kind >= KIND_POINT):
        ts = _timestamp(ts)   # points (kinds 4 and 5) keep their exact int nanoseconds
    return (kind, measurement, ts, tags, fields)


class BatchEncoder:
    """Groups events by shard and encodes each group; remembers which failures it has logged."""

    def __init__(self, shards: int, pseudonymizer: Pseudonymizer | None = None) -> None:
        self.shards = shards
        self.pseudonymizer = pseudonymizer
        self._cache: dict[Any, int] = {}
        self._logged: set[str] = set()

    def shard(self, measurement: Any, tags: Any) -> int:
        """The event's shard (cached per measurement and tag items: the CRC is the costly part)."""
        if self.shards <= 1:
            return 0
        try:
            key = (measurement, *tags, *tags.values())   # n keys then n values: unambiguous
            return self._cache[key]
        except KeyError:
            pass
        except (TypeError, AttributeError):  # unhashable tag values, not a mapping: no cache
            return self._uncached(measurement, tags)
        shard = self._uncached(measurement, tags)
        if len(self._cache) >= SHARD_CACHE_MAX:
            self._cache.clear()
        self._cache[key] = shard
        return shard

    def _uncached(self, measurement: Any, tags: Any) -> int:
        try:
            return shard_of_series(measurement, tags, self.shards)
        except Exception:  # not a str name, unsortable tag keys: the worker dead-letters the event
            return shard_of_series(str(measurement), None, self.shards)

    def encode(self, events: Sequence[BufferedEvent]) -> tuple[list[tuple[int, bytes, int]], int]:
        """Return ``([(shard, payload, event_count), ...], errors)`` for one batch of events."""
        return self.encode_slices([events])

    def encode_items(self, items: Sequence[Any]) -> tuple[list[tuple[int, bytes, int]], int]:
        """:meth:`encode` for a batch as the buffer holds it (flat items, :data:`WIDTH` per event).

        Event tuples are built :data:`SLICE_EVENTS` at a time and die once their slice is packed.
        The tuples hold the caller's dicts, so the garbage collector tracks them, and every one
        alive at a middle-generation collection moves to the oldest generation: the fewer alive
        at once, the rarer full collections of the whole process.
        """
        step = SLICE_EVENTS * WIDTH
        slices = (unflatten(items[start:start + step]) for start in range(0, len(items), step))
        return self.encode_slices(slices)

    def encode_slices(self, slices: Iterable[Sequence[BufferedEvent]]
                      ) -> tuple[list[tuple[int, bytes, int]], int]:
        """Group and pack each slice of events; one payload per shard for all of them."""
        shards = max(1, self.shards)
        packed_parts: list[list[bytes]] = [[] for _ in range(shards)]
        counts = [0] * shards
        errors = 0
        privacy = self.pseudonymizer.wire_event if self.pseudonymizer is not None else None
        for events in slices:
            groups, failed = self._group(events, shards)
            errors += failed
            for shard, group in enumerate(groups):
                if group:
                    if privacy is not None:  # after sharding by the tags as given, before packing
                        group = [privacy(wire) for wire in group]
                    packed, count, failed = self.pack(group)
                    errors += failed
                    if count:
                        packed_parts[shard].append(packed)
                        counts[shard] += count
        return [(shard, _joined_arrays(packed_parts[shard], counts[shard]), counts[shard])
                for shard in range(shards) if counts[shard]], errors

    def _group(self, events: Sequence[BufferedEvent], shards: int) -> tuple[list[list[Any]], int]:
        """The events' wire forms grouped by shard, and how many could not be built."""
        groups: list[list[Any]] = [[] for _ in range(shards)]
        group = groups[0]
        errors = 0
        cache = self._cache
        single = shards == 1
        last_tags: Any = None
        last_measurement: Any = None
        # This loop is most of the flusher's CPU, hence inlined. Fast path: an emit with plain
        # dicts and a float time (a point with its int nanoseconds) is already its own wire
        # form; the same tag dict and measurement as the previous event (constant tags, a bound
        # handle, a parsed line's series) reuse its shard without hashing.
        for event in events:
            if len(event) == 5:
                _kind, measurement, ts, tags, fields = event
                plain = type(tags) is dict and type(fields) is dict and (
                    type(ts) is float or (type(ts) is int and _kind >= KIND_POINT))
                wire = event if plain else None
            else:
                wire = None
            if wire is None:
                try:
                    wire = to_wire(event)
                except Exception as exc:  # malformed caller input: count it, never stop the flusher
                    errors += 1
                    self._note(exc, event)
                    continue
                measurement, tags = wire[1], wire[3]
            if tags is last_tags and measurement is last_measurement:
                group.append(wire)
                continue
            if single:
                shard = 0
            else:
                try:
                    shard = cache[(measurement, *tags, *tags.values())]
                except (KeyError, TypeError, AttributeError):
                    shard = self.shard(measurement, tags)
            group = groups[shard]
            group.append(wire)
            last_tags, last_measurement = tags, measurement
        return groups, errors

    def pack(self, wire_events: list[tuple[Any, ...]]) -> tuple[bytes, int, int]:
        """msgpack one array of events; on failure, event by event, leaving the bad ones out."""
        try:
            return msgpack.packb(wire_events, use_bin_type=True), len(wire_events), 0
        except Exception:  # msgpack raises TypeError, OverflowError, ValueError: fall back below
            pass
        parts: list[bytes] = []
        failed = 0
        for wire in wire_events:
            try:
                parts.append(msgpack.packb(wire, use_bin_type=True))
            except Exception as exc:  # the value cannot travel: count it, keep the rest
                failed += 1
                self._note(exc, wire)
        return _array_header(len(parts)) + b"".join(parts), len(parts), failed

    def _note(self, exc: Exception, event: Any) -> None:
        kind = f"{type(exc).__name__}: {exc}"[:200]
        if kind in self._logged or len(self._logged) >= LOGGED_KINDS_MAX:
            return
        self._logged.add(kind)
        measurement = event[1] if isinstance(event, tuple) and len(event) > 1 else "?"
        logger.warning("telemetry event dropped, cannot be encoded (%s) in measurement %r; "
                       "further events with this problem are counted in stats()['errors']",
                       kind, measurement)
