"""The Redis Streams adapter: the only module that issues the worker's stream commands.

redis-py shapes stream replies differently under RESP2 and RESP3 (``XREADGROUP`` is a list of
``[stream, entries]`` pairs in one, a map in the other; map keys may be ``str`` or ``bytes``), so
every reply is normalised here into our own records (:class:`StreamEntry`, :class:`StreamInfo`,
:class:`GroupInfo`, :class:`PendingSummary`) and nothing else in the worker sees raw replies.
Connection failures become :class:`~consumer.core.errors.SourceUnavailable`, a missing group
:class:`~consumer.core.errors.GroupMissing`.

Usage::

    source = StreamSource(redis.Redis.from_url(url), prefix="telemetry", group="aggregator",
                          consumer="worker-1")
    source.ensure_group(0)
    for shard, entries in source.read_new([0, 1], count=500, block_ms=500).items():
        ...
    source.ack(0, [entry.entry_id for entry in entries])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.cluster import RedisCluster

from consumer.core.errors import GroupMissing, SourceUnavailable
from consumer.core.model import Position
from producers.keys import stream_key

ZERO_ID: Final = "0-0"


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry: its id, its shard and its field map (bytes -> bytes)."""

    shard: int
    entry_id: str
    fields: Mapping[bytes, bytes]

    @property
    def key(self) -> tuple[int, int]:
        """The id as a sortable ``(ms, seq)`` pair."""
        return parse_id(self.entry_id)

    def position(self, index: int = 0) -> Position:
        """Position of event ``index`` of this entry."""
        ms, seq = self.key
        return Position(ms, seq, index)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group of a stream (``XINFO GROUPS``)."""

    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    lag: int | None


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's length, ends and deletion record (``XINFO STREAM``)."""

    length: int
    first_id: str | None
    last_generated_id: str
    max_deleted_id: str
    entries_added: int | None


@dataclass(frozen=True, slots=True)
class PendingSummary:
    """Entries delivered to a group and not yet acknowledged (``XPENDING`` summary)."""

    count: int
    min_id: str | None
    max_id: str | None


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``, for ordering ids numerically."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(key: tuple[int, int]) -> str:
    """``(ms, seq)`` -> ``"ms-seq"``."""
    return f"{key[0]}-{key[1]}"


def next_id(entry_id: str) -> str:
    """The smallest id greater than ``entry_id``."""
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"


TRANSIENT_REPLIES: Final = ("UNBLOCKED", "READONLY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN")


def is_transient(exc: BaseException) -> bool:
    """A Redis error reply that goes away by itself (failover, restart): retry, do not stop."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(TRANSIENT_REPLIES)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a redis-py RedisCluster (commands must stay within one slot)."""
    return isinstance(client, RedisCluster)


def make_client(url: str, **options: Any) -> redis.Redis[bytes]:
    """A client for ``url``; ``redis+cluster://`` (or ``rediss+cluster://``) gives a RedisCluster."""
    if "+cluster://" in url:
        cluster: Any = RedisCluster.from_url(url.replace("+cluster://", "://", 1), **options)
        return cluster  # type: ignore[no-any-return]  # the same command surface for our use
    return redis.Redis.from_url(url, **options)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _get(reply: Mapping[Any, Any], name: str) -> Any:
    if name in reply:
        return reply[name]
    return reply.get(name.encode())


def _entries(shard: int, raw: Iterable[Any]) -> list[StreamEntry]:
    entries = []
    for item in raw:
        entry_id, fields = item[0], item[1]
        if fields is None:  # an id still pending whose entry was deleted
            continue
        entries.append(StreamEntry(shard, _text(entry_id), dict(fields)))
    return entries


class StreamSource:
    """Stream commands of one worker (one consumer name in one group) over the shard streams."""

    def __init__(self, client: redis.Redis[bytes], *, prefix: str, group: str, consumer: str) -> None:
        self.client = client
        self.prefix = prefix
        self.group = group
        self.consumer = consumer

    def stream(self, shard: int) -> str:
        """The stream key of ``shard``."""
        return stream_key(self.prefix, shard)

    def shard_of(self, stream: str | bytes) -> int:
        """The shard number of a stream key."""
        text = _text(stream)
        return int(text[text.rindex("{") + 1:text.rindex("}")])

    @contextmanager
    def _guard(self, shard: int) -> Iterator[None]:
        try:
            yield
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise GroupMissing(shard, f"group {self.group!r} missing on {self.stream(shard)}") from exc
            if is_transient(exc):
                raise SourceUnavailable(f"Redis not ready: {exc}") from exc
            raise
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                redis.exceptions.ClusterError) as exc:
            raise SourceUnavailable(f"Redis unreachable: {exc}") from exc

    def ensure_group(self, shard: int, start_id: str = ZERO_ID) -> bool:
        """Create the group (and the stream) when missing; True when it was created now."""
        with self._guard(shard):
            try:
                self.client.xgroup_create(self.stream(shard), self.group, id=start_id, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    return False
                raise
        return True

    def read_new(self, shards: Sequence[int], *, count: int,
                 block_ms: int | None) -> dict[int, list[StreamEntry]]:
        """Entries never delivered to the group (``XREADGROUP ... >``), per shard, in id order."""
        if not shards:
            return {}
        if is_cluster(self.client):
            return self._read_new_per_shard(shards, count=count, block_ms=block_ms)
        streams = {self.stream(shard): ">" for shard in shards}
        with self._guard(shards[0]):
            reply = self.client.xreadgroup(self.group, self.consumer, streams, count=count, block=block_ms)
        return self._parse_read(reply)

    def _read_new_per_shard(self, shards: Sequence[int], *, count: int,
                            block_ms: int | None) -> dict[int, list[StreamEntry]]:
        """On a cluster one XREADGROUP cannot span slots: read each shard's stream on its own, first
        without blocking, then (when all were empty) blocking on each for a share of ``block_ms``."""
        result: dict[int, list[StreamEntry]] = {}
        passes: list[int | None] = [None]
        if block_ms:
            passes.append(max(1, block_ms // len(shards)))
        for block in passes:
            for shard in shards:
                with self._guard(shard):
                    reply = self.client.xreadgroup(self.group, self.consumer, {self.stream(shard): ">"},
                                                   count=count, block=block)
                result.update(self._parse_read(reply))
                if result and block is not None:
                    return result
            if result:
                return result
        return result

    def _parse_read(self, reply: Any) -> dict[int, list[StreamEntry]]:
        result: dict[int, list[StreamEntry]] = {}
        if not reply:
            return result
        pairs = reply.items() if isinstance(reply, Mapping) else ((item[0], item[1]) for item in reply)
        for stream, raw in pairs:
            shard = self.shard_of(stream)
            # RESP3 wraps the entry list in one more list
            if raw and isinstance(raw[0], list) and raw[0] and isinstance(raw[0][0], (list, tuple)):
                raw = raw[0]
            result[shard] = _entries(shard, raw)
        return result

    def read_range(self, shard: int, *, after_id: str, until_id: str = "+", count: int) -> list[StreamEntry]:
        """Entries with ``after_id < id <= until_id`` (``XRANGE``), whatever their delivery state."""
        with self._guard(shard):
            raw = self.client.xrange(self.stream(shard), min="(" + after_id, max=until_id, count=count)
        return _entries(shard, raw)

    def ack(self, shard: int, entry_ids: Sequence[str]) -> int:
        """Acknowledge entries for the group (whichever consumer they are pending under)."""
        if not entry_ids:
            return 0
        with self._guard(shard):
            return int(self.client.xack(self.stream(shard), self.group, *entry_ids))  # type: ignore[no-untyped-call]

    def claim_stale(self, shard: int, *, min_idle_ms: int, start_id: str = ZERO_ID,
                    count: int = 100) -> tuple[str, list[StreamEntry]]:
        """Take over entries pending under other consumers for ``min_idle_ms`` (``XAUTOCLAIM``).

        Returns the cursor for the next call (``0-0`` when the scan is complete) and the entries.
        """
        with self._guard(shard):
            reply = self.client.xautoclaim(self.stream(shard), self.group, self.consumer,
                                           min_idle_ms, start_id, count=count)
        return _text(reply[0]), _entries(shard, reply[1])

    def pending(self, shard: int) -> PendingSummary:
        """How many entries the group has not acknowledged, and the id range."""
        with self._guard(shard):
            reply = self.client.xpending(self.stream(shard), self.group)  # type: ignore[no-untyped-call]
        count = int(_get(reply, "pending") or 0)
        low, high = _get(reply, "min"), _get(reply, "max")
        if not count:
            return PendingSummary(0, None, None)
        return PendingSummary(count, _text(low) if low else None, _text(high) if high else None)

    def info(self, shard: int) -> StreamInfo | None:
        """Length, first id and deletion record of the stream; None when it does not exist."""
        with self._guard(shard):
            try:
                reply = self.client.xinfo_stream(self.stream(shard))
            except redis.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    return None
                raise
        first = _get(reply, "first-entry")
        added = _get(reply, "entries-added")
        return StreamInfo(
            length=int(_get(reply, "length") or 0),
            first_id=_text(first[0]) if first else None,
            last_generated_id=_text(_get(reply, "last-generated-id") or ZERO_ID),
            max_deleted_id=_text(_get(reply, "max-deleted-entry-id") or ZERO_ID),
            entries_added=int(added) if added is not None else None,
        )

    def groups(self, shard: int) -> list[GroupInfo]:
        """Every consumer group of the stream (empty when the stream does not exist)."""
        with self._guard(shard):
            try:
                reply = self.client.xinfo_groups(self.stream(shard))  # type: ignore[no-untyped-call]
            except redis.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    return []
                raise
        groups = []
        for item in reply:
            lag = _get(item, "lag")
            groups.append(GroupInfo(
                name=_text(_get(item, "name")),
                consumers=int(_get(item, "consumers") or 0),
                pending=int(_get(item, "pending") or 0),
                last_delivered_id=_text(_get(item, "last-delivered-id") or ZERO_ID),
                lag=int(lag) if lag is not None else None,
            ))
        return groups

    def group_info(self, shard: int) -> GroupInfo | None:
        """This worker's group on ``shard``, or None when it does not exist."""
        return next((g for g in self.groups(shard) if g.name == self.group), None)

    def remove_idle_consumers(self, shard: int, *, min_idle_ms: int) -> list[str]:
        """Delete consumers of our group with nothing pending, idle for ``min_idle_ms`` (dead workers
        whose entries were re-read and acknowledged by their successor); returns their names."""
        with self._guard(shard):
            try:
                consumers = self.client.xinfo_consumers(self.stream(shard), self.group)  # type: ignore[no-untyped-call]
            except redis.ResponseError as exc:
                if "no such key" in str(exc).lower() or "NOGROUP" in str(exc):
                    return []
                raise
            removed = []
            for item in consumers:
                name = _text(_get(item, "name"))
                idle = int(_get(item, "idle") or 0)
                if name != self.consumer and not int(_get(item, "pending") or 0) and idle >= min_idle_ms:
                    self.client.xgroup_delconsumer(self.stream(shard), self.group, name)  # type: ignore[no-untyped-call]
                    removed.append(name)
        return removed

    def lowest_unacknowledged(self, shard: int) -> str | None:
        """The smallest id some group still needs (pending or not yet delivered); None: no groups."""
        groups = self.groups(shard)
        if not groups:
            return None
        lowest: tuple[int, int] | None = None
        for info in groups:
            if info.pending:
                with self._guard(shard):
                    reply = self.client.xpending(self.stream(shard), info.name)  # type: ignore[no-untyped-call]
                candidate = parse_id(_get(reply, "min"))
            else:
                candidate = parse_id(next_id(info.last_delivered_id))
            lowest = candidate if lowest is None or candidate < lowest else lowest
        return format_id(lowest) if lowest else None

    def trim_acknowledged(self, shard: int, counter_key: str) -> int:
        """``XTRIM MINID`` below the lowest id any group still needs; returns entries removed.

        Never removes an entry a group has not acknowledged: the threshold is the smallest
        pending id of every group, or the first id after its last delivered one. The number
        removed is added to field ``trimmed`` of ``counter_key`` (a hash in the shard's slot) in
        the same script, so :meth:`lost_entries` can tell our trimming from the hard cap's.
        """
        threshold = self.lowest_unacknowledged(shard)
        if threshold is None:
            return 0
        with self._guard(shard):
            return int(self.client.eval(_TRIM_SCRIPT, 2, self.stream(shard), counter_key, threshold))  # type: ignore[no-untyped-call]

    def lost_entries(self, shard: int, counter_key: str) -> int:
        """Entries that left the stream without our trimming: removed by the hard length cap.

        ``entries-added`` (Redis 7+) counts every entry ever added; what is neither still in the
        stream nor trimmed by us after acknowledgement was lost. 0 when Redis cannot tell.
        """
        info = self.info(shard)
        if info is None or info.entries_added is None:
            return 0
        with self._guard(shard):
            trimmed = self.client.hget(counter_key, "trimmed")
        return max(0, info.entries_added - info.length - int(trimmed or 0))


_TRIM_SCRIPT: Final = """
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
if removed > 0 then redis.call('HINCRBY', KEYS[2], 'trimmed', removed) end
return removed
"""
