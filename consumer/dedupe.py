"""Counting a retried ``XADD`` once: the last applied batch sequence per producer on a shard.

A producer numbers its batches per (producer, shard), strictly increasing, and resends the same
``(p, s)`` when it retries an ``XADD`` whose reply it did not see. The worker applies a batch only
if its sequence is above the last one applied for that producer on this shard. The state is
part of the shard's checkpoint, so a crash cannot make a batch count twice either.

Producers come and go (a new id per process), so entries for producers not seen for ``ttl_s``
of stream time are dropped. Stream time (the entry id's milliseconds), not the wall clock, keeps
the decision identical when the same entries are re-read after a crash.

Usage::

    dedupe = Dedupe(ttl_s=86400)
    if dedupe.admit("a1b2c3d4e5f60718", 42, entry_ms):
        ...apply the batch...
    blob = dedupe.snapshot(); Dedupe.restore(blob, ttl_s=86400)
"""

from __future__ import annotations

import msgpack


class Dedupe:
    """Last applied sequence per producer id for one shard."""

    def __init__(self, *, ttl_s: float) -> None:
        self.ttl_ms = int(ttl_s * 1000)
        self._last: dict[str, tuple[int, int]] = {}   # producer -> (sequence, entry ms)
        self._newest_ms = 0
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._last)

    def admit(self, producer_id: str, sequence: int, entry_ms: int) -> bool:
        """True (and recorded) when this batch was not applied before; False for a repeat."""
        previous = self._last.get(producer_id)
        if previous is not None and sequence <= previous[0]:
            self.duplicates += 1
            return False
        self._last[producer_id] = (sequence, entry_ms)
        if entry_ms > self._newest_ms:
            self._newest_ms = entry_ms
        return True

    def expire(self) -> int:
        """Forget producers silent for ``ttl_ms`` of stream time; returns how many."""
        horizon = self._newest_ms - self.ttl_ms
        stale = [pid for pid, (_, seen_ms) in self._last.items() if seen_ms < horizon]
        for pid in stale:
            del self._last[pid]
        return len(stale)

    def snapshot(self) -> bytes:
        """The state as bytes, for the checkpoint."""
        return msgpack.packb([self._newest_ms, {pid: list(v) for pid, v in self._last.items()}])  # type: ignore[no-any-return]

    @classmethod
    def restore(cls, blob: bytes, *, ttl_s: float) -> Dedupe:
        """Rebuild from :meth:`snapshot` (an empty blob gives an empty state)."""
        dedupe = cls(ttl_s=ttl_s)
        if blob:
            newest_ms, last = msgpack.unpackb(blob, raw=False)
            dedupe._newest_ms = int(newest_ms)
            dedupe._last = {str(pid): (int(v[0]), int(v[1])) for pid, v in last.items()}
        return dedupe
