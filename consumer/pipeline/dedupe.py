"""Counting a retried ``XADD`` once: the last applied batch sequence per producer on a shard.

A producer numbers its batches per (producer, shard), strictly increasing, and resends the same
``(p, s)`` when it retries an ``XADD`` whose reply it did not see. The worker applies a batch only
if its sequence is above the last one applied for that producer on this shard. The state is
part of the shard's checkpoint, so a crash cannot make a batch count twice either.

Producers come and go (a new id per process), so entries for producers not seen for ``ttl_s``
of stream time are dropped. Stream time (the entry id's milliseconds), not the wall clock, keeps
the decision identical when the same entries are re-read after a crash.

In the checkpoint (:class:`~consumer.core.checkpoint.StateWrite`) each producer is a field of its own
(``dp:<producer id>``, beside ``dh``: the newest entry time), so a checkpoint sends only the
producers that sent a batch since the previous one and deletes those that expired: its size
follows the batches of the last second, not how many producers the last day had.

Usage::

    dedupe = Dedupe(ttl_s=86400)
    if dedupe.admit("a1b2c3d4e5f60718", 42, entry_ms):
        ...apply the batch...
    write = dedupe.changes(full=False); ...saved...; dedupe.saved()
    Dedupe.restore_fields(checkpoint.fields, ttl_s=86400)
"""

from __future__ import annotations

from typing import Final

import msgpack

HEAD: Final = "dh"
PRODUCER: Final = "dp:"


class Dedupe:
    """Last applied sequence per producer id for one shard."""

    def __init__(self, *, ttl_s: float) -> None:
        self.ttl_ms = int(ttl_s * 1000)
        self._last: dict[str, tuple[int, int]] = {}   # producer -> (sequence, entry ms)
        self._newest_ms = 0
        self.duplicates = 0
        self._changed: set[str] = set()   # producers admitted since the last saved checkpoint
        self._expired: set[str] = set()   # and those forgotten since

    def __len__(self) -> int:
        return len(self._last)

    def admit(self, producer_id: str, sequence: int, entry_ms: int) -> bool:
        """True (and recorded) when this batch was not applied before; False for a repeat."""
        previous = self._last.get(producer_id)
        if previous is not None and sequence <= previous[0]:
            self.duplicates += 1
            return False
        if previous is None:
            self._expired.discard(producer_id)
        self._last[producer_id] = (sequence, entry_ms)
        self._changed.add(producer_id)
        if entry_ms > self._newest_ms:
            self._newest_ms = entry_ms
        return True

    def expire(self) -> int:
        """Forget producers silent for ``ttl_ms`` of stream time; returns how many."""
        horizon = self._newest_ms - self.ttl_ms
        stale = [pid for pid, (_, seen_ms) in self._last.items() if seen_ms < horizon]
        for pid in stale:
            del self._last[pid]
            self._changed.discard(pid)
            self._expired.add(pid)
        return len(stale)

    def changes(self, *, full: bool) -> tuple[dict[str, bytes], list[str]]:
        """Fields to set and to delete since the last :meth:`saved` (every producer if ``full``)."""
        changed = self._last if full else self._changed
        fields = {PRODUCER + pid: msgpack.packb(self._last[pid]) for pid in changed}
        fields[HEAD] = msgpack.packb(self._newest_ms)
        return fields, [] if full else [PRODUCER + pid for pid in self._expired]

    def saved(self) -> None:
        """The last :meth:`changes` are stored: the next ones start from here."""
        self._changed.clear()
        self._expired.clear()

    def snapshot(self) -> bytes:
        """The state as bytes, for the checkpoint."""
        return msgpack.packb([self._newest_ms, {pid: list(v) for pid, v in self._last.items()}])  # type: ignore[no-any-return]

    @classmethod
    def restore_fields(cls, fields: dict[str, bytes], *, ttl_s: float) -> Dedupe:
        """Rebuild from a checkpoint's fields: :meth:`changes`' layout, or a first-layout blob."""
        if HEAD not in fields:
            return cls.restore(fields.get("dedupe", b""), ttl_s=ttl_s)
        dedupe = cls(ttl_s=ttl_s)
        dedupe._newest_ms = int(msgpack.unpackb(fields[HEAD]))
        for name, value in fields.items():
            if name.startswith(PRODUCER):
                sequence, seen_ms = msgpack.unpackb(value)
                dedupe._last[name[len(PRODUCER):]] = (int(sequence), int(seen_ms))
        return dedupe

    @classmethod
    def restore(cls, blob: bytes, *, ttl_s: float) -> Dedupe:
        """Rebuild from :meth:`snapshot` (an empty blob gives an empty state; the first layout)."""
        dedupe = cls(ttl_s=ttl_s)
        if blob:
            newest_ms, last = msgpack.unpackb(blob, raw=False)
            dedupe._newest_ms = int(newest_ms)
            dedupe._last = {str(pid): (int(v[0]), int(v[1])) for pid, v in last.items()}
        return dedupe
