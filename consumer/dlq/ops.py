"""Operator actions on the dead-letter stream ``PREFIX:dlq``: list, replay, purge.

A dead letter is one stream entry with the fields ``reason``, ``detail``, ``source`` (the shard
stream it came from), ``entry_id`` and ``index`` (its position there) and ``payload`` (the
original msgpack event ``[kind, measurement, ts, tags, fields]``, or the raw entry when the
entry itself could not be decoded).

**Replay** sends dead letters back through the whole pipeline rather than writing them anywhere
directly: their original events are packed, byte for byte, into new batch entries on the shard
their series hashes to (:func:`producers.keys.shard_of_series`), under a fresh producer id, so
the worker's de-duplication treats them as new and its validation runs again. An event that
fails again becomes a new dead letter, so nothing is lost. A dead letter is deleted only after
the ``XADD`` carrying it succeeded; a crash in between leaves it in place (replaying it again may
count it twice, never zero times). Dead letters whose payload is not an event (``undecodable``,
``unknown_version``) cannot be replayed and are left where they are. A replayed event goes back
to the shard it came from (its ``source``), since the shard of a series is chosen from its tags
as the producer was given them, which a pseudonymised letter no longer holds; only a letter whose
source is not one of today's shards (the shard count changed) is placed by its series.

With a ``privacy`` pseudonymizer (pseudonymisation configured where the command runs), letters
are shown and replayed as pseudonymised: one written before pseudonymisation was on, or by a
worker without it, never shows or resends a configured tag's raw value.

Usage::

    letters = DeadLetters(client, prefix="telemetry", shards=4)
    for letter in letters.records(reason="too_late"):
        print(letter.reason, letter.detail)
    report = letters.replay(reason="type_conflict")
    letters.purge(older_than_s=7 * 86400)
    letters.trim_older_than(7 * 86400)        # the retention the worker applies
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import redis

from consumer.admin.stream_admin import StreamAdmin, StreamEntry
from consumer.core.model import DeadLetter
from consumer.dlq.deadletter import packed_payload, withheld_entry
from producers.keys import dlq_key, shard_of_series, stream_key
from producers.pseudonyms import Pseudonymizer
from producers.wire import FIELD_DATA, encode_entry

REPLAY_BATCH_EVENTS: Final = 500
"""Most events packed into one replayed stream entry."""
DEFAULT_STREAM_MAXLEN: Final = 10_000_000


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterRecord(DeadLetter):
    """One dead letter as read from the stream: the :class:`DeadLetter` that was written, with
    its id in the dead-letter stream and its payload decoded."""

    dlq_id: str
    event: list[Any] | None
    """The decoded original event, or ``None`` when the payload is not one (not replayable)."""

    @property
    def replayable(self) -> bool:
        """Whether the payload is an event that can be sent again."""
        return self.event is not None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` (the payload as the decoded event, else as hex)."""
        doc: dict[str, Any] = {
            "dlq_id": self.dlq_id,
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "entry_id": self.entry_id,
            "index": self.index,
            "replayable": self.replayable,
        }
        if self.event is not None:
            kind, measurement, ts, tags, fields = self.event
            doc["event"] = {
                "kind": kind,
                "measurement": measurement,
                "ts": ts,
                "tags": tags,
                "fields": fields,
            }
        else:
            doc["payload_hex"] = self.payload[:256].hex()
        return doc


def _decode_event(payload: bytes) -> list[Any] | None:
    try:
        event = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises several unrelated types for input that is not an event
        return None
    if isinstance(event, list) and len(event) == 5 and isinstance(event[1], str):
        return event
    return None


def parse_record(entry: StreamEntry) -> DeadLetterRecord:
    """A dead-letter stream entry -> :class:`DeadLetterRecord` (missing fields become empty)."""
    fields: Mapping[bytes, bytes] = entry.fields
    raw_index = fields.get(b"index")
    try:
        index = int(raw_index) if raw_index not in (None, b"", b"-") else None
    except ValueError:
        index = None
    payload = fields.get(b"payload") or b""
    return DeadLetterRecord(
        dlq_id=entry.entry_id,
        reason=_text(fields.get(b"reason")) or "unknown",
        detail=_text(fields.get(b"detail")),
        source=_text(fields.get(b"source")),
        entry_id=_text(fields.get(b"entry_id")),
        index=index,
        payload=payload,
        event=_decode_event(payload) if payload else None,
    )


@dataclass(slots=True)
class ReplayReport:
    """What a replay did (or, with ``dry_run``, would do)."""

    dry_run: bool
    replayed: int = 0
    """Dead letters sent back to the shard streams (and removed from the dead letters)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Dead letters left in place because they are not replayable, by reason."""
    by_shard: dict[int, int] = field(default_factory=dict)
    entries: list[str] = field(default_factory=list)
    """Ids of the new shard-stream entries."""
    producer_id: str = ""


class DeadLetters:
    """List, replay and purge the dead letters of one pipeline."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        *,
        prefix: str,
        shards: int,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        privacy: Pseudonymizer | None = None,
    ) -> None:
        self.client = client
        self.privacy = privacy
        self.prefix = prefix
        self.shards = shards
        self.stream_maxlen = stream_maxlen
        self.key = dlq_key(prefix)
        self._admin = StreamAdmin(client, prefix=prefix, shards=shards, group="")

    def iter_records(
        self, *, reason: str | None = None, limit: int | None = None
    ) -> Iterator[DeadLetterRecord]:
        """Dead letters oldest first, optionally only one ``reason``, at most ``limit``."""
        yielded = 0
        for entry in self._admin.iter_range(self.key):
            record = parse_record(entry)
            if self.privacy is not None:
                record = self._pseudonymised(record, self.privacy)
            if reason is not None and record.reason != reason:
                continue
            yield record
            yielded += 1
            if limit is not None and yielded >= limit:
                return

    @staticmethod
    def _pseudonymised(record: DeadLetterRecord, privacy: Pseudonymizer) -> DeadLetterRecord:
        """``record`` as a pseudonymising worker would have written it."""
        if record.event is not None:
            event = privacy.wire_event(record.event)
            if event is record.event:
                return record
            return dataclasses.replace(record, event=event, payload=packed_payload(event))
        try:
            fields = msgpack.unpackb(record.payload, raw=True, strict_map_key=False)
        except Exception:  # not a packed entry (a rejected point's line): nothing to withhold
            return record
        if not isinstance(fields, dict) or FIELD_DATA not in fields:
            return record
        kept = withheld_entry(fields)
        return record if kept == fields else dataclasses.replace(record, payload=packed_payload(kept))

    def records(self, *, reason: str | None = None, limit: int | None = None) -> list[DeadLetterRecord]:
        """:meth:`iter_records` as a list."""
        return list(self.iter_records(reason=reason, limit=limit))

    def counts(self) -> dict[str, int]:
        """Dead letters by reason."""
        return dict(sorted(Counter(record.reason for record in self.iter_records()).items()))

    def replay(self, *, reason: str | None = None, dry_run: bool = False) -> ReplayReport:
        """Send replayable dead letters back through the pipeline (see the module docstring)."""
        report = ReplayReport(dry_run=dry_run, producer_id=secrets.token_hex(8))
        pending: dict[int, list[DeadLetterRecord]] = {}
        sequences: dict[int, int] = {}
        for record in self.iter_records(reason=reason):
            if record.event is None:
                report.skipped[record.reason] = report.skipped.get(record.reason, 0) + 1
                continue
            shard = self._source_shard(record)
            if shard is None:
                tags = record.event[3] if isinstance(record.event[3], dict) else None
                shard = shard_of_series(record.event[1], tags, self.shards)
            batch = pending.setdefault(shard, [])
            batch.append(record)
            if len(batch) >= REPLAY_BATCH_EVENTS:
                self._send(shard, pending.pop(shard), sequences, report)
        for shard, batch in sorted(pending.items()):
            self._send(shard, batch, sequences, report)
        return report

    def _source_shard(self, record: DeadLetterRecord) -> int | None:
        """The shard the letter's event came from, when it is one of this pipeline's shards."""
        head, _, tail = record.source.rpartition(":")
        if head != self.prefix or not (tail.startswith("{") and tail.endswith("}")):
            return None
        try:
            shard = int(tail[1:-1])
        except ValueError:
            return None
        return shard if 0 <= shard < self.shards and record.source == stream_key(self.prefix, shard) else None

    def _send(
        self, shard: int, batch: list[DeadLetterRecord], sequences: dict[int, int], report: ReplayReport
    ) -> None:
        report.replayed += len(batch)
        report.by_shard[shard] = report.by_shard.get(shard, 0) + len(batch)
        if report.dry_run:
            return
        sequences[shard] = sequences.get(shard, 0) + 1
        # The original bytes of each event, under one array header: nothing is re-encoded.
        payload = msgpack.Packer().pack_array_header(len(batch)) + b"".join(r.payload for r in batch)
        fields = encode_entry(report.producer_id, sequences[shard], payload, len(batch))
        entry_id = self.client.xadd(
            stream_key(self.prefix, shard),
            fields,
            maxlen=self.stream_maxlen,
            approximate=True,
        )
        report.entries.append(_text(entry_id) if isinstance(entry_id, bytes) else str(entry_id))
        # Only now that the events are back in a shard stream may their dead letters go.
        self.client.xdel(self.key, *[r.dlq_id for r in batch])

    def purge(self, *, older_than_s: float) -> int:
        """Delete dead letters older than ``older_than_s`` (by the Redis clock); returns how many."""
        cutoff_ms = self._admin.server_time_ms() - int(older_than_s * 1000)
        if cutoff_ms <= 0:
            return 0
        return int(self.client.xtrim(self.key, minid=f"{cutoff_ms}-0", approximate=False))
