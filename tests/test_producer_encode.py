"""The flusher's encoder, property-tested: every encodable event lands once, in its series' shard."""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from producers import _encode
from producers._encode import BatchEncoder
from producers.keys import shard_of_series

names = st.text(min_size=0, max_size=8)
tags = st.dictionaries(names, names, max_size=4)
values = st.one_of(st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
                   st.floats(allow_nan=True), names)
unencodable = st.one_of(st.integers(min_value=2 ** 64, max_value=2 ** 80), st.just(object()))
times = st.one_of(st.floats(min_value=0, max_value=4e9, allow_nan=False),
                  st.integers(min_value=0, max_value=4_000_000_000),
                  st.datetimes(timezones=st.just(dt.UTC)))


@st.composite
def events(draw: Any) -> tuple[tuple[Any, ...], Any]:
    """A buffered event as the hot path stores it, and its expected wire form (None: unencodable)."""
    kind = draw(st.integers(0, 3))
    measurement = draw(names)
    ts = draw(times)
    fixed, extra = draw(tags), draw(st.one_of(st.none(), tags))
    bad = draw(st.booleans()) and draw(st.integers(0, 9)) == 0
    stored_tags: Any = fixed if extra is None else (fixed, extra)
    merged = fixed if extra is None else {**fixed, **extra}
    wire_ts = ts.timestamp() if isinstance(ts, dt.datetime) else float(ts)
    if kind == 0:
        fields = draw(st.dictionaries(names, values, max_size=5))
        if bad:
            fields = {**fields, "bad": draw(unencodable)}
        return (kind, measurement, ts, stored_tags, fields), None if bad else [
            kind, measurement, wire_ts, merged, fields]
    field, value = draw(names), draw(unencodable if bad else values)
    return (kind, measurement, ts, stored_tags, field, value), None if bad else [
        kind, measurement, wire_ts, merged, {field: value}]


def _same(a: Any, b: Any) -> bool:
    return msgpack.packb(a) == msgpack.packb(b)   # NaN-safe equality of wire values


@settings(max_examples=150, deadline=None)
@given(st.lists(events(), max_size=40), st.integers(1, 5))
def test_encoded_batches_hold_every_encodable_event_in_its_shard(batch: list[Any], shards: int) -> None:
    encoder = BatchEncoder(shards)
    entries, errors = encoder.encode([stored for stored, _ in batch])
    expected = [wire for _, wire in batch if wire is not None]
    assert errors == len(batch) - len(expected)
    decoded: list[tuple[int, Any]] = []
    for shard, payload, count in entries:
        events_in_entry = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        assert len(events_in_entry) == count > 0
        decoded.extend((shard, event) for event in events_in_entry)
    assert [e[0] for e in entries] == sorted({e[0] for e in entries})   # one entry per shard
    assert len(decoded) == len(expected)
    for wire in expected:   # order within a shard is emission order; across shards, by shard
        shard = shard_of_series(wire[1], wire[3], shards)
        match = next(i for i, (s, event) in enumerate(decoded) if s == shard and _same(event, wire))
        decoded.pop(match)
    assert decoded == []


def _flat(stored: tuple[Any, ...]) -> list[Any]:
    """The items the hot path appends for ``stored`` (see producers/_encode.py, WIDTH)."""
    kind, measurement, ts, stored_tags, *rest = stored
    fixed, extra = stored_tags if type(stored_tags) is tuple else (stored_tags, None)
    fields_or_name, value = (rest[0], None) if kind == 0 else rest
    return [kind, measurement, ts, fixed, extra, fields_or_name, value]


def _by_shard(entries: list[tuple[int, bytes, int]]) -> dict[int, list[Any]]:
    return {shard: msgpack.unpackb(payload, raw=False, strict_map_key=False)
            for shard, payload, _count in entries}


@settings(max_examples=100, deadline=None)
@given(st.lists(events(), max_size=40), st.integers(1, 5), st.sampled_from([1, 2, 7, 20]))
def test_encoding_the_buffers_items_slice_by_slice_gives_the_same_entries(
        batch: list[Any], shards: int, slice_events: int) -> None:
    """The flusher encodes flat items a few events at a time and joins the packed slices: the
    entries must decode to what encoding the whole batch at once gives, in the same order."""
    stored = [event for event, _ in batch]
    whole, whole_errors = BatchEncoder(shards).encode(stored)
    with mock.patch.object(_encode, "SLICE_EVENTS", slice_events):
        sliced, sliced_errors = BatchEncoder(shards).encode_items([i for e in stored for i in _flat(e)])
    assert sliced_errors == whole_errors
    assert [(shard, count) for shard, _, count in sliced] == [(shard, count) for shard, _, count in whole]
    assert _same(_by_shard(sliced), _by_shard(whole))


def test_joined_arrays_keep_every_element_whatever_the_header_sizes() -> None:
    parts = [list(range(3)), list(range(20)), list(range(70_000))]   # headers of 1, 3 and 5 bytes
    joined = _encode._joined_arrays([msgpack.packb(part) for part in parts], sum(map(len, parts)))
    assert msgpack.unpackb(joined) == [n for part in parts for n in part]
