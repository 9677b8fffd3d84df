"""The wire format: how a batch of events travels as ONE Redis stream entry.

Documented for humans in ``docs/wire-format.md``; this module is the reference implementation,
shared by the producer (encode) and the worker (decode).

A stream entry has these fields (all values are bytes on the wire)::

    v   format version, ASCII decimal ("1")
    p   producer id: 16 lowercase hex chars, new for every process (and after fork)
    s   batch sequence number, ASCII decimal, strictly increasing per (producer, shard)
    n   number of events in the batch, ASCII decimal
    d   msgpack array of events

Each event is a msgpack array ``[kind, measurement, ts, tags, fields]``:

    kind         0 emit, 1 count, 2 gauge, 3 observe (timer observes milliseconds),
                 4 point (an InfluxDB point given to ``write``), 5 rejected (input that could
                 not be read as a point, shipped so the worker dead-letters it)
    measurement  str
    ts           float, seconds since the Unix epoch (event time); for kinds 4 and 5 an int,
                 nanoseconds since the Unix epoch, exact
    tags         map str -> str (may be empty)
    fields       map str -> bool | int | float | str (count/gauge/observe carry one field)

A producer that retries an ``XADD`` resends the same ``p`` and ``s``; the worker applies a
(producer, shard) sequence number at most once, so the retry is counted once. Validation of
names and values is the worker's job: the producer ships what it was given (if msgpack can
encode it) and the worker dead-letters what is invalid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

FORMAT_VERSION: Final = 1

KIND_EMIT: Final = 0
KIND_COUNT: Final = 1
KIND_GAUGE: Final = 2
KIND_OBSERVE: Final = 3
KIND_POINT: Final = 4
KIND_REJECTED: Final = 5
KINDS: Final = (KIND_EMIT, KIND_COUNT, KIND_GAUGE, KIND_OBSERVE)
KIND_NAMES: Final = {KIND_EMIT: "emit", KIND_COUNT: "count", KIND_GAUGE: "gauge", KIND_OBSERVE: "observe"}
POINT_KIND_NAMES: Final = {KIND_POINT: "point", KIND_REJECTED: "rejected"}

FIELD_VERSION: Final = b"v"
FIELD_PRODUCER: Final = b"p"
FIELD_SEQUENCE: Final = b"s"
FIELD_COUNT: Final = b"n"
FIELD_DATA: Final = b"d"

FieldValue = bool | int | float | str
WireEvent = tuple[int, str, float, Mapping[str, str], Mapping[str, Any]]


class WireError(ValueError):
    """A stream entry cannot be decoded (wrong version, truncated payload, missing field)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded stream entry: who sent it, its sequence number and its raw events."""

    version: int
    producer_id: str
    sequence: int
    events: Sequence[Any]


def encode_events(events: Iterable[WireEvent]) -> bytes:
    """msgpack-encode a list of events (raises ``TypeError``/``ValueError`` on unencodable data)."""
    return msgpack.packb(list(events), use_bin_type=True)  # type: ignore[no-any-return]


def encode_entry(producer_id: str, sequence: int, payload: bytes, count: int) -> dict[bytes, bytes]:
    """The stream-entry field map for an encoded payload."""
    return {
        FIELD_VERSION: str(FORMAT_VERSION).encode(),
        FIELD_PRODUCER: producer_id.encode(),
        FIELD_SEQUENCE: str(sequence).encode(),
        FIELD_COUNT: str(count).encode(),
        FIELD_DATA: payload,
    }


def _field(fields: Mapping[bytes, bytes], name: bytes) -> bytes:
    value = fields.get(name)
    if value is None:
        raise WireError("undecodable", f"missing field {name.decode()!r}")
    return value


def decode_entry(fields: Mapping[bytes, bytes]) -> Batch:
    """Decode one stream entry's field map into a :class:`Batch`.

    Raises:
        WireError: ``unknown_version`` for a format this code does not read, ``undecodable``
            for a missing field or a payload msgpack cannot parse.
    """
    raw_version = _field(fields, FIELD_VERSION)
    try:
        version = int(raw_version)
    except ValueError:
        raise WireError("undecodable", f"version {raw_version!r} is not a number") from None
    if version != FORMAT_VERSION:
        raise WireError("unknown_version", f"format version {version} (this worker reads {FORMAT_VERSION})")
    try:
        producer_id = _field(fields, FIELD_PRODUCER).decode()
        sequence = int(_field(fields, FIELD_SEQUENCE))
        events = msgpack.unpackb(_field(fields, FIELD_DATA), raw=False, strict_map_key=False)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for corrupt input
        raise WireError("undecodable", f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(events, list):
        raise WireError("undecodable", "payload is not an array of events")
    return Batch(version=version, producer_id=producer_id, sequence=sequence, events=events)
