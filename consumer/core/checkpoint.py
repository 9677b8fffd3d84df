"""Atomic per-shard checkpoints: window state + dedupe state + last id + XACK, fenced.

What a checkpoint means: every entry of the shard's stream up to ``last_id`` has been applied to
the stored window state and dedupe state, and its dead letters are in the dead-letter stream.
Points already written to InfluxDB are marked clean in that state; dirty windows are still in
it. So after a crash, a new owner restores the state and re-reads the entries after ``last_id``:
it re-derives exactly what the dead owner had in memory, and re-writing a point overwrites it
with the same values (same measurement, tags and time).

The state is stored as fields of the hash ``PREFIX:{i}:state``, so that a checkpoint sends only
what changed since the previous one (:class:`StateWrite`: fields to set, fields to delete): the
windows' manifest ``wh`` and their segments ``ws:<window>:<n>`` (:mod:`consumer.aggregation.window_log`),
the dedupe state's ``dh`` and one ``dp:<producer>`` per producer (:mod:`consumer.pipeline.dedupe`). A
*full* write first deletes every state field (anything starting with :data:`STATE_PREFIXES`),
so it replaces whatever was there: the first checkpoint of an owner, and the one after a save
whose outcome is unknown. A checkpoint written before this layout (current main: one ``windows``
and one ``dedupe`` blob) is still read, and the first full write replaces it.

One Lua script does it all on keys of the shard's hash slot (``PREFIX:{i}:state``,
``PREFIX:{i}:lease`` and the stream ``PREFIX:{i}``), so it is atomic on a Redis Cluster too:

1. the lease must hold exactly the caller's ``worker:token`` value, else ``FENCED`` and nothing
   changes (a stale owner cannot overwrite its successor's progress);
2. ``XACK`` the processed entries (acknowledged only together with the state that covers them);
3. (full) ``HDEL`` every state field; ``HDEL`` the removed fields; ``HSET`` the changed ones,
   ``last_id`` and ``owner``.

XACK runs before any write because a script's writes are not rolled back on error: a failed XACK
(group gone) leaves the old checkpoint intact.

Usage::

    store = CheckpointStore(client, prefix="telemetry", group="aggregator")
    previous = store.load(0)                      # None on a fresh shard
    store.save(0, lease_value="w1:7", last_id="1700000000000-3",
               write=StateWrite({"wh": head, "ws:170000000:0": segment}, full=True),
               ack_ids=["1700000000000-2", "1700000000000-3"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import redis

from consumer.core.errors import Fenced, GroupMissing
from producers.keys import lease_key, state_key, stream_key

STATE_PREFIXES: Final = ("wh", "ws:", "dh", "dp:", "windows", "dedupe")
"""Every field of the state hash that holds window or dedupe state, in any layout ever written
(``windows``/``dedupe``: the single blobs of the first layout); not ``last_id``, ``owner`` or
the trim counter ``trimmed``."""

_SAVE: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease is not held by ' .. ARGV[1])
end
local function slices(first, last, command, key, extra)
  while first <= last do
    local stop = math.min(first + 999, last)
    if extra then
      redis.call(command, key, extra, unpack(ARGV, first, stop))
    else
      redis.call(command, key, unpack(ARGV, first, stop))
    end
    first = stop + 1
  end
end
local acks, sets, dels, prefixes = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local at = 8
slices(at, at + acks - 1, 'XACK', KEYS[3], ARGV[2])
at = at + acks
if prefixes > 0 then
  local first = at + sets + dels
  local gone = {}
  for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
    for i = first, first + prefixes - 1 do
      if string.sub(name, 1, #ARGV[i]) == ARGV[i] then
        gone[#gone + 1] = name
        break
      end
    end
  end
  for i = 1, #gone, 1000 do
    redis.call('HDEL', KEYS[1], unpack(gone, i, math.min(i + 999, #gone)))
  end
end
slices(at + sets, at + sets + dels - 1, 'HDEL', KEYS[1])
slices(at, at + sets - 1, 'HSET', KEYS[1])
redis.call('HSET', KEYS[1], 'last_id', ARGV[3], 'owner', ARGV[1])
return 1
"""


def state_bytes(fields: dict[str, bytes], deleted: Sequence[str]) -> int:
    """Bytes of state a write sends: field names and values set, names deleted."""
    return sum(len(name) + len(value) for name, value in fields.items()) + sum(map(len, deleted))


@dataclass(slots=True)
class StateWrite:
    """What one checkpoint changes in the state hash: fields to set, fields to delete.

    ``full``: delete every state field first (:data:`STATE_PREFIXES`), so the hash holds exactly
    ``fields`` afterwards, whatever an earlier writer left there.
    """

    fields: dict[str, bytes] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    full: bool = False

    @property
    def size(self) -> int:
        """Bytes of state this write sends (:func:`state_bytes`)."""
        return state_bytes(self.fields, self.deleted)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A shard's stored progress: last applied entry id, the owner's lease, the state fields."""

    last_id: str
    owner: str
    fields: dict[str, bytes]
    """Every state field (see :data:`STATE_PREFIXES`) by name."""


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
        raw = self.client.hgetall(self.key(shard))
        last_id = raw.get(b"last_id")
        if last_id is None:
            return None
        fields = {name.decode(): value for name, value in raw.items()
                  if name.decode().startswith(STATE_PREFIXES)}
        return Checkpoint(last_id=last_id.decode(), owner=raw.get(b"owner", b"").decode(), fields=fields)

    def save(self, shard: int, *, lease_value: str, last_id: str, write: StateWrite,
             ack_ids: Sequence[str]) -> None:
        """Atomically apply ``write`` and acknowledge ``ack_ids``, if ``lease_value`` still holds.

        Raises:
            Fenced: the lease is not (or no longer) ``lease_value``; nothing was written.
            GroupMissing: the consumer group is gone; nothing was written.
        """
        keys = [self.key(shard), lease_key(self.prefix, shard), stream_key(self.prefix, shard)]
        prefixes = STATE_PREFIXES if write.full else ()
        pairs = [item for name, value in write.fields.items() for item in (name, value)]
        args: list[str | bytes | int] = [lease_value, self.group, last_id, len(ack_ids), len(pairs),
                                         len(write.deleted), len(prefixes), *ack_ids, *pairs,
                                         *write.deleted, *prefixes]
        try:
            self._save(keys=keys, args=args)
        except redis.ResponseError as exc:
            message = str(exc)
            if "FENCED" in message:
                raise Fenced(shard, f"checkpoint of shard {shard} refused: {message}") from exc
            if "NOGROUP" in message:
                raise GroupMissing(shard, f"group {self.group!r} missing on shard {shard}") from exc
            raise
