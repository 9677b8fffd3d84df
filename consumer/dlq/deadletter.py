"""Appending dead letters to ``PREFIX:dlq``, each at most once per source position.

A dead letter is appended before the checkpoint that covers its entry, so a crash in between
makes the next owner produce it again. Each letter has an identity (source stream, entry id,
index in the batch, reason and a digest of the payload); a script appends it only if the identity
is not in the shard's "seen" sorted set, and records it there, in one step. The seen set lives in
the dead-letter stream's hash slot (``{PREFIX:dlq}:seen:<shard>``: the hash tag is the dlq key
itself) so the script is atomic on a Redis Cluster too. Its score is the entry time, and
identities older than the shard's checkpoint (minus a margin for rewritten windows) are pruned:
those entries are never read again.

Stream entry fields: ``reason``, ``detail``, ``source``, ``entry_id``, ``index`` (empty for
rejected points), ``payload`` (the msgpack event, the raw entry, or the rejected line), plus
``extra`` fields. Letters age out: the workers' upkeep trims those older than
``TELEMETRY_DLQ_RETENTION`` (default 7 days) by their entry ids' time. With pseudonymisation
on, the event is kept as pseudonymised and an undecodable entry without its events
(:func:`withheld_entry`): no raw tag value is stored here.

Usage::

    letters = DeadLetterWriter(client, prefix="telemetry")
    letters.append(0, [DeadLetter("too_late", "...", "telemetry:{0}", "1700000000000-0", 3, payload)])
    letters.forget_before(0, 1700000000000)
    letters.trim_older_than(7 * 86400)    # retention (TELEMETRY_DLQ_RETENTION), from the upkeep
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack
import redis
from redis.cluster import RedisCluster

from consumer.core.model import DeadLetter, Point
from consumer.sinks.line_protocol import encode_point
from producers.keys import dlq_key
from producers.wire import FIELD_DATA

DEFAULT_DLQ_MAXLEN: Final = 1_000_000
WITHHELD_NOTE: Final = b"withheld: pseudonymisation is on>"

_APPEND: Final = """
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
return 1
"""


def identity(letter: DeadLetter) -> str:
    """What makes a dead letter "the same one" when it is produced again."""
    digest = hashlib.blake2b(letter.payload, digest_size=8).hexdigest()
    index = "" if letter.index is None else str(letter.index)
    return f"{letter.source}|{letter.entry_id}|{index}|{letter.reason}|{digest}"


def packed_payload(value: Any) -> bytes:
    """A rejected event or undecodable entry as the letter's ``payload``: msgpack, or its repr
    where msgpack cannot encode it."""
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        return repr(value).encode()


def withheld_entry(fields: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """An undecodable entry as kept while pseudonymisation is on: its fields without the events.

    The events (``d``) could not be read, so their tags cannot be pseudonymised; they may hold raw
    values, and such a letter is not replayable anyway. The other fields (version, producer,
    sequence, count) and the size of what was withheld stay, to find the producer.
    """
    kept = dict(fields)
    data = fields.get(FIELD_DATA)
    if data is not None and not (isinstance(data, bytes) and data.endswith(WITHHELD_NOTE)):
        kept[FIELD_DATA] = f"<{len(data)} bytes ".encode() + WITHHELD_NOTE
    return kept


def point_payload(point: Point) -> bytes:
    """A point InfluxDB rejected as the letter's ``payload``: its line, or its repr."""
    try:
        return encode_point(point).encode()
    except (TypeError, ValueError):
        return repr(point).encode()


def _score_ms(letter: DeadLetter) -> int:
    head = letter.entry_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


class DeadLetterWriter:
    """Idempotent appends to the dead-letter stream."""

    def __init__(self, client: redis.Redis[bytes], *, prefix: str, maxlen: int = DEFAULT_DLQ_MAXLEN) -> None:
        self.client = client
        self.prefix = prefix
        self.maxlen = maxlen
        self._append = client.register_script(_APPEND)

    @property
    def key(self) -> str:
        return dlq_key(self.prefix)

    def seen_key(self, shard: int) -> str:
        """The identities already appended for ``shard`` (same slot as the dlq)."""
        return f"{{{self.key}}}:seen:{shard}"

    def append(self, shard: int, letters: Sequence[DeadLetter]) -> int:
        """Append the letters not appended before; returns how many were new."""
        if not letters:
            return 0
        keys = [self.key, self.seen_key(shard)]
        # redis-py's cluster pipeline refuses scripts: on a cluster, one call per letter
        pipe: Any = None if isinstance(self.client, RedisCluster) else self.client.pipeline(transaction=False)
        results: list[Any] = []
        for letter in letters:
            fields: list[str | bytes] = [
                "reason", letter.reason, "detail", letter.detail, "source", letter.source,
                "entry_id", letter.entry_id, "index", "" if letter.index is None else str(letter.index),
                "payload", letter.payload,
            ]
            for name, value in letter.extra.items():
                fields += [name, value]
            args = [identity(letter), _score_ms(letter), self.maxlen, *fields]
            if pipe is None:
                results.append(self._append(keys=keys, args=args))
            else:
                self._append(keys=keys, args=args, client=pipe)
        if pipe is not None:
            results = pipe.execute()
        return sum(int(result) for result in results)

    def trim_older_than(self, retention_s: float) -> int:
        """Delete dead letters older than ``retention_s`` by the Redis clock (``XTRIM MINID``, exact:
        an expired letter may hold personal data); returns how many went."""
        seconds, micros = self.client.time()
        cutoff_ms = int(seconds) * 1000 + int(micros) // 1000 - int(retention_s * 1000)
        if cutoff_ms <= 0:
            return 0
        return int(self.client.xtrim(self.key, minid=f"{cutoff_ms}-0", approximate=False))

    def forget_before(self, shard: int, entry_ms: int) -> int:
        """Drop identities of entries older than ``entry_ms`` (they are never read again)."""
        return int(self.client.zremrangebyscore(self.seen_key(shard), "-inf", f"({entry_ms}"))
