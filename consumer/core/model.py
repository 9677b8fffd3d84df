"""The worker's value types, shared by source, window, sinks, checkpoint and dead letters.

An :class:`Event` is one decoded, validated producer event with its :class:`Position` in the
stream; a :class:`Point` is one aggregated series-window ready for a sink; a
:class:`DeadLetter` is anything that could not become part of a point, with the reason and
enough of the original to replay it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from producers.points import REASON_UNPARSABLE

FieldValue = bool | int | float | str

# Dead-letter reasons: the complete vocabulary, used in the stream, the CLI and the dashboards.
REASON_UNDECODABLE: Final = "undecodable"
REASON_UNKNOWN_VERSION: Final = "unknown_version"
REASON_INVALID_EVENT: Final = "invalid_event"
REASON_INVALID_NAME: Final = "invalid_name"
REASON_INVALID_VALUE: Final = "invalid_value"
REASON_FIELD_CLASH: Final = "field_clash"
REASON_TYPE_CONFLICT: Final = "type_conflict"
REASON_TOO_MANY_FIELDS: Final = "too_many_fields"
REASON_TOO_LATE: Final = "too_late"
REASON_FROM_FUTURE: Final = "from_future"
REASON_REJECTED: Final = "rejected"
REASON_UNPARSABLE_LINE: Final = REASON_UNPARSABLE
"""Input to ``tel.write`` that is not a point (see :mod:`producers.points`)."""
DEAD_LETTER_REASONS: Final = (
    REASON_UNDECODABLE,
    REASON_UNKNOWN_VERSION,
    REASON_INVALID_EVENT,
    REASON_INVALID_NAME,
    REASON_INVALID_VALUE,
    REASON_FIELD_CLASH,
    REASON_TYPE_CONFLICT,
    REASON_TOO_MANY_FIELDS,
    REASON_TOO_LATE,
    REASON_FROM_FUTURE,
    REASON_REJECTED,
    REASON_UNPARSABLE_LINE,
)


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where an event came from: stream entry id (as ``(ms, seq)``) and index in its batch.

    Ordering positions gives emission order within a shard, used to break ties of "last".
    """

    entry_ms: int
    entry_seq: int
    index: int

    @property
    def entry_id(self) -> str:
        """The stream entry id as Redis prints it (``1700000000000-0``)."""
        return f"{self.entry_ms}-{self.entry_seq}"

    @classmethod
    def parse(cls, entry_id: str | bytes, index: int = 0) -> Position:
        """Build a position from a Redis entry id."""
        text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0), index)


@dataclass(frozen=True, slots=True)
class Event:
    """One producer event after decoding and validation."""

    kind: int
    measurement: str
    ts: float
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    position: Position


@dataclass(frozen=True, slots=True)
class Point:
    """One series-window as it is written: timestamp = window start in ns, tags sorted."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: dict[str, FieldValue]
    time_ns: int

    @property
    def series(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """Measurement and tag set: the identity InfluxDB overwrites on."""
        return (self.measurement, self.tags)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Something that could not become (part of) a point.

    ``source`` is the stream key and ``entry_id``/``index`` the position, so a repeat of the same
    dead letter (after a crash and re-read) is recognisable. ``payload`` is the original event
    (msgpack ``[kind, measurement, ts, tags, fields]``) or raw entry, so ``dlq replay`` can resend it.
    """

    reason: str
    detail: str
    source: str
    entry_id: str
    index: int | None
    payload: bytes
    extra: dict[str, str] = field(default_factory=dict)
