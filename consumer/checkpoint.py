"""Atomic per-shard checkpoints: window state + dedupe state + last id + XACK, fenced.

What a checkpoint means: every entry of the shard's stream up to ``last_id`` has been applied to
the stored window state (``windows`` = ``ShardWindows.snapshot()``) and dedupe state, and its dead
letters are in the dead-letter stream. Points already written to InfluxDB are marked clean in
that state; dirty windows are still in it. So after a crash, a new owner restores the state and
re-reads the entries after ``last_id``: it re-derives exactly what the dead owner had in memory,
and re-writing a point overwrites it with the same values (same measurement, tags and time).

One Lua script does it all on keys of the shard's hash slot (``PREFIX:{i}:state``,
``PREFIX:{i}:lease`` and the stream ``PREFIX:{i}``), so it is atomic on a Redis Cluster too:

1. the lease must hold exactly the caller's ``worker:token`` value, else ``FENCED`` and nothing
   changes (a stale owner cannot overwrite its successor's progress);
2. ``XACK`` the processed entries (acknowledged only together with the state that covers them);
3. ``HSET`` the state.

XACK runs before HSET because a script's writes are not rolled back on error: a failed XACK
(group gone) leaves the old checkpoint intact.

Usage::

    store = CheckpointStore(client, prefix="telemetry", group="aggregator")
    previous = store.load(0)                      # None on a fresh shard
    store.save(0, lease_value="w1:7", last_id="1700000000000-3", windows=blob, dedupe=blob2,
               ack_ids=["1700000000000-2", "1700000000000-3"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import redis

from consumer.errors import Fenced, GroupMissing
from producers.keys import lease_key, state_key, stream_key

_SAVE: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease is not held by ' .. ARGV[1])
end
local first = 6
local n = #ARGV
while first <= n do
  local last = math.min(first + 999, n)
  redis.call('XACK', KEYS[3], ARGV[2], unpack(ARGV, first, last))
  first = last + 1
end
redis.call('HSET', KEYS[1], 'last_id', ARGV[3], 'windows', ARGV[4], 'dedupe', ARGV[5], 'owner', ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A shard's stored progress: last applied entry id and the state blobs covering it."""

    last_id: str
    windows: bytes
    dedupe: bytes
    owner: str


class CheckpointStore:
    """Loads and saves shard checkpoints (see the module docstring for the guarantees)."""

    def __init__(self, client: redis.Redis[bytes], *, prefix: str, group: str) -> None:
        self.client = client
        self.prefix = prefix
        self.group = group
        self._save = client.register_script(_SAVE)

    def key(self, shard: int) -> str:
        """The checkpoint hash of ``shard`` (also holds the trim counter)."""
        return state_key(self.prefix, shard)

    def load(self, shard: int) -> Checkpoint | None:
        """The stored checkpoint, or None when the shard has none (new, or Redis lost it)."""
        raw = self.client.hmget(self.key(shard), ["last_id", "windows", "dedupe", "owner"])
        if raw[0] is None:
            return None
        last_id, windows, dedupe, owner = (value or b"" for value in raw)
        return Checkpoint(last_id=last_id.decode(), windows=windows, dedupe=dedupe, owner=owner.decode())

    def save(self, shard: int, *, lease_value: str, last_id: str, windows: bytes, dedupe: bytes,
             ack_ids: Sequence[str]) -> None:
        """Atomically store the state and acknowledge ``ack_ids``, if ``lease_value`` still holds.

        Raises:
            Fenced: the lease is not (or no longer) ``lease_value``; nothing was written.
            GroupMissing: the consumer group is gone; nothing was written.
        """
        keys = [self.key(shard), lease_key(self.prefix, shard), stream_key(self.prefix, shard)]
        args: list[str | bytes] = [lease_value, self.group, last_id, windows, dedupe, *ack_ids]
        try:
            self._save(keys=keys, args=args)
        except redis.ResponseError as exc:
            message = str(exc)
            if "FENCED" in message:
                raise Fenced(shard, f"checkpoint of shard {shard} refused: {message}") from exc
            if "NOGROUP" in message:
                raise GroupMissing(shard, f"group {self.group!r} missing on shard {shard}") from exc
            raise
