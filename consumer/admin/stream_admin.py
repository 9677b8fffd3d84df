"""Read-only operator view of the Redis streams: the adapter behind ``inspect``, ``tail`` and ``top``.

Every stream command the operator commands issue lives here (XINFO STREAM/GROUPS/CONSUMERS,
XPENDING, XRANGE/XREVRANGE, XREAD without a group, MEMORY USAGE, TIME), and raw redis-py replies
never leave this module: callers get the typed records below. RESP2 and RESP3 replies differ
(XREAD returns a list of pairs in RESP2 and a map in RESP3); both are normalised here.

Nothing here writes to a stream or joins a consumer group: ``tail`` reads with a plain ``XREAD``,
so watching the pipeline never creates pending entries or steals work from the worker.

Times come from the Redis server's clock (``TIME``), the same clock that stamps entry ids, so the
ages and lags reported do not depend on the operator's machine being in sync.

Usage::

    admin = StreamAdmin(redis.Redis.from_url(url), prefix="telemetry", shards=4, group="aggregator")
    for shard in admin.overview():
        print(shard.key, shard.length, shard.lag_entries)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis

from producers.keys import dlq_key, stream_key

DLQ_SCAN_LIMIT: Final = 100_000
"""Most dead letters read to count them by reason (the count says when it stopped short)."""
PAGE_SIZE: Final = 1000


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def entry_ms(entry_id: str) -> int:
    """Milliseconds part of a stream entry id (``1700000000000-3`` -> ``1700000000000``)."""
    return int(entry_id.partition("-")[0])


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: str) -> str:
    """The smallest id strictly greater than ``entry_id`` (for exclusive range starts)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry: its id and raw field map."""

    entry_id: str
    fields: Mapping[bytes, bytes]

    @property
    def time_ms(self) -> int:
        """When Redis appended it (the id's millisecond part)."""
        return entry_ms(self.entry_id)


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """A consumer of a group: how many entries it holds and how long it has been idle."""

    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group on one shard stream.

    ``lag_entries`` is how many entries the group has not been delivered yet; ``lag_s`` is the
    age of the oldest of them (0 when nothing waits). ``oldest_pending_*`` describe the oldest
    entry delivered but not acknowledged.
    """

    name: str
    consumers: tuple[ConsumerInfo, ...]
    pending: int
    last_delivered_id: str
    lag_entries: int | None
    lag_s: float
    oldest_pending_id: str | None
    oldest_pending_age_s: float | None


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """The state of one shard stream, as ``inspect`` shows it."""

    shard: int
    key: str
    exists: bool
    length: int = 0
    first_id: str | None = None
    last_id: str | None = None
    memory_bytes: int | None = None
    entries_added: int | None = None
    groups: tuple[GroupInfo, ...] = ()
    last_generated_id: str | None = None
    """The id of the newest entry ever added, even when it has been trimmed since (None: never)."""

    @property
    def newest_ms(self) -> int | None:
        """When the stream last received an entry (server clock), trimmed or not; None: never."""
        ids = [entry_ms(i) for i in (self.last_id, self.last_generated_id) if i and i != "0-0"]
        return max(ids, default=None)

    def group(self, name: str) -> GroupInfo | None:
        """The group called ``name``, if it exists on this shard."""
        return next((g for g in self.groups if g.name == name), None)


@dataclass(frozen=True, slots=True)
class DeadLetterCounts:
    """Dead letters by reason; ``complete`` is False when the scan stopped at the limit."""

    total: int
    by_reason: dict[str, int] = field(default_factory=dict)
    complete: bool = True
    oldest_id: str | None = None
    """The oldest letter's id (its time is when it was written), ``None`` when there is none."""


def _normalise_xread(reply: Any) -> list[tuple[str, list[StreamEntry]]]:
    """XREAD reply (RESP2 list of pairs or RESP3 map) -> [(key, entries)]."""
    if not reply:
        return []
    pairs: Any = reply.items() if isinstance(reply, Mapping) else reply
    result: list[tuple[str, list[StreamEntry]]] = []
    for key, entries in pairs:
        # RESP3 wraps the entry list in one more list level.
        if entries and isinstance(entries[0], list) and entries[0] and isinstance(entries[0][0], tuple):
            entries = entries[0]
        result.append((_text(key), [StreamEntry(_text(eid), fields or {}) for eid, fields in entries]))
    return result


class StreamAdmin:
    """Read-only access to a pipeline's shard streams and dead letters."""

    def __init__(self, client: redis.Redis[bytes], *, prefix: str, shards: int, group: str) -> None:
        self.client = client
        self.prefix = prefix
        self.shards = shards
        self.group = group

    # -- keys and time -------------------------------------------------------------------------
    def shard_keys(self) -> list[str]:
        """All shard stream keys, in shard order."""
        return [stream_key(self.prefix, shard) for shard in range(self.shards)]

    @property
    def dlq(self) -> str:
        """The dead-letter stream key."""
        return dlq_key(self.prefix)

    def server_time_ms(self) -> int:
        """The Redis server's clock in milliseconds (the clock that stamps entry ids)."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # -- per shard -----------------------------------------------------------------------------
    def shard_info(self, shard: int, now_ms: int | None = None) -> ShardInfo:
        """Length, first/last entry, memory and groups of one shard stream."""
        key = stream_key(self.prefix, shard)
        now_ms = self.server_time_ms() if now_ms is None else now_ms
        try:
            info = self.client.xinfo_stream(key)
        except redis.ResponseError:
            return ShardInfo(shard=shard, key=key, exists=False)
        first = info.get("first-entry")
        last = info.get("last-entry")
        memory = self.client.memory_usage(key)
        groups = tuple(self._group_info(key, raw, now_ms) for raw in self.client.xinfo_groups(key))  # type: ignore[no-untyped-call]
        return ShardInfo(
            shard=shard, key=key, exists=True, length=int(info.get("length", 0)),
            first_id=_text(first[0]) if first else None, last_id=_text(last[0]) if last else None,
            memory_bytes=int(memory) if memory is not None else None,
            entries_added=int(info["entries-added"]) if info.get("entries-added") is not None else None,
            groups=groups, last_generated_id=_text(info.get("last-generated-id")) or None,
        )

    def _group_info(self, key: str, raw: Mapping[str, Any], now_ms: int) -> GroupInfo:
        name = _text(raw.get("name"))
        last_delivered = _text(raw.get("last-delivered-id")) or "0-0"
        consumers = tuple(
            ConsumerInfo(_text(c.get("name")), int(c.get("pending", 0)), int(c.get("idle", 0)))
            for c in self.client.xinfo_consumers(key, name)  # type: ignore[no-untyped-call]
        )
        lag_entries = raw.get("lag")
        first_undelivered = self.client.xrange(key, min=_next_id(last_delivered), count=1)
        if lag_entries is None and not first_undelivered:
            lag_entries = 0  # Redis could not tell, but nothing is waiting
        lag_s = 0.0
        if first_undelivered:
            lag_s = max(0.0, (now_ms - entry_ms(_text(first_undelivered[0][0]))) / 1000)
        summary = self.client.xpending(key, name)  # type: ignore[no-untyped-call]
        oldest = _text(summary.get("min")) if summary.get("pending") else None
        return GroupInfo(
            name=name, consumers=consumers, pending=int(summary.get("pending", 0)),
            last_delivered_id=last_delivered,
            lag_entries=int(lag_entries) if lag_entries is not None else None, lag_s=lag_s,
            oldest_pending_id=oldest,
            oldest_pending_age_s=max(0.0, (now_ms - entry_ms(oldest)) / 1000) if oldest else None,
        )

    def overview(self) -> list[ShardInfo]:
        """Every shard's :class:`ShardInfo`, measured against one server time."""
        now_ms = self.server_time_ms()
        return [self.shard_info(shard, now_ms) for shard in range(self.shards)]

    # -- reading entries -----------------------------------------------------------------------
    def latest_ids(self, keys: Sequence[str]) -> dict[str, str]:
        """The id of the newest entry of each stream (``0-0`` for a missing or empty one).

        ``tail`` starts from these concrete ids rather than ``$``, so nothing appended between
        two reads is missed.
        """
        ids: dict[str, str] = {}
        for key in keys:
            newest = self.client.xrevrange(key, count=1)
            ids[key] = _text(newest[0][0]) if newest else "0-0"
        return ids

    def read_new(self, last_ids: dict[str, str], *, block_ms: int, count: int = 100) -> list[
            tuple[str, StreamEntry]]:
        """Entries after ``last_ids`` (plain XREAD, no group); advances ``last_ids`` in place."""
        reply = self.client.xread(dict(last_ids), count=count, block=block_ms)
        result: list[tuple[str, StreamEntry]] = []
        for key, entries in _normalise_xread(reply):
            for entry in entries:
                result.append((key, entry))
                last_ids[key] = entry.entry_id
        # XREAD groups its reply by stream; ids from one server clock give the arrival order.
        result.sort(key=lambda item: _id_key(item[1].entry_id))
        return result

    def iter_range(self, key: str, *, start: str = "-", end: str = "+",
                   limit: int | None = None) -> Iterator[StreamEntry]:
        """Entries of ``key`` from ``start`` to ``end`` inclusive, paged with XRANGE."""
        seen = 0
        while limit is None or seen < limit:
            page = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - seen)
            batch = self.client.xrange(key, min=start, max=end, count=page)
            for entry_id, fields in batch:
                yield StreamEntry(_text(entry_id), fields or {})
            seen += len(batch)
            if len(batch) < page:
                return
            start = _next_id(_text(batch[-1][0]))

    def recent(self, key: str, count: int) -> list[StreamEntry]:
        """The newest ``count`` entries of ``key``, newest first (XREVRANGE)."""
        reply = self.client.xrevrange(key, count=count)
        return [StreamEntry(_text(eid), fields or {}) for eid, fields in reply]

    # -- dead letters --------------------------------------------------------------------------
    def dead_letter_length(self) -> int:
        """How many dead letters are stored."""
        return int(self.client.xlen(self.dlq))

    def dead_letter_counts(self, limit: int = DLQ_SCAN_LIMIT) -> DeadLetterCounts:
        """Dead letters by reason (scans at most ``limit`` entries)."""
        total = self.dead_letter_length()
        counts: Counter[str] = Counter()
        oldest: str | None = None
        for entry in self.iter_range(self.dlq, limit=limit):
            oldest = oldest or entry.entry_id
            counts[_text(entry.fields.get(b"reason")) or "unknown"] += 1
        return DeadLetterCounts(total=total, by_reason=dict(sorted(counts.items())),
                                complete=sum(counts.values()) >= total, oldest_id=oldest)
