"""The flusher's encoder, property-tested: every encodable event lands once, in its series' shard."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

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
