"""Shard ownership: leases with fencing tokens, worker heartbeats and rendezvous assignment.

Each shard has at most one owner. The owner holds ``PREFIX:{i}:lease`` = ``"worker:token"``
(``SET ... PX``), where ``token`` comes from ``INCR PREFIX:{i}:fence`` at acquisition, so every
new ownership has a larger token than any before it. The checkpoint script
(:mod:`consumer.core.checkpoint`) refuses to write unless the lease still holds exactly the caller's
value: an owner that paused (GC, SIGSTOP, a slow network) past its lease and came back cannot
overwrite the state of the worker that took over; it finds out at its next checkpoint or renewal
and drops the shard.

Which worker should own which shard: every worker writes a heartbeat into the hash
``PREFIX:workers``; the live workers are those whose heartbeat is younger than the lease; shard
``i`` belongs to the live worker with the highest ``hash(worker, i)`` (rendezvous hashing), so a
join or leave moves only the shards that must move. A worker gives up shards it should no longer
own (checkpoint, release), and a new owner waits until the lease is free or has expired: a dead
owner's shards move after at most one lease period.

Usage::

    leases = LeaseManager(client, prefix="telemetry", worker_id="w1", lease_s=10)
    leases.heartbeat()
    mine = assign(range(4), leases.live_workers(), "w1")
    token = leases.acquire(0)          # None when someone else holds shard 0
    leases.renew(0)                    # False when the lease was lost
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

import redis

from producers.keys import fence_key, lease_key, workers_key

logger = logging.getLogger(__name__)

_ACQUIRE: Final = """
local current = redis.call('GET', KEYS[1])
if current then
  if string.sub(current, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return current
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ':' .. token
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def rendezvous_owner(shard: int, workers: Iterable[str]) -> str | None:
    """The worker with the highest hash for ``shard`` (stable across processes and hosts)."""
    best: tuple[bytes, str] | None = None
    for worker in workers:
        digest = hashlib.blake2b(f"{worker}\x00{shard}".encode(), digest_size=8).digest()
        if best is None or (digest, worker) > best:
            best = (digest, worker)
    return best[1] if best else None


def assign(shards: Iterable[int], workers: Iterable[str], me: str) -> list[int]:
    """The shards ``me`` should own among ``workers`` (``me`` is always counted as live)."""
    live = sorted(set(workers) | {me})
    return [shard for shard in shards if rendezvous_owner(shard, live) == me]


class LeaseManager:
    """Leases of one worker over the shards of one prefix, with a local expiry estimate.

    ``remaining_s(shard)`` is measured from just before the last successful acquire or renew
    was sent, so it never overestimates how long the lease still holds in Redis.
    """

    def __init__(self, client: redis.Redis[bytes], *, prefix: str, worker_id: str, lease_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.prefix = prefix
        self.worker_id = worker_id
        self.lease_s = lease_s
        self._clock = clock
        self._values: dict[int, str] = {}
        self._valid_until: dict[int, float] = {}

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease_s * 1000))

    def held(self) -> list[int]:
        """Shards this worker believes it owns."""
        return sorted(self._values)

    def value(self, shard: int) -> str | None:
        """The lease value (``worker:token``) held for ``shard``, or None."""
        return self._values.get(shard)

    def token(self, shard: int) -> int | None:
        """The fencing token of the held lease, or None."""
        value = self._values.get(shard)
        return int(value.rsplit(":", 1)[1]) if value else None

    def remaining_s(self, shard: int) -> float:
        """Seconds the lease surely still holds (0 when not held)."""
        return max(0.0, self._valid_until.get(shard, 0.0) - self._clock())

    def acquire(self, shard: int) -> str | None:
        """Take the lease when it is free (or already ours); returns the value or None."""
        started = self._clock()
        value = self.client.eval(_ACQUIRE, 2, lease_key(self.prefix, shard), fence_key(self.prefix, shard),  # type: ignore[no-untyped-call]
                                 self.worker_id, self.lease_ms)
        if not value:
            self.forget(shard)
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        self._values[shard] = text
        self._valid_until[shard] = started + self.lease_s
        return text

    def renew(self, shard: int) -> bool:
        """Extend the held lease; False (and forgotten) when it is no longer ours."""
        value = self._values.get(shard)
        if value is None:
            return False
        started = self._clock()
        if not self.client.eval(_RENEW, 1, lease_key(self.prefix, shard), value, self.lease_ms):  # type: ignore[no-untyped-call]
            logger.warning("lease on shard %d lost (was %s): another worker owns it now", shard, value)
            self.forget(shard)
            return False
        self._valid_until[shard] = started + self.lease_s
        return True

    def release(self, shard: int) -> None:
        """Give the shard up (only if the lease is still ours)."""
        value = self._values.get(shard)
        self.forget(shard)
        if value is not None:
            self.client.eval(_RELEASE, 1, lease_key(self.prefix, shard), value)  # type: ignore[no-untyped-call]

    def forget(self, shard: int) -> None:
        """Stop believing we own ``shard`` without touching Redis."""
        self._values.pop(shard, None)
        self._valid_until.pop(shard, None)

    def owner(self, shard: int) -> str | None:
        """The current lease value in Redis (any owner), or None."""
        value = self.client.get(lease_key(self.prefix, shard))
        return value.decode() if isinstance(value, bytes) else value

    def heartbeat(self, now_ms: int | None = None) -> None:
        """Tell the other workers this one is alive."""
        stamp = now_ms if now_ms is not None else int(time.time() * 1000)
        self.client.hset(workers_key(self.prefix), self.worker_id, stamp)

    def live_workers(self, now_ms: int | None = None) -> list[str]:
        """Workers with a heartbeat younger than the lease; long-dead entries are removed."""
        stamp = now_ms if now_ms is not None else int(time.time() * 1000)
        live, dead = [], []
        for worker, beat in self.client.hgetall(workers_key(self.prefix)).items():
            name = worker.decode() if isinstance(worker, bytes) else str(worker)
            age_ms = stamp - int(beat)
            if age_ms <= self.lease_ms:
                live.append(name)
            elif age_ms > 10 * self.lease_ms:
                dead.append(name)
        if dead:
            self.client.hdel(workers_key(self.prefix), *dead)
        return sorted(live)

    def leave(self) -> None:
        """Remove this worker's heartbeat (clean shutdown: others rebalance at once)."""
        self.client.hdel(workers_key(self.prefix), self.worker_id)
