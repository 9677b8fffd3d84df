"""Which shards this worker holds, and keeping them: leases, heartbeat, rendezvous share, takeover.

The worker loop (:mod:`consumer.pipeline.worker`) asks this module three things: which shards are ours
now (:meth:`Ownership.maintain`, every third of a lease), whether a shard's lease surely
outlives a write (:meth:`Ownership.may_write`, asked by the writer thread, which only reads),
and to keep leases and the heartbeat fresh while it is busy (:meth:`Ownership.keep_if_due`
between events of a long read and while it waits for a write, cheap: one monotonic clock
comparison until a renewal is due). The leases themselves and the rendezvous assignment are in
:mod:`consumer.pipeline.lease`.

Taking a shard (:meth:`Ownership.open`) resumes from our own parked state when no one else
checkpointed the shard since we lost it, else from its checkpoint; a shard whose lease is lost
(:meth:`Ownership.lose`) is parked, never written again unless it comes back that way (fencing
refuses a stale checkpoint anyway). A Redis that restarted without its data (no checkpoint or no
group where we had one) is reported once and counted in ``redis_resets``.

Usage::

    ownership = Ownership(config, leases, source, store, stats, checkpoint=worker_checkpoint)
    if ownership.due():
        ownership.maintain()          # heartbeat, renew, hand over, take
    for state in ownership.shards.values(): ...
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis

from consumer.aggregation.window import ShardWindows
from consumer.core.checkpoint import CheckpointStore
from consumer.core.config import WorkerConfig
from consumer.core.errors import SourceUnavailable
from consumer.core.log_once import LogOnce
from consumer.core.model import DeadLetter
from consumer.core.selftelemetry import SelfTelemetry
from consumer.pipeline.dedupe import Dedupe
from consumer.pipeline.lease import LeaseManager, assign
from consumer.pipeline.source import ZERO_ID, StreamEntry, StreamSource, parse_id

logger = logging.getLogger(__name__)

REDIS_ERRORS: Final = (SourceUnavailable, redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                       redis.exceptions.ClusterError)


@dataclass(eq=False)
class ShardState:
    """What the worker holds for one owned shard between checkpoints."""

    shard: int
    lease_value: str
    windows: ShardWindows
    dedupe: Dedupe
    last_id: str = ZERO_ID
    backlog_until: str | None = None
    to_ack: list[str] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    dirty: bool = False
    checkpointed_at: float = 0.0
    had_checkpoint: bool = False
    late_seen: int = 0
    overflow_seen: int = 0
    lost_reported: int = 0
    checked_at: float = 0.0
    paused: bool = False
    read_ahead: list[StreamEntry] = field(default_factory=list)
    """Entries read after a partial read, to learn whether the stream had ended: the next poll's."""
    full_checkpoint: bool = True
    """The next checkpoint rewrites the whole state: the first of this owner, or the one after a
    save that may or may not have happened (the stored layout is then unknown)."""


class Ownership:
    """The shards one worker owns, their leases and heartbeat, handover and takeover."""

    def __init__(self, config: WorkerConfig, leases: LeaseManager, source: StreamSource,
                 store: CheckpointStore, stats: SelfTelemetry, *,
                 checkpoint: Callable[[ShardState], None]) -> None:
        self.config = config
        self.leases = leases
        self.source = source
        self.store = store
        self.stats = stats
        self.worker_id = leases.worker_id
        self.shards: dict[int, ShardState] = {}
        self.parked: dict[int, ShardState] = {}
        self.next_maintenance = 0.0     # monotonic: when leases and heartbeat are next renewed
        self._checkpoint = checkpoint   # the worker's checkpoint (no trim), used before a handover
        self._resets = LogOnce(logger)

    @property
    def renew_every_s(self) -> float:
        return self.config.lease_s / 3

    def due(self) -> bool:
        """Whether maintenance (renewal, rebalance) is due."""
        return time.monotonic() >= self.next_maintenance

    # -- assignment -------------------------------------------------------------------------
    def wanted(self) -> list[int]:
        """Our rendezvous share of the shards; all of them when draining ("everything in the
        streams", waiting for the leases of workers that died to expire)."""
        if self.config.drain:
            return list(range(self.config.shards))
        return assign(range(self.config.shards), self.leases.live_workers(), self.worker_id)

    def maintain(self) -> None:
        """Heartbeat, renew, give up shards that moved away, take the ones that are ours."""
        self.next_maintenance = time.monotonic() + self.renew_every_s
        self.leases.heartbeat()
        self.renew_all()
        wanted = set(self.wanted())
        for shard in sorted(set(self.shards) - wanted):
            self._checkpoint(self.shards[shard])
            if shard in self.shards:
                del self.shards[shard]
                self.leases.release(shard)
                logger.info("shard %d handed over (rebalance)", shard)
        for shard in sorted(wanted - set(self.shards)):
            value = self.leases.acquire(shard)
            if value is not None:
                self.open(shard, value)

    # -- keeping leases ---------------------------------------------------------------------
    def renew_all(self) -> None:
        """Renew every held lease; a lease found lost drops its shard."""
        for state in list(self.shards.values()):
            if not self.leases.renew(state.shard):
                self.lose(state)

    def keep_alive(self) -> None:
        """Renew leases and the heartbeat now (Redis errors are left for the next maintenance)."""
        with contextlib.suppress(*REDIS_ERRORS):
            self.renew_all()
            self.leases.heartbeat()
        self.next_maintenance = time.monotonic() + self.renew_every_s

    def keep_if_due(self) -> None:
        """Between events of a long read: renew when a third of a lease has passed, else nothing."""
        if time.monotonic() >= self.next_maintenance:
            self.keep_alive()

    def may_write(self, state: ShardState) -> str:
        """``ok`` when ``state`` is still ours and its lease surely outlives a write, ``lost`` when
        it is not ours any more, else ``wait`` (the loop renews; Redis may be unreachable).

        Read-only, for the writer thread (:mod:`consumer.pipeline.write_behind`): renewing and losing
        shards stays with the loop, the only thread that changes :attr:`shards`.
        """
        if self.shards.get(state.shard) is not state:
            return "lost"
        return "ok" if self.leases.remaining_s(state.shard) >= self.config.lease_s / 2 else "wait"

    # -- losing and taking ------------------------------------------------------------------
    def lose(self, state: ShardState) -> None:
        """The lease is gone: keep the state aside, usable only if no one else checkpointed since."""
        self.shards.pop(state.shard, None)
        self.leases.forget(state.shard)
        self.parked[state.shard] = state
        self.next_maintenance = 0.0

    def open(self, shard: int, lease_value: str) -> None:
        """Take a shard: from our own parked state if still current, else from its checkpoint."""
        created = self.source.ensure_group(shard)
        checkpoint = self.store.load(shard)
        parked = self.parked.pop(shard, None)
        if parked is not None and (checkpoint is None or checkpoint.owner == parked.lease_value):
            state = parked
            if checkpoint is None and parked.had_checkpoint:
                self.redis_reset(shard, "its checkpoint")
        elif checkpoint is not None:
            state = self.new_state(shard, lease_value, checkpoint.fields)
            state.last_id, state.had_checkpoint = checkpoint.last_id, True
        else:
            state = self.new_state(shard, lease_value, {})
        if created and state.had_checkpoint:
            self.redis_reset(shard, "its consumer group")
            state.last_id = ZERO_ID
        state.lease_value = lease_value
        group = self.source.group_info(shard)
        if group is not None and parse_id(group.last_delivered_id) > parse_id(state.last_id):
            state.backlog_until = group.last_delivered_id
        state.checkpointed_at = time.monotonic()
        self.shards[shard] = state
        logger.info("shard %d taken (lease %s), resuming after %s%s", shard, lease_value, state.last_id,
                    f", re-reading up to {state.backlog_until}" if state.backlog_until else "")

    def new_state(self, shard: int, lease_value: str, fields: dict[str, bytes]) -> ShardState:
        """A shard's state from a checkpoint's state fields (none: a fresh shard)."""
        config = self.config
        window_config: dict[str, Any] = {
            "window_s": config.window_s, "grace_s": config.grace_s,
            "allowed_lateness_s": config.allowed_lateness_s, "max_future_s": config.max_future_s,
            "max_series": config.max_series, "raw_measurements": config.raw_measurements,
        }
        shard_windows = ShardWindows.restore_fields(fields, **window_config)
        dedupe_state = Dedupe.restore_fields(fields, ttl_s=config.dedupe_ttl_s)
        state = ShardState(shard, lease_value, shard_windows, dedupe_state)
        state.late_seen, state.overflow_seen = shard_windows.late_events, shard_windows.overflowed
        return state

    def recreate_groups(self, shards: Sequence[int]) -> None:
        """A read found no consumer group: recreate it; held shards restart from the stream's start."""
        for shard in shards:
            if self.source.ensure_group(shard) and shard in self.shards:
                self.redis_reset(shard, "its consumer group")
                self.shards[shard].last_id = ZERO_ID
                self.shards[shard].backlog_until = None

    def redis_reset(self, shard: int, what: str) -> None:
        """Redis lost its data under us: count it, say so once."""
        self.stats.count(shard, "redis_resets")
        self._resets.once("redis reset", logging.ERROR,
                          "Redis came back without %s (shard %d): it restarted without its data. Consumer "
                          "group recreated, windows in memory kept; entries that were in Redis and not yet "
                          "read are lost. Enable Redis persistence (appendonly yes)", what, shard)
